//! Decode, convert and resize every item in parallel (rayon), into channel-first u8 pixels.

use anyhow::{bail, Result};
use image::{imageops::FilterType, DynamicImage};
use rayon::prelude::*;
use rebalance_core::{cli::progress, hash};

use crate::sources::{Item, Payload, Roi};
use crate::{Args, Format};

/// The geometry every output image gets.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Target {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Resize to the geometry (`--size` or the GTSRB default); without it a differing size
    /// is an error.
    pub resize: bool,
}

/// One prepared image.
pub struct Prepared {
    /// Channel-first pixels, `channels × height × width`.
    pub pixels: Vec<u8>,
    /// (sha256, bytes) of the source file, for file-based items.
    pub file: Option<(String, u64)>,
}

/// Why an item could not be prepared.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// A per-file problem: skipped and listed.
    Skip(String),
    /// A size that differs from the set's, without `--size`: fatal, it needs a decision.
    Size { found: (u32, u32) },
}

impl Target {
    /// `--size`/`--channels` where given; otherwise from the first image that decodes.
    pub fn choose(args: &Args, format: Format, items: &[&Item]) -> Result<Self> {
        let default_size = (format == Format::Gtsrb).then_some((32, 32));
        let size = args.size.or(default_size);
        let probe = || -> Result<DynamicImage> {
            for item in items {
                if let Ok((img, _)) = decode(item) {
                    return Ok(img);
                }
            }
            bail!(
                "{}: none of the images could be decoded",
                args.source.display()
            )
        };
        let first = if size.is_none() || args.channels.is_none() {
            Some(probe()?)
        } else {
            None
        };
        let channels = match args.channels {
            Some(c) if c == 1 || c == 3 => c as usize,
            Some(c) => bail!("--channels {c}: use 1 (grey) or 3 (RGB)"),
            None => {
                let img = first.as_ref().expect("probed");
                if img.color().has_color() {
                    3
                } else {
                    1
                }
            }
        };
        let (height, width) = match size {
            Some(s) => s,
            None => {
                let img = first.as_ref().expect("probed");
                (img.height() as usize, img.width() as usize)
            }
        };
        Ok(Self {
            channels,
            height,
            width,
            resize: size.is_some(),
        })
    }
}

/// Largest side of an image ingest decodes, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Most bytes one image's decoder may allocate.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// What one decode may use: a crafted header declaring a huge image fails with the image
/// crate's "limits" error (named with the file) before anything that large is allocated.
fn decode_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Decode an item: the image and, for files, (sha256, bytes).
fn decode(item: &Item) -> Result<(DynamicImage, Option<(String, u64)>), String> {
    match &item.payload {
        Payload::Image(img) => Ok((img.clone(), None)),
        Payload::File { path, roi } => {
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
            if bytes.is_empty() {
                return Err("empty file (0 bytes)".into());
            }
            let digest = hash::sha256_bytes(&bytes);
            let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
                .with_guessed_format()
                .map_err(|e| format!("cannot read: {e}"))?;
            reader.limits(decode_limits());
            let img = reader
                .decode()
                .map_err(|e| format!("cannot decode image: {e}"))?;
            let img = match roi {
                Some(r) => crop(img, r)?,
                None => img,
            };
            Ok((img, Some((digest, bytes.len() as u64))))
        }
    }
}

fn crop(img: DynamicImage, r: &Roi) -> Result<DynamicImage, String> {
    let (w, h) = (img.width(), img.height());
    if r.x1 >= r.x2 || r.y1 >= r.y2 || r.x2 > w || r.y2 > h {
        return Err(format!(
            "ROI ({}, {})-({}, {}) does not fit the {w}x{h} image",
            r.x1, r.y1, r.x2, r.y2
        ));
    }
    Ok(img.crop_imm(r.x1, r.y1, r.x2 - r.x1, r.y2 - r.y1))
}

/// Convert to the target channels and size and lay out channel-first.
fn convert(img: DynamicImage, t: &Target) -> Result<Vec<u8>, Failure> {
    let (w, h) = (img.width(), img.height());
    let img = if (h as usize, w as usize) != (t.height, t.width) {
        if !t.resize {
            return Err(Failure::Size { found: (w, h) });
        }
        img.resize_exact(t.width as u32, t.height as u32, FilterType::Triangle)
    } else {
        img
    };
    Ok(if t.channels == 1 {
        img.into_luma8().into_raw()
    } else {
        let rgb = img.into_rgb8();
        let plane = t.height * t.width;
        let mut out = vec![0u8; 3 * plane];
        for (i, px) in rgb.pixels().enumerate() {
            out[i] = px[0];
            out[plane + i] = px[1];
            out[2 * plane + i] = px[2];
        }
        out
    })
}

/// Prepare every item in parallel, in order. Fails as a whole when sizes differ without
/// `--size`, naming the first such file.
pub fn prepare_all(
    items: &[&Item],
    target: &Target,
    quiet: bool,
) -> Result<Vec<Result<Prepared, String>>> {
    let bar = progress(items.len() as u64, "decoding", quiet);
    let results: Vec<Result<Prepared, Failure>> = items
        .par_iter()
        .map(|item| {
            let r = decode(item).map_err(Failure::Skip).and_then(|(img, file)| {
                Ok(Prepared {
                    pixels: convert(img, target)?,
                    file,
                })
            });
            bar.inc(1);
            r
        })
        .collect();
    bar.finish_and_clear();
    let mismatched: Vec<_> = items
        .iter()
        .zip(&results)
        .filter_map(|(it, r)| match r {
            Err(Failure::Size { found }) => Some((it.origin.as_str(), *found)),
            _ => None,
        })
        .collect();
    if let Some((origin, (w, h))) = mismatched.first() {
        bail!(
            "images differ in size: {origin} is {w}x{h} but the set is {}x{} (from the first \
             image), and {} image(s) differ in all; pass --size HxW to resize every image",
            target.width,
            target.height,
            mismatched.len()
        );
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.map_err(|f| match f {
                Failure::Skip(s) => s,
                Failure::Size { .. } => unreachable!("handled above"),
            })
        })
        .collect())
}
