//! `ingest`: read image data in the formats people already have and write the train/val/test
//! image sets, the manifest and the dataset report of the artifact contract.
//!
//! Flow: a source module lists items (files to decode, or pixels already in memory) with
//! their labels and, where the source has one, their split -> labels are resolved against
//! the class list -> items are decoded, converted and resized in parallel -> the split is
//! made (stratified, seeded) -> per-class caps cut the train split -> outputs are staged
//! and swapped into place at once.

pub mod pickle;
pub mod prepare;
pub mod report;
pub mod sources;
pub mod split;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rebalance_core::contract::layout::{Layout, DATASET};
use rebalance_core::{CommonArgs, ImageSet, Manifest, StagedDir};
use serde::Serialize;

pub use sources::{Item, LabelRef, Payload, Problem, Split};

/// Input formats `ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Guess from the path: see `--help` of `--format`.
    Auto,
    /// `root/<class>/*.{png,jpg,jpeg,bmp,ppm,pgm}`.
    Folder,
    /// A labels CSV (`--csv`, `--id-col`, `--label-col`, `--suffix`) plus the image folder.
    Csv,
    /// FER2013-style CSV: `emotion,pixels,Usage` (label, space-separated grey pixels, split).
    Fer2013,
    /// MNIST IDX pairs `<prefix>-images-idx3-ubyte[.gz]` + `<prefix>-labels-idx1-ubyte[.gz]`.
    Idx,
    /// Official GTSRB layout: `Final_Training/Images/000NN/*.ppm` + `GT-000NN.csv`, and
    /// optionally `Final_Test/Images` with `GT-final_test.csv`.
    Gtsrb,
    /// Pickled dicts `{'features': uint8 N×H×W×C, 'labels': N}` (`train.p`, `valid.p`,
    /// `test.p`), read without running any pickle code.
    Pickle,
    /// NumPy `.npz` (`x`/`y` or `x_train`/`y_train`/`x_test`/`y_test`) or a folder of `.npy`.
    Npy,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.to_possible_value().expect("no skipped variants");
        f.write_str(v.get_name())
    }
}

/// Command-line arguments of `ingest`.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    version,
    about = "Load an image-classification data set into train/val/test image sets (safetensors), \
             with a manifest, sample grid, class-count chart and a terminal summary.",
    after_help = "Examples:\n  \
        ingest data/mnist --test-per-class 400 --val-per-class 100 --max-per-class 300 --keep 2=10,5=10,8=10\n  \
        ingest data/flowers --size 64x64 --channels 3\n  \
        ingest data/dr/train --format csv --csv data/dr/trainLabels.csv --id-col image --label-col level --suffix .jpeg --size 128\n  \
        ingest data/fer2013.csv\n  \
        ingest data/GTSRB --roi-crop --size 32"
)]
pub struct Args {
    /// Data to read: a folder or a file, depending on the format.
    pub source: PathBuf,

    /// Input format. `auto` looks at the path: a `.csv` with `emotion,pixels` columns is
    /// fer2013; `.p`/`.pkl`/`.pickle` pickle; `.npz`/`.npy` npy; IDX file names idx; a folder
    /// with `Final_Training` gtsrb; with IDX files idx; with `train.p` pickle; with `.npy`
    /// files npy; `--csv` given csv; any other folder is one sub-folder per class.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// Output folder [default: <artifacts>/dataset].
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Resize every image to HxW (or N for NxN). `auto`: the source's size, or when sizes
    /// differ the most common one (every image is then resized to it, and the summary says
    /// so); 32x32 for GTSRB.
    #[arg(long, value_parser = parse_size, default_value = "auto", value_name = "HxW|N|auto")]
    pub size: Size,

    /// Output channels: 1 (grey) or 3 (RGB). Default: those of the first image.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub channels: Option<u8>,

    /// Keep only these classes (names, comma-separated), in the source's class order.
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,

    /// File with one class name per line; line i names label i (for integer labels).
    #[arg(long)]
    pub class_names: Option<PathBuf>,

    /// Fractions TRAIN,VAL,TEST for the stratified split, used when the source has no split
    /// of its own (or with --resplit).
    #[arg(long, value_parser = parse_fractions, default_value = "0.8,0.1,0.1")]
    pub split: (f64, f64, f64),

