//! Writes `data/fixtures/studies/`: small data sets in the layouts of the studies rebalance's
//! users come from, made from the 300 real MNIST digits of `data/fixtures/mnist-300` (digits
//! 0–3, so 4 classes):
//! - `gtsrb/`: the official GTSRB training layout (`Final_Training/Images/000NN/*.ppm` and
//!   `GT-000NN.csv` with ROI columns), 36×36 colour images with the digit inside the ROI on a
//!   noisy coloured background (traffic-sign study; ingest `--roi-crop` gives 32×32 RGB);
//! - `fer2013.csv`: FER2013's `emotion,pixels,Usage`, 48×48 grey (facial-expression study);
//! - `fundus/labels.csv` + `fundus/*.jpg`: a labels CSV beside 128×128 RGB JPEGs, the digit as
//!   dark vessels on a red-orange disc (diabetic-retinopathy study).
//!
//! Run: `cargo run --release -p ingest --example study_fixtures` (deterministic).

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PER_CLASS: usize = 30;
const CLASSES: usize = 4;

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut out)?;
    Ok(out)
}

/// Up to PER_CLASS 28×28 digits of each class 0..CLASSES.
fn digits(dir: &Path) -> Result<Vec<Vec<Vec<u8>>>> {
    let images = gunzip(&dir.join("mnist-images-idx3-ubyte.gz"))?;
    let labels = gunzip(&dir.join("mnist-labels-idx1-ubyte.gz"))?;
    let n = u32::from_be_bytes(labels[4..8].try_into()?) as usize;
    let mut out = vec![Vec::new(); CLASSES];
    for i in 0..n {
        let c = labels[8 + i] as usize;
        if c < CLASSES && out[c].len() < PER_CLASS {
            out[c].push(images[16 + i * 784..16 + (i + 1) * 784].to_vec());
        }
    }
    for (c, v) in out.iter().enumerate() {
        if v.len() < 10 {
            bail!("only {} digits of class {c}", v.len());
        }
    }
    Ok(out)
}

fn grey(d: &[u8]) -> image::GrayImage {
    image::GrayImage::from_raw(28, 28, d.to_vec()).expect("28×28")
}

fn gtsrb(root: &Path, digits: &[Vec<Vec<u8>>], rng: &mut ChaCha8Rng) -> Result<()> {
    let side = 36u32;
    for (c, ds) in digits.iter().enumerate() {
        let dir = root.join(format!("gtsrb/Final_Training/Images/{c:05}"));
        std::fs::create_dir_all(&dir)?;
        let mut csv = String::from("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n");
        for (i, d) in ds.iter().enumerate() {
            let base = [
                rng.random_range(40..200u8),
                rng.random_range(40..200u8),
                rng.random_range(40..200u8),
            ];
            let mut img = image::RgbImage::from_fn(side, side, |_, _| {
                image::Rgb(base.map(|v| v.saturating_add(rng.random_range(0..40))))
            });
            let (ox, oy) = (rng.random_range(2..7u32), rng.random_range(2..7u32));
            for y in 0..28 {
                for x in 0..28 {
                    let a = d[(y * 28 + x) as usize] as f32 / 255.0;
                    let p = img.get_pixel_mut(ox + x, oy + y);
                    let sign = [250.0, 250.0, 240.0];
                    for (v, s) in p.0.iter_mut().zip(sign) {
                        *v = (*v as f32 * (1.0 - a) + s * a) as u8;
                    }
                }
            }
            let name = format!("{c:05}_{i:05}.ppm");
            let mut ppm = format!("P6\n{side} {side}\n255\n").into_bytes();
            ppm.extend_from_slice(img.as_raw());
            std::fs::write(dir.join(&name), ppm)?;
            let _ = writeln!(
                csv,
                "{name};{side};{side};{ox};{oy};{};{};{c}",
                ox + 27,
                oy + 27
            );
        }
        std::fs::write(dir.join(format!("GT-{c:05}.csv")), csv)?;
    }
    Ok(())
}

fn fer(root: &Path, digits: &[Vec<Vec<u8>>]) -> Result<()> {
    let mut csv = String::from("emotion,pixels,Usage\n");
    for (c, ds) in digits.iter().enumerate() {
        for (i, d) in ds.iter().enumerate() {
            let big =
                image::imageops::resize(&grey(d), 48, 48, image::imageops::FilterType::Triangle);
            let px: Vec<String> = big.as_raw().iter().map(|v| v.to_string()).collect();
            let usage = match i % 6 {
                4 => "PublicTest",
                5 => "PrivateTest",
                _ => "Training",
            };
            let _ = writeln!(csv, "{c},{},{usage}", px.join(" "));
        }
    }
    std::fs::write(root.join("fer2013.csv"), csv)?;
    Ok(())
}

fn fundus(root: &Path, digits: &[Vec<Vec<u8>>], rng: &mut ChaCha8Rng) -> Result<()> {
    let dir = root.join("fundus");
    std::fs::create_dir_all(&dir)?;
    let mut csv = String::from("image,label\n");
    let side = 128u32;
    for (c, ds) in digits.iter().enumerate() {
        for (i, d) in ds.iter().enumerate().take(25) {
            let big =
                image::imageops::resize(&grey(d), 96, 96, image::imageops::FilterType::Triangle);
            let tint = rng.random_range(0.85..1.15f32);
            let img = image::RgbImage::from_fn(side, side, |x, y| {
                let (dx, dy) = (x as f32 - 63.5, y as f32 - 63.5);
                let r = (dx * dx + dy * dy).sqrt() / 60.0;
                if r > 1.0 {
                    return image::Rgb([0, 0, 0]);
                }
                let light = (1.0 - 0.5 * r * r) * tint;
                let vessel = if (16..112).contains(&x) && (16..112).contains(&y) {
                    big.get_pixel(x - 16, y - 16).0[0] as f32 / 255.0
                } else {
                    0.0
                };
                let shade = light * (1.0 - 0.6 * vessel);
                image::Rgb([
                    (220.0 * shade).min(255.0) as u8,
                    (110.0 * shade).min(255.0) as u8,
                    (50.0 * shade).min(255.0) as u8,
                ])
            });
            let name = format!("eye_{c}_{i:03}.jpg");
            img.save_with_format(dir.join(&name), image::ImageFormat::Jpeg)?;
            let _ = writeln!(csv, "{name},{c}");
        }
    }
    std::fs::write(dir.join("labels.csv"), csv)?;
    Ok(())
}

fn main() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let digits = digits(&repo.join("data/fixtures/mnist-300"))?;
    let root = repo.join("data/fixtures/studies");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    gtsrb(&root, &digits, &mut rng)?;
    fer(&root, &digits)?;
    fundus(&root, &digits, &mut rng)?;
    println!("wrote {}", root.display());
    Ok(())
}
