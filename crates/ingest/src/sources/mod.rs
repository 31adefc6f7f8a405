//! Input formats. Each source lists [`Item`]s: a file to decode or pixels already in memory,
//! a label (index or name) and the split the source gives it, if any.

mod csv_input;
mod csvimg;
mod fer;
mod folder;
mod gtsrb;
mod idx;
mod npy;
mod pickled;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::DynamicImage;
use rebalance_core::{hash, FileRecord};
use serde::Serialize;

use crate::{Args, Format};

/// Train, validation or test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        ["train", "val", "test"][self as usize]
    }
}

/// A label as the source gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelRef {
    /// An integer label (IDX, FER2013, GTSRB, arrays): label i is class i.
    Index(i64),
    /// A class name (folder name, CSV label text).
    Name(String),
}

/// ROI in pixels, `x2`/`y2` exclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    pub x1: u32,
    pub y1: u32,
    pub x2: u32,
    pub y2: u32,
}

/// Where an item's pixels come from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// An image file, decoded later in parallel; with an optional crop.
    File { path: PathBuf, roi: Option<Roi> },
    /// Pixels already decoded from an array or CSV source.
    Image(DynamicImage),
}

/// One image to ingest.
#[derive(Debug, Clone)]
pub struct Item {
    /// Human-readable origin used in problem reports: a path, or `file:line`, or `file[i]`.
    pub origin: String,
    pub label: LabelRef,
    pub split: Option<Split>,
    pub payload: Payload,
}

/// A per-file problem: skipped and listed (fatal with --strict).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub file: String,
    pub reason: String,
}

impl Problem {
    pub fn new(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            reason: reason.into(),
        }
    }
}

/// What a source found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub items: Vec<Item>,
    pub problems: Vec<Problem>,
    /// The class list the source itself defines (folder names, FER2013's emotions), if any.
    pub classes: Option<Vec<String>>,
    /// Input files read whole (CSV, IDX, pickle, npz) with their hashes.
    pub inputs: Vec<FileRecord>,
}

