//! Small valid inputs for every reader ingest has, and one call that runs a reader on them:
//! what the mutation fuzz test (`crates/ingest/tests/fuzz.rs`) and the cargo-fuzz target
//! (`fuzz/`) mutate. The caller brings ingest itself (see [`run_once`]), so that this crate
//! depends on no stage.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};

/// A reader under test: a folder holding a valid input, the one file in it that gets
/// mutated, and the ingest arguments (after the source) that read it.
pub struct Target {
    pub name: &'static str,
    pub source: PathBuf,
    pub file: PathBuf,
    pub args: Vec<String>,
    /// Images sets are read by the stages, not ingest: read the mutated file as one.
    pub image_set: bool,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn save(img: &RgbImage, path: &Path, fmt: ImageFormat) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save_with_format(path, fmt).unwrap();
}

fn pattern(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 20) as u8 ^ seed, (y * 30) as u8, seed.wrapping_mul(7)])
    })
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Build every target's valid input under `root`.
pub fn targets(root: &Path) -> Vec<Target> {
    let mut out = Vec::new();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // IDX: 6 images of 4x4 in 2 classes, raw and gzipped.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 6, 0, 0, 0, 4, 0, 0, 0, 4];
    images.extend((0..96).map(|i| (i * 7) as u8));
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 6, 0, 1, 0, 1, 0, 1];
    for (name, wrap) in [("idx", false), ("idx-gz", true)] {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        let (img, lab) = if wrap {
            (gz(&images), gz(&labels))
        } else {
            (images.clone(), labels.to_vec())
        };
        let suffix = if wrap { ".gz" } else { "" };
        let file = dir.join(format!("train-images-idx3-ubyte{suffix}"));
        fs::write(&file, img).unwrap();
        fs::write(dir.join(format!("train-labels-idx1-ubyte{suffix}")), lab).unwrap();
        out.push(Target {
            name,
            source: dir,
            file,
            args: vec![],
            image_set: false,
        });
    }
    // The labels file of an IDX pair.
    out.push(Target {
        name: "idx-labels",
        source: root.join("idx"),
        file: root.join("idx/train-labels-idx1-ubyte"),
        args: vec![],
        image_set: false,
    });
    // npz and a folder of npy, from the committed fixtures.
    let npz = root.join("npz/keras.npz");
    fs::create_dir_all(npz.parent().unwrap()).unwrap();
    fs::copy(repo().join("data/fixtures/npy/keras.npz"), &npz).unwrap();
    out.push(Target {
        name: "npz",
        source: npz.clone(),
        file: npz,
        args: vec![],
        image_set: false,
    });
    let npy = root.join("npy");
    fs::create_dir_all(&npy).unwrap();
    for f in ["x.npy", "y.npy"] {
        fs::copy(repo().join("data/fixtures/npy/float").join(f), npy.join(f)).unwrap();
    }
    out.push(Target {
        name: "npy",
        source: npy.clone(),
        file: npy.join("x.npy"),
        args: vec![],
        image_set: false,
    });
    // Pickles: the train pickle of the committed three.
    let pk = root.join("pickle");
    fs::create_dir_all(&pk).unwrap();
    for f in ["train.p", "valid.p", "test.p"] {
        fs::copy(repo().join("data/fixtures/pickle").join(f), pk.join(f)).unwrap();
    }
    out.push(Target {
        name: "pickle",
        source: pk.clone(),
        file: pk.join("train.p"),
        args: vec![],
        image_set: false,
    });
    // FER2013 CSV: 3x3 grey images as pixel strings.
    let fer = root.join("fer/fer2013.csv");
    fs::create_dir_all(fer.parent().unwrap()).unwrap();
    let mut s = String::from("emotion,pixels,Usage\n");
    for i in 0..8u8 {
        let px: Vec<String> = (0..9).map(|k| (i * 20 + k).to_string()).collect();
        let usage = ["Training", "Training", "PublicTest", "PrivateTest"][i as usize % 4];
        s += &format!("{},{},{usage}\n", i % 2, px.join(" "));
    }
    fs::write(&fer, s).unwrap();
    out.push(Target {
        name: "fer2013",
        source: fer.clone(),
        file: fer,
        args: vec![],
        image_set: false,
    });
    // A labels CSV with PNG, JPEG, BMP and PNM images; the CSV and each image get mutated.
    let csv_dir = root.join("csv");
    let mut rows = String::from("image,label\n");
    let kinds = [
        ("png", ImageFormat::Png),
        ("jpg", ImageFormat::Jpeg),
        ("bmp", ImageFormat::Bmp),
        ("ppm", ImageFormat::Pnm),
    ];
    for i in 0..8u8 {
        let (ext, fmt) = kinds[i as usize % 4];
        save(
            &pattern(6, 5, i),
            &csv_dir.join(format!("img/{i}.{ext}")),
            fmt,
        );
        rows += &format!("{i}.{ext},{}\n", i % 2);
    }
    fs::write(csv_dir.join("labels.csv"), rows).unwrap();
    let csv_args = strings(&[
        "--format",
        "csv",
        "--csv",
        csv_dir.join("labels.csv").to_str().unwrap(),
    ]);
    out.push(Target {
        name: "labels-csv",
        source: csv_dir.join("img"),
        file: csv_dir.join("labels.csv"),
        args: csv_args.clone(),
        image_set: false,
    });
    for (i, (ext, _)) in kinds.iter().enumerate() {
        out.push(Target {
            name: ["png", "jpeg", "bmp", "pnm"][i],
            source: csv_dir.join("img"),
            file: csv_dir.join(format!("img/{i}.{ext}")),
            args: csv_args.clone(),
            image_set: false,
        });
    }
    // GTSRB: two classes with ROI columns; the CSV of class 0 gets mutated.
    let gt = root.join("gtsrb");
    for class in 0..2u8 {
        let dir = gt.join(format!("Final_Training/Images/{class:05}"));
        let mut csv = String::from("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n");
        for i in 0..3u8 {
            let name = format!("{class:05}_{i:05}.ppm");
            save(
                &pattern(12, 12, i + class),
                &dir.join(&name),
                ImageFormat::Pnm,
            );
            csv += &format!("{name};12;12;2;2;10;10;{class}\n");
        }
        fs::write(dir.join(format!("GT-{class:05}.csv")), csv).unwrap();
    }
    out.push(Target {
        name: "gtsrb-csv",
        source: gt.clone(),
        file: gt.join("Final_Training/Images/00000/GT-00000.csv"),
        args: strings(&["--roi-crop", "--size", "8"]),
        image_set: false,
    });
    // A safetensors image set as ingest writes it.
    let st = root.join("set/train.safetensors");
    let mut set = rebalance_core::ImageSet::empty(vec!["a".into(), "b".into()], 1, 4, 4);
    for i in 0..4u8 {
        set.push(&[i; 16], i as i64 % 2);
    }
    set.write(&st).unwrap();
    out.push(Target {
        name: "safetensors",
        source: st.clone(),
        file: st,
        args: vec![],
        image_set: true,
    });
    out
}

/// The ingest command line that reads `t`'s input into `out`.
fn ingest_argv(t: &Target, out: &Path) -> Vec<String> {
    let mut argv = vec![
        "ingest".to_string(),
        t.source.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--split".into(),
        "0.5,0.25,0.25".into(),
    ];
    argv.extend(t.args.iter().cloned());
    argv
}

/// Run the reader on the (mutated) input: `ingest` (which parses the command line it is given
/// and runs ingest) on [`ingest_argv`], or the image-set reader for a `.safetensors` target.
/// Only panics and memory count; an error is a refused input.
pub fn run_once(
    t: &Target,
    out: &Path,
    ingest: impl FnOnce(&[String]) -> Result<(), String>,
) -> Result<(), String> {
    if t.image_set {
        return rebalance_core::ImageSet::read(&t.file)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
    }
    ingest(&ingest_argv(t, out))
}