    /// Exact number of test images per class (overrides the test fraction); 0 is the same as
    /// not giving it: the fraction of --split.
    #[arg(long, value_parser = parse_count_or_none)]
    pub test_per_class: Option<usize>,

    /// Exact number of validation images per class (overrides the val fraction); 0: the
    /// fraction of --split.
    #[arg(long, value_parser = parse_count_or_none)]
    pub val_per_class: Option<usize>,

    /// Ignore the source's own train/val/test split and split everything anew.
    #[arg(long)]
    pub resplit: bool,

    /// Cap chosen classes in the train split, e.g. `2=10,5=10,8=10` (builds rare classes);
    /// `none` (or an empty value) caps nothing.
    #[arg(long, value_parser = parse_keep, default_value = "none", value_name = "CLASS=N,…|none")]
    pub keep: Caps,

    /// Cap every class in the train split at N images (classes in --keep use their own cap);
    /// 0 caps nothing.
    #[arg(long, value_parser = parse_count_or_none)]
    pub max_per_class: Option<usize>,

    /// A class is marked rare when its train count is below this fraction of the median.
    #[arg(long, default_value_t = 0.5)]
    pub rare_below: f64,

    /// Read image files that resolve outside the image folder (an absolute path or `..` in a
    /// labels CSV, a symlink). Without it they are skipped with the reason: a downloaded data
    /// set cannot pull other files of the machine into the artifacts and the report.
    #[arg(long)]
    pub allow_outside: bool,

    /// Make every per-file problem (unreadable image, bad row, unknown label) fatal.
    #[arg(long)]
    pub strict: bool,

    /// Labels CSV for `--format csv` (the source is then the image folder). A source that is
    /// itself a CSV without a `pixels` column is such a labels CSV, its images beside it.
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// Column of the labels CSV holding the image id (file name without --suffix).
    #[arg(long, default_value = "image")]
    pub id_col: String,

    /// Column of the labels CSV holding the label.
    #[arg(long, default_value = "label")]
    pub label_col: String,

    /// Suffix added to each id to get the file name, e.g. `.jpeg`.
    #[arg(long, default_value = "")]
    pub suffix: String,

    /// GTSRB: crop each image to its ROI columns before resizing (`--roi-crop`, or
    /// `--roi-crop=true|false`; it never takes the next argument as its value).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, default_value_t = false,
          default_missing_value = "true", require_equals = true, value_name = "BOOL")]
    pub roi_crop: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--size`: `Some((height, width))`, or `None` for `auto`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Size(pub Option<(usize, usize)>);

fn parse_size(s: &str) -> Result<Size, String> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(Size(None));
    }
    let (h, w) = match s.split_once(['x', 'X']) {
        Some((h, w)) => (h.trim(), w.trim()),
        None => (s.trim(), s.trim()),
    };
    let p = |v: &str| {
        v.parse::<usize>()
            .ok()
            .filter(|&n| (1..=4096).contains(&n))
            .ok_or_else(|| format!("`{s}` is not a size; use HxW or N, e.g. 32x32"))
    };
    Ok(Size(Some((p(h)?, p(w)?))))
}

fn parse_fractions(s: &str) -> Result<(f64, f64, f64), String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{s}` is not TRAIN,VAL,TEST fractions, e.g. 0.8,0.1,0.1"))?;
    if v.len() != 3 || v.iter().any(|&x| !(0.0..=1.0).contains(&x)) {
        return Err(format!(
            "`{s}`: give three fractions between 0 and 1, e.g. 0.8,0.1,0.1"
        ));
    }
    if (v.iter().sum::<f64>() - 1.0).abs() > 1e-6 {
        return Err(format!("`{s}`: the fractions must add up to 1"));
    }
    Ok((v[0], v[1], v[2]))
}

impl Args {
    /// `--test-per-class`, 0 being not given.
    pub fn test_n(&self) -> Option<usize> {
        self.test_per_class.filter(|&n| n > 0)
    }

    /// `--val-per-class`, 0 being not given.
    pub fn val_n(&self) -> Option<usize> {
        self.val_per_class.filter(|&n| n > 0)
    }

    /// `--max-per-class`, 0 being no cap.
    pub fn max_n(&self) -> Option<usize> {
        self.max_per_class.filter(|&n| n > 0)
    }
}

