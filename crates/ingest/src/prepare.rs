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
    /// `--size`/`--channels` where given; otherwise from the data: the most common size (all
    /// images are resized to it when sizes differ) and 3 channels when any image has colour.
    /// The notes say what was chosen when the data was mixed.
    pub fn choose(args: &Args, format: Format, items: &[&Item]) -> Result<(Self, Vec<String>)> {
        let default_size = (format == Format::Gtsrb).then_some((32, 32));
        let size = args.size.0.or(default_size);
        let mut notes = Vec::new();
        let shapes: Vec<(usize, usize, bool)> = if size.is_none() || args.channels.is_none() {
            let s: Vec<_> = items.par_iter().filter_map(|it| shape(it)).collect();
            if s.is_empty() {
                bail!(
                    "{}: none of the images could be decoded",
                    args.source.display()
                );
            }
            s
        } else {
            Vec::new()
        };
        let channels = match args.channels {
            Some(c) if c == 1 || c == 3 => c as usize,
            Some(c) => bail!("--channels {c}: use 1 (grey) or 3 (RGB)"),
            None => {
                let colour = shapes.iter().filter(|s| s.2).count();
                if colour > 0 && colour < shapes.len() {
                    notes.push(format!(
                        "{colour} of {} images are in colour and the rest grey: all were made RGB (--channels 1 makes them grey)",
                        shapes.len()
                    ));
                }
                if colour > 0 {
                    3
                } else {
                    1
                }
            }
        };
        let (height, width, resize) = match size {
            Some((h, w)) => (h, w, true),
            None => {
                let mut counts: std::collections::BTreeMap<(usize, usize), usize> =
                    Default::default();
                for &(h, w, _) in &shapes {
                    *counts.entry((h, w)).or_default() += 1;
                }
                // The most common size; among equally common ones the largest.
                let (&(h, w), _) = counts
                    .iter()
                    .max_by_key(|((h, w), n)| (**n, h * w))
                    .expect("at least one shape");
                if counts.len() > 1 {
                    let mut by_count: Vec<(&(usize, usize), &usize)> = counts.iter().collect();
                    by_count.sort_by_key(|((h, w), n)| std::cmp::Reverse((**n, h * w)));
                    let mut seen: Vec<String> = by_count
                        .iter()
                        .take(4)
                        .map(|((h, w), n)| format!("{h}x{w} ({n})"))
                        .collect();
                    if counts.len() > 4 {
                        seen.push("…".into());
                    }
                    notes.push(format!(
                        "images come in {} sizes (HxW: {}): all were resized to {h}x{w}, the most common (--size HxW chooses)",
                        counts.len(),
                        seen.join(", ")
                    ));
                }
                (h, w, counts.len() > 1)
            }
        };
        for n in &notes {
            tracing::info!("{n}");
        }
        Ok((
            Self {
                channels,
                height,
                width,
                resize,
            },
            notes,
        ))
    }
}

/// (height, width, has colour) of an item from its header, without decoding the pixels (an
/// ROI crop, or an image already in memory, from the image itself); `None` when it cannot be
/// read (the item is then skipped with its reason when it is decoded).
fn shape(item: &Item) -> Option<(usize, usize, bool)> {
    let of = |img: &DynamicImage| {
        (
            img.height() as usize,
            img.width() as usize,
            img.color().has_color(),
        )
    };
    match &item.payload {
        Payload::Image(img) => Some(of(img)),
        Payload::File { roi: Some(_), .. } => decode(item).ok().map(|(img, _)| of(&img)),
        Payload::File { path, roi: None } => {
            let mut reader = image::ImageReader::open(path)
                .ok()?
                .with_guessed_format()
                .ok()?;
            reader.limits(decode_limits());
            let dec = reader.into_decoder().ok()?;
            let (w, h) = image::ImageDecoder::dimensions(&dec);
            let colour = image::ImageDecoder::color_type(&dec).has_color();
            Some((h as usize, w as usize, colour))
        }
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