/// Pick the format for `--format auto`.
pub fn detect(args: &Args) -> Result<Format> {
    if args.format != Format::Auto {
        return Ok(args.format);
    }
    let p = &args.source;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if p.is_file() {
        if name.ends_with(".csv") {
            // FER2013 has its pixels in the CSV; anything else is a labels CSV whose images
            // sit beside it.
            return Ok(if csv_has_column(p, "pixels") {
                Format::Fer2013
            } else {
                Format::Csv
            });
        }
        if [".p", ".pkl", ".pickle"].iter().any(|s| name.ends_with(s)) {
            return Ok(Format::Pickle);
        }
        if name.ends_with(".npz") || name.ends_with(".npy") {
            return Ok(Format::Npy);
        }
        if name.contains("idx3-ubyte") {
            return Ok(Format::Idx);
        }
        bail!(
            "{}: cannot tell the format of this file; pass --format (one of csv, fer2013, idx, \
             pickle, npy)",
            p.display()
        );
    }
    if args.csv.is_some() {
        return Ok(Format::Csv);
    }
    let names: Vec<String> = std::fs::read_dir(p)
        .with_context(|| format!("listing {}", p.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let has = |f: &dyn Fn(&str) -> bool| names.iter().any(|n| f(n));
    if has(&|n| n == "Final_Training" || n == "Final_Test") {
        return Ok(Format::Gtsrb);
    }
    if has(&|n| n.contains("idx3-ubyte")) {
        return Ok(Format::Idx);
    }
    if has(&|n| n.ends_with(".p") || n.ends_with(".pkl") || n.ends_with(".pickle")) {
        return Ok(Format::Pickle);
    }
    if has(&|n| n.ends_with(".npy") || n.ends_with(".npz")) {
        return Ok(Format::Npy);
    }
    Ok(Format::Folder)
}

/// Whether the first line of the CSV at `path` names `column` (false when unreadable: the
/// reader then reports the file).
fn csv_has_column(path: &Path, column: &str) -> bool {
    use std::io::{BufRead, Read};
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = String::new();
    let mut r = std::io::BufReader::new(f).take(64 * 1024);
    if r.read_line(&mut first).is_err() {
        return false;
    }
    first
        .trim()
        .split(',')
        .any(|h| h.trim().trim_matches('"') == column)
}

/// Read the source. Image files that resolve outside the image folder (an absolute path or
/// `..` in a labels CSV, a symlink) are skipped with the reason unless `--allow-outside`.
pub fn load(format: Format, args: &Args) -> Result<Loaded> {
    let mut loaded = match format {
        Format::Auto => unreachable!("detect() resolves auto"),
        Format::Folder => folder::load(&args.source),
        Format::Csv => csvimg::load(args),
        Format::Fer2013 => fer::load(&args.source),
        Format::Idx => idx::load(&args.source),
        Format::Gtsrb => gtsrb::load(&args.source, args.roi_crop),
        Format::Pickle => pickled::load(&args.source),
        Format::Npy => npy::load(&args.source),
    }?;
    if !args.allow_outside {
        confine(&mut loaded, &image_root(format, args));
    }
    Ok(loaded)
}

/// The folder a source's image files must stay inside: the source folder, or the folder of a
/// labels CSV given as the source.
fn image_root(format: Format, args: &Args) -> std::path::PathBuf {
    let src = &args.source;
    if src.is_dir() || (format == Format::Csv && args.csv.is_some()) {
        src.clone()
    } else {
        src.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    }
}

/// Drop the file items whose real path (symlinks and `..` resolved) is not under `root`.
fn confine(loaded: &mut Loaded, root: &Path) {
    let Ok(root) = root.canonicalize() else {
        return;
    };
    let items = std::mem::take(&mut loaded.items);
    for item in items {
        let outside = match &item.payload {
            Payload::File { path, .. } => path
                .canonicalize()
                .ok()
                .filter(|real| !real.starts_with(&root)),
            Payload::Image(_) => None,
        };
        match outside {
            Some(real) => loaded.problems.push(Problem::new(
                &item.origin,
                format!(
                    "leaves the image folder {} (it is {}): skipped; pass --allow-outside to read files outside it",
                    root.display(),
                    real.display()
                ),
            )),
            None => loaded.items.push(item),
        }
    }
}

/// Per item: `Ok(Some(class))`, `Ok(None)` when its class is left out by `--classes`, or
/// `Err(reason)` when its label is not in the class list.
pub type Resolved = Result<Option<usize>, String>;

/// Decide the class list and map every item's label onto it.
pub fn resolve_classes(
    items: &[Item],
    natural: Option<Vec<String>>,
    args: &Args,
) -> Result<(Vec<String>, Vec<Resolved>)> {
    let names = if let Some(file) = &args.class_names {
        read_class_names(file)?
    } else if let Some(n) = natural {
        n
    } else {
        derive_names(items)?
    };
    if names.is_empty() {
        bail!("{}: no classes were found", args.source.display());
    }
    let n = names.len();
    let lookup = |label: &LabelRef| -> Result<usize, String> {
        match label {
            LabelRef::Index(i) if *i >= 0 && (*i as usize) < n => Ok(*i as usize),
            LabelRef::Index(i) => Err(format!(
                "label {i} is not one of the {n} classes (0..{})",
                n - 1
            )),
            LabelRef::Name(s) => names
                .iter()
                .position(|c| c == s)
                .or_else(|| {
                    s.parse::<usize>()
                        .ok()
                        .filter(|&i| i < n && args.class_names.is_some())
                })
                .ok_or_else(|| format!("label `{s}` is not one of the {n} classes")),
        }
    };
    // --classes: a subset, kept in the source's class order.
    let remap: Vec<Option<usize>> = if args.classes.is_empty() {
        (0..n).map(Some).collect()
    } else {
        for c in &args.classes {
            if !names.contains(c) {
                bail!(
                    "--classes: there is no class `{c}`; the classes are {}",
                    names.join(", ")
                );
            }
        }
        let mut next = 0;
        names
            .iter()
            .map(|c| {
                args.classes.contains(c).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let kept_names = names
        .iter()
        .zip(&remap)
        .filter(|(_, r)| r.is_some())
        .map(|(c, _)| c.clone())
        .collect();
    let resolved = items
        .iter()
        .map(|it| lookup(&it.label).map(|i| remap[i]))
        .collect();
    Ok((kept_names, resolved))
}

fn read_class_names(file: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading class names {}", file.display()))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    let names: Vec<String> = {
        let end = names
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        names[..end].to_vec()
    };
    if names.is_empty() {
        bail!("{}: the class names file is empty", file.display());
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            bail!("{}: line {} is an empty class name", file.display(), i + 1);
        }
        if names[..i].contains(n) {
            bail!("{}: class name `{n}` appears twice", file.display());
        }
    }
    Ok(names)
}

/// Class names from the labels: `0..=max` for integer labels, sorted names otherwise
/// (numerically when every name is a number).
/// Most classes integer labels may imply: label i makes classes 0..=i, so one crafted label
/// must not make billions of names.
pub const MAX_CLASSES: i64 = 100_000;

fn derive_names(items: &[Item]) -> Result<Vec<String>> {
    let max = items
        .iter()
        .filter_map(|it| match it.label {
            LabelRef::Index(i) if i >= 0 => Some((i, &it.origin)),
            _ => None,
        })
        .max_by_key(|(i, _)| *i);
    if let Some((i, origin)) = max.filter(|(i, _)| *i >= MAX_CLASSES) {
        bail!(
            "{origin}: label {i} would make {} classes (at most {MAX_CLASSES}); integer labels \
             number the classes from 0",
            i as i128 + 1
        );
    }
    let max = max.map(|(i, _)| i);
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|it| match &it.label {
            LabelRef::Name(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    if let Some(max) = max {
        // Integer labels: names are the numbers, so label i stays class i.
        for i in 0..=max {
            names.push(i.to_string());
        }
    }
    sort_class_names(&mut names);
    names.dedup();
    Ok(names)
}

/// Sort numerically when every name is a non-negative integer, else lexically.
pub fn sort_class_names(names: &mut [String]) {
    if names.iter().all(|n| n.parse::<u64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<u64>().unwrap_or(0));
    } else {
        names.sort();
    }
}

/// One record for all decoded files: a hash over their (path, sha256) pairs.
pub fn tree_record(source: &Path, files: &[(String, String, u64)]) -> FileRecord {
    FileRecord {
        path: source.display().to_string(),
        sha256: hash::sha256_tree(files.iter().map(|(p, h, _)| (p.as_str(), h.as_str()))),
        bytes: files.iter().map(|(_, _, b)| b).sum(),
        files: Some(files.len()),
    }
}

/// Read a whole input file, recording it as an input.
pub(crate) fn read_input(path: &Path, inputs: &mut Vec<FileRecord>) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    inputs.push(FileRecord {
        path: path.display().to_string(),
        sha256: hash::sha256_bytes(&bytes),
        bytes: bytes.len() as u64,
        files: None,
    });
    Ok(bytes)
}

/// The files a source names: the source itself when it is a file, else the files in the source
/// folder that `wanted` picks, sorted.
pub(crate) fn source_files(source: &Path, wanted: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    if source.is_file() {
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .with_context(|| format!("listing {}", source.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| wanted(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Image file extensions decoded by folder-based sources.
pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .map(|e| {
            let e = e.to_string_lossy().to_ascii_lowercase();
            matches!(
                e.as_str(),
                "png" | "jpg" | "jpeg" | "bmp" | "ppm" | "pgm" | "pnm"
            )
        })
        .unwrap_or(false)
}

/// Build a grey or RGB image from row-major HWC bytes.
pub(crate) fn image_from_hwc(h: usize, w: usize, c: usize, data: Vec<u8>) -> Result<DynamicImage> {
    let (h32, w32) = (h as u32, w as u32);
    Ok(match c {
        1 => DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w32, h32, data).context("pixel count does not match H×W")?,
        ),
        3 => DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(w32, h32, data)
                .context("pixel count does not match H×W×3")?,
        ),
        4 => DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(w32, h32, data)
                .context("pixel count does not match H×W×4")?,
        ),
        _ => bail!("{c} channels: only 1, 3 or 4 are supported"),
    })
}

/// An array of images as it comes out of IDX, pickle or npy: u8, N×H×W×C (C = 1, 3 or 4).
pub(crate) struct ImageArray {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<u8>,
}

impl ImageArray {
    /// Interpret a shape: N×H×W (grey), N×H×W×C or N×C×H×W (C in 1, 3, 4).
    pub fn from_shape(shape: &[usize], data: Vec<u8>, what: &str) -> Result<Self> {
        // The shape comes from a header; check it against the bytes before indexing by it.
        let need = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if need != Some(data.len()) {
            bail!("{what}: {} bytes do not fill shape {shape:?}", data.len());
        }
        if shape.len() >= 3 && shape[1..].contains(&0) {
            bail!("{what}: images of shape {shape:?} have no pixels");
        }
        if shape.len() >= 3 && shape[1..].iter().any(|&d| d > u32::MAX as usize) {
            bail!("{what}: images of shape {shape:?} are too large");
        }
        let arr = match *shape {
            [n, h, w] => Self {
                n,
                h,
                w,
                c: 1,
                data,
            },
            [n, h, w, c] if matches!(c, 1 | 3 | 4) => Self { n, h, w, c, data },
            [n, c, h, w] if matches!(c, 1 | 3 | 4) => {
                // Channel-first: transpose to channel-last.
                let mut out = vec![0u8; data.len()];
                let plane = h * w;
                for i in 0..n {
                    let src = &data[i * c * plane..(i + 1) * c * plane];
                    let dst = &mut out[i * c * plane..(i + 1) * c * plane];
                    for ch in 0..c {
                        for p in 0..plane {
                            dst[p * c + ch] = src[ch * plane + p];
                        }
                    }
                }
                Self {
                    n,
                    h,
                    w,
                    c,
                    data: out,
                }
            }
            _ => bail!(
                "{what}: images have shape {shape:?}; expected N×H×W, N×H×W×C or N×C×H×W with C \
                 of 1, 3 or 4"
            ),
        };
        if arr.data.len() != arr.n * arr.h * arr.w * arr.c {
            bail!(
                "{what}: {} bytes do not fill shape {shape:?}",
                arr.data.len()
            );
        }
        Ok(arr)
    }

    /// Turn the array and its labels into items.
    pub fn into_items(
        self,
        labels: &[i64],
        origin: &str,
        split: Option<Split>,
        items: &mut Vec<Item>,
    ) -> Result<()> {
        if labels.len() != self.n {
            bail!(
                "{origin}: {} images but {} labels; the two must match",
                self.n,
                labels.len()
            );
        }
        let len = self.h * self.w * self.c;
        for (i, &label) in labels.iter().enumerate() {
            let px = self.data[i * len..(i + 1) * len].to_vec();
            items.push(Item {
                origin: format!("{origin}[{i}]"),
                label: LabelRef::Index(label),
                split,
                payload: Payload::Image(image_from_hwc(self.h, self.w, self.c, px)?),
            });
        }
        Ok(())
    }
}