/// `--keep`: per-class train caps, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Caps(pub Vec<(String, usize)>);

/// `CLASS=N,CLASS=N`, or `none` / nothing for no caps.
fn parse_keep(s: &str) -> Result<Caps, String> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("none") {
        return Ok(Caps::default());
    }
    t.split(',')
        .map(|item| {
            let (class, n) = item.split_once('=').ok_or_else(|| {
                format!("`{item}` is not CLASS=N, e.g. 5=10 (or `none` for no caps)")
            })?;
            let n = n
                .trim()
                .parse()
                .map_err(|_| format!("`{item}`: `{n}` is not a count"))?;
            Ok((class.trim().to_string(), n))
        })
        .collect::<Result<_, String>>()
        .map(Caps)
}

/// A count where 0 means "not given" (the pipeline passes every flag; 0 leaves it to the data).
fn parse_count_or_none(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .map_err(|_| format!("`{s}` is not a count"))
}

/// What a finished ingest produced; also printed as the terminal summary.
pub struct Outcome {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub summary: String,
}

/// The decoded images with their labels and classes, what could not be used, and the inputs.
struct Decoded {
    format: Format,
    classes: Vec<String>,
    samples: Vec<split::Sample>,
    problems: Vec<Problem>,
    inputs: Vec<rebalance_core::FileRecord>,
    target: prepare::Target,
    /// What ingest chose for mixed sizes or modes.
    notes: Vec<String>,
    decode_s: f64,
}

/// Run ingest with parsed arguments: read and decode the source, split it, write the folder.
pub fn run(args: &Args) -> Result<Outcome> {
    let started = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Layout::new(&args.common.artifacts).dir(DATASET));
    if !args.source.exists() {
        bail!("{}: no such file or folder", args.source.display());
    }
    let _lock = rebalance_core::stage_lock::StageLock::share("ingest", &out)?;
    let d = decode(args)?;
    if args.strict && !d.problems.is_empty() {
        bail!(
            "{} problem(s) with --strict; the first: {}: {}",
            d.problems.len(),
            d.problems[0].file,
            d.problems[0].reason
        );
    }
    if d.samples.is_empty() {
        bail!(
            "{}: none of the images could be used (first problem: {}: {})",
            args.source.display(),
            d.problems[0].file,
            d.problems[0].reason
        );
    }
    if d.classes.len() < 2 {
        bail!(
            "{}: only one class (`{}`, {} images) could be used; a classifier needs at least two",
            args.source.display(),
            d.classes[0],
            d.samples.len()
        );
    }
    let mut assignment = split::assign(&d.samples, &d.classes, args)?;
    assignment.notes.splice(0..0, d.notes.iter().cloned());
    let sets = split::build_sets(&d.samples, &assignment, &d.classes, &d.target);
    for (split, set) in Split::ALL.iter().zip(&sets) {
        if set.is_empty() {
            let msg = format!(
                "the {} split is empty: the classes are too small to give it an image, and classify refuses an empty split",
                split.name()
            );
            tracing::warn!("{msg}");
            assignment.notes.push(msg);
        }
    }
    write_outputs(args, &d, &sets, &assignment, &out, started)
}

/// Detect the format, load the items, resolve their labels and decode the images.
fn decode(args: &Args) -> Result<Decoded> {
    let format = sources::detect(args)?;
    tracing::info!("reading {} as {format}", args.source.display());
    let loaded = sources::load(format, args)?;
    let mut problems = loaded.problems;
    let (classes, resolved) = sources::resolve_classes(&loaded.items, loaded.classes, args)?;
    // Items of excluded classes are never decoded; unknown labels are problems.
    let mut todo = Vec::with_capacity(loaded.items.len());
    for (item, r) in loaded.items.iter().zip(resolved) {
        match r {
            Ok(Some(label)) => todo.push((item, label)),
            Ok(None) => {}
            Err(reason) => problems.push(Problem::new(&item.origin, reason)),
        }
    }
    let items: Vec<&Item> = todo.iter().map(|(it, _)| *it).collect();
    if items.is_empty() {
        bail!(
            "{}: no images to ingest{}",
            args.source.display(),
            problems
                .first()
                .map(|p| format!(" (first problem: {}: {})", p.file, p.reason))
                .unwrap_or_default()
        );
    }
    let t_decode = Instant::now();
    let (target, size_notes) = prepare::Target::choose(args, format, &items)?;
    let prepared = prepare::prepare_all(&items, &target, args.common.quiet)?;
    let decode_s = t_decode.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(prepared.len());
    let mut files = Vec::new();
    for ((item, label), result) in todo.into_iter().zip(prepared) {
        match result {
            Ok(p) => {
                if let Some((sha, bytes)) = p.file {
                    files.push((item.origin.clone(), sha, bytes));
                }
                samples.push(split::Sample {
                    origin: item.origin.clone(),
                    label,
                    source_split: item.split,
                    pixels: p.pixels,
                });
            }
            Err(reason) => problems.push(Problem::new(&item.origin, reason)),
        }
    }
    let mut inputs = loaded.inputs;
    if !files.is_empty() {
        inputs.push(sources::tree_record(&args.source, &files));
    }
    // Classes left without any image are a problem of their own; they are dropped so that
    // labels stay contiguous.
    let (classes, samples) = split::drop_empty_classes(classes, samples, &mut problems);
    Ok(Decoded {
        format,
        classes,
        samples,
        problems,
        inputs,
        target,
        notes: size_notes,
        decode_s,
    })
}

/// The splits, the report files and the manifest, swapped into `out` at once.
fn write_outputs(
    args: &Args,
    d: &Decoded,
    sets: &[ImageSet; 3],
    assignment: &split::Assignment,
    out: &Path,
    started: Instant,
) -> Result<Outcome> {
    let staged = StagedDir::new(out)?;
    for (split, set) in Split::ALL.iter().zip(sets) {
        set.write(&staged.path().join(format!("{}.safetensors", split.name())))
            .with_context(|| format!("writing the {} split", split.name()))?;
    }
    let rep = report::Report::new(&d.classes, sets, args.rare_below);
    staged.write("samples.png", &rep.samples_png(sets)?)?;
    staged.write("class_counts.svg", rep.chart_svg()?.as_bytes())?;
    let notes = &assignment.notes;
    let summary = rep.summary_text(&d.problems, notes, out, d.format);
    staged.write("summary.txt", summary.as_bytes())?;
    let mut manifest = Manifest::new(
        "ingest",
        serde_json::to_value(args).expect("args serialise"),
        // Decoding runs on CPU threads; no tensor work happens in ingest.
        "cpu",
        args.common.seed,
    );
    manifest.inputs = d.inputs.clone();
    rep.fill_manifest(
        &mut manifest,
        &d.problems,
        assignment,
        d.format,
        &d.target,
        round3(d.decode_s),
    )?;
    Ok(Outcome {
        out: out.to_path_buf(),
        manifest: manifest.commit(staged, started)?,
        summary,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers() {
        assert_eq!(parse_size("32"), Ok(Size(Some((32, 32)))));
        assert_eq!(parse_size("48x64"), Ok(Size(Some((48, 64)))));
        assert_eq!(parse_size("auto"), Ok(Size(None)));
        assert!(parse_size("0x5").is_err());
        assert!(parse_size("big").unwrap_err().contains("`big`"));
        assert_eq!(parse_fractions("0.7,0.1,0.2"), Ok((0.7, 0.1, 0.2)));
        assert!(parse_fractions("0.7,0.1").is_err());
        assert!(parse_fractions("0.7,0.2,0.2")
            .unwrap_err()
            .contains("add up"));
        assert_eq!(parse_keep("5=10"), Ok(Caps(vec![("5".into(), 10)])));
        assert_eq!(
            parse_keep("2=10, 5=3"),
            Ok(Caps(vec![("2".into(), 10), ("5".into(), 3)]))
        );
        // No caps: `none`, or nothing (a pipeline `-P keep=`).
        assert_eq!(parse_keep("none"), Ok(Caps::default()));
        assert_eq!(parse_keep(""), Ok(Caps::default()));
        assert_eq!(parse_count_or_none("0"), Ok(0));
        assert!(parse_keep("5:10").is_err());
        assert!(parse_keep("5=ten").unwrap_err().contains("`ten`"));
    }
}
