//! `augment`: build the training set. Real images are always kept; rare classes are filled up
//! by repeating real images, classical transforms, synthetic images, or synthetic + classical.
//! The real val and test splits are never read or written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rebalance_core::contract::augment::{
    AugmentInfo, AugmentMetrics, Composition as CompositionFile, Totals,
};
use rebalance_core::contract::class_index;
use rebalance_core::contract::layout::{file, Layout, AUGMENTED, DATASET, FILTERED};
use rebalance_core::imageset::source;
use rebalance_core::{grid, CommonArgs, ImageSet, Manifest, StagedDir};
use rebalance_nn::{device_name, resolve_device};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tracing::{info, warn};

pub use rebalance_nn::transforms::ClassicalParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
pub enum Strategy {
    /// The real training images only.
    #[value(name = "none")]
    #[serde(rename = "none")]
    None,
    /// Repeat real images of each class up to the target.
    #[value(name = "oversample")]
    #[serde(rename = "oversample")]
    Oversample,
    /// Random affine transforms of real images up to the target.
    #[value(name = "classical")]
    #[serde(rename = "classical")]
    Classical,
    /// Synthetic images (from filter or generate) up to the target.
    #[value(name = "synthetic")]
    #[serde(rename = "synthetic")]
    Synthetic,
    /// A share of the gap from synthetic images (--synthetic-share), the rest classical.
    #[value(name = "synthetic+classical")]
    #[serde(rename = "synthetic+classical")]
    SyntheticClassical,
}

impl Strategy {
    /// The name on the command line (`synthetic+classical`).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    pub fn uses_synthetic(self) -> bool {
        matches!(self, Self::Synthetic | Self::SyntheticClassical)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClassicalFrom {
    Real,
    #[value(name = "real+synthetic")]
    #[serde(rename = "real+synthetic")]
    RealSynthetic,
}

impl ClassicalFrom {
    /// The name on the command line (`real+synthetic`).
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// rebalance stage `augment`: build the rebalanced training set from the real train split.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(version)]
pub struct Args {
    /// How to fill the classes below the target.
    #[arg(long, value_enum, default_value_t = Strategy::SyntheticClassical)]
    pub strategy: Strategy,
    /// Real training set [default: <artifacts>/dataset/train.safetensors].
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Synthetic image set, for the synthetic strategies [default: <artifacts>/filtered/kept.safetensors].
    #[arg(long)]
    pub synthetic: Option<PathBuf>,
    /// Output folder [default: <artifacts>/augmented].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Images per class to reach [default: the largest class's real count, i.e. balance].
    #[arg(long, conflicts_with = "balance")]
    pub target: Option<usize>,
    /// Fill every class up to the largest (the default when --target is not given).
    #[arg(long)]
    pub balance: bool,
    /// Synthetic images per filled class: `gap` fills the gap to the target (all of it under
    /// synthetic, --synthetic-share of it under synthetic+classical); a count N adds N to every
    /// class below the target (or named by --classes) that the synthetic set has, even past
    /// the target (under synthetic+classical the rest of the gap is then classical, so 0 is
    /// classical alone).
    #[arg(long, default_value = "gap", value_name = "gap|N")]
    pub add: Add,
    /// Share of each class's gap filled with synthetic images under synthetic+classical.
    #[arg(long, default_value_t = 0.5)]
    pub synthetic_share: f64,
    /// At most this many synthetic images per real image of the class.
    #[arg(long)]
    pub max_synthetic_ratio: Option<f64>,
    /// Images the classical transforms start from under synthetic+classical: the real images of
    /// the class, or the real and the synthetic ones (more varied sources when the synthetic
    /// images are new).
    #[arg(long, value_enum, default_value_t = ClassicalFrom::Real)]
    pub classical_from: ClassicalFrom,
    /// Under a synthetic strategy, leave a class the synthetic set has no image of short,
    /// instead of filling it by classical transforms (refinement rounds use this: the GAN's
    /// training set takes only real and kept images).
    #[arg(long)]
    pub no_fallback: bool,
    /// Only fill these classes (names) [default: every class below the target].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    #[command(flatten)]
    pub classical: ClassicalParams,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub use rebalance_core::contract::augment::ClassComposition as Composition;

/// Plan the composition of every class (no pixels touched): `real[c]` real images,
/// `synth[c]` synthetic images available, `fill[c]` whether class c may be filled.
pub fn plan(args: &Args, real: &[usize], synth: &[usize], fill: &[bool]) -> Vec<Composition> {
    let target = args
        .target
        .unwrap_or_else(|| real.iter().copied().max().unwrap_or(0));
    real.iter()
        .zip(synth)
        .zip(fill)
        .map(|((&r, &s), &f)| {
            let mut c = Composition {
                real: r,
                synthetic_available: s,
                ..Default::default()
            };
            if !f {
                return c;
            }
            let gap = target.saturating_sub(r);
            // --add N goes to the classes below the target (the rare ones), or to the classes
            // --classes names, whatever their count.
            if args.add.count().is_some() && args.classes.is_empty() && gap == 0 {
                return c;
            }
            let synth_cap = match args.max_synthetic_ratio {
                Some(ratio) => s.min((ratio * r as f64).floor() as usize),
                None => s,
            };
            let from_synth = args.classical_from == ClassicalFrom::RealSynthetic;
            let can_transform = r > 0 || (from_synth && s > 0);
            // No synthetic image of a class to fill (the filter kept none): the class is
            // filled by classical transforms rather than left short, and says so.
            // (--add fills only the classes the synthetic set has.)
            if args.strategy.uses_synthetic()
                && s == 0
                && gap > 0
                && args.add.count().is_none()
                && !args.no_fallback
                && can_transform
            {
                c.classical_fallback = true;
                c.classical = gap;
                return c;
            }
            match args.strategy {
                Strategy::None => {}
                Strategy::Oversample if can_transform => c.repeated = gap,
                Strategy::Classical if can_transform => c.classical = gap,
                Strategy::Oversample | Strategy::Classical => {}
                Strategy::Synthetic => {
                    c.synthetic = args.add.count().unwrap_or(gap).min(synth_cap);
                }
                Strategy::SyntheticClassical => {
                    let want = args
                        .add
                        .count()
                        .unwrap_or(((gap as f64) * args.synthetic_share).round() as usize);
                    c.synthetic = want.min(synth_cap);
                    if can_transform {
                        c.classical = gap.saturating_sub(c.synthetic);
                    }
                }
            }
            c
        })
        .collect()
}

/// `--add`: fill the gap, or add a fixed count of synthetic images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Add {
    Gap,
    Count(usize),
}

impl Add {
    pub fn count(self) -> Option<usize> {
        match self {
            Add::Gap => None,
            Add::Count(n) => Some(n),
        }
    }
}

impl std::str::FromStr for Add {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "gap" => Ok(Add::Gap),
            n => n
                .parse()
                .map(Add::Count)
                .map_err(|_| format!("`{s}` is neither `gap` nor a count of images")),
        }
    }
}

/// As before `gap` existed: null for `gap`, else the count.
impl Serialize for Add {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.count().serialize(s)
    }
}

impl std::fmt::Display for Add {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Add::Gap => f.write_str("gap"),
            Add::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Flags and inputs, checked before any image is made.
struct Plan {
    args: Args,
    device: tch::Device,
    train_path: PathBuf,
    synth_path: PathBuf,
    out: PathBuf,
    train: ImageSet,
    synthetic: Option<ImageSet>,
    /// Whether each class may be filled (`--classes`).
    fill: Vec<bool>,
    target: usize,
    comp: Vec<Composition>,
}

impl Plan {
    fn resolve(args: &Args) -> Result<Self> {
        if !(0.0..=1.0).contains(&args.synthetic_share) {
            bail!(
                "--synthetic-share must be within [0, 1], got {}",
                args.synthetic_share
            );
        }
        if args.classical_from == ClassicalFrom::RealSynthetic
            && args.strategy != Strategy::SyntheticClassical
        {
            bail!("--classical-from real+synthetic only applies to --strategy synthetic+classical");
        }
        let device = resolve_device(args.common.device)?;
        let layout = Layout::new(&args.common.artifacts);
        let train_path = args
            .train
            .clone()
            .unwrap_or_else(|| layout.file(DATASET, file::TRAIN));
        let synth_path = args
            .synthetic
            .clone()
            .unwrap_or_else(|| layout.file(FILTERED, file::KEPT));
        let out = args.out.clone().unwrap_or_else(|| layout.dir(AUGMENTED));
        let train = ImageSet::read_input(
            &train_path,
            "training set",
            "run ingest first, or pass --train",
        )?;
        let mut fill = vec![args.classes.is_empty(); train.classes.len()];
        for name in &args.classes {
            fill[class_index(&train.classes, name).context("--classes")?] = true;
        }
        let synthetic = if args.strategy.uses_synthetic() {
            Some(read_synthetic(&synth_path, &train, &train_path)?)
        } else {
            None
        };
        let real_counts = train.counts();
        let synth_counts = synthetic
            .as_ref()
            .map(|s| s.counts())
            .unwrap_or_else(|| vec![0; train.classes.len()]);
        // A class to fill needs images to start from: real ones, or synthetic ones under a
        // synthetic strategy.
        if args.strategy != Strategy::None {
            let to_fill = (0..fill.len()).filter(|&c| fill[c] && synth_counts[c] == 0);
            train.ensure_classes_have_images(
                &train_path,
                to_fill,
                "leave it out with --classes (the classes to fill)",
            )?;
        }
        Ok(Self {
            comp: plan(args, &real_counts, &synth_counts, &fill),
            target: args
                .target
                .unwrap_or_else(|| real_counts.iter().copied().max().unwrap_or(0)),
            args: args.clone(),
            device,
            train_path,
            synth_path,
            out,
            train,
            synthetic,
            fill,
        })
    }
}

fn read_synthetic(path: &Path, train: &ImageSet, train_path: &Path) -> Result<ImageSet> {
    let s = ImageSet::read_input(
        path,
        "synthetic image set",
        "run `gan-train generate` and `filter` first, or pass --synthetic",
    )?;
    s.ensure_matches(path, train, train_path)?;
    if s.is_empty() {
        warn!(
            "{}: the synthetic set is empty (the filter kept nothing? see its acceptance.csv, or lower --threshold); the classes to fill get classical transforms instead",
            path.display()
        );
    }
    Ok(s)
}

/// The rebalanced set and up to 10 added images per class (for the sample grid).
struct Built {
    out: ImageSet,
    added_rows: Vec<Vec<u8>>,
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::resolve(args)?;
    let _lock = rebalance_core::stage_lock::StageLock::share("augment", &plan.out)?;
    let built = build(&plan)?;
    let totals = write_outputs(&plan, &built, started)?;
    println!(
        "augment: {}: {} real → {} images ({} repeated, {} classical, {} synthetic) in {}",
        args.strategy.name(),
        plan.train.len(),
        built.out.len(),
        totals.repeated,
        totals.classical,
        totals.synthetic,
        plan.out.display()
    );
    Ok(())
}

/// Every real image first, then each class's repeated, classical and synthetic images.
fn build(plan: &Plan) -> Result<Built> {
    let (args, train) = (&plan.args, &plan.train);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.common.seed);
    rebalance_nn::seed_everything(args.common.seed);
    let mut out = train.clone();
    out.source = Some(vec![source::REAL; train.len()]);
    let mut built = Built {
        out,
        added_rows: vec![Vec::new(); train.classes.len()],
    };
    for (c, plan_c) in plan.comp.iter().enumerate() {
        warn_short(plan, c, plan_c);
        let mut real_idx: Vec<usize> = (0..train.len())
            .filter(|&i| train.labels[i] == c as i64)
            .collect();
        real_idx.shuffle(&mut rng);
        // Repeated real images.
        for j in 0..plan_c.repeated {
            built.out.push_from(
                train.image(real_idx[j % real_idx.len()]),
                c as i64,
                source::REPEATED,
            );
        }
        // Sources of the classical transforms: real images, and synthetic ones when asked.
        let mut sources: Vec<&[u8]> = real_idx.iter().map(|&i| train.image(i)).collect();
        if args.classical_from == ClassicalFrom::RealSynthetic {
            if let Some(s) = &plan.synthetic {
                sources.extend(
                    (0..s.len())
                        .filter(|&i| s.labels[i] == c as i64)
                        .map(|i| s.image(i)),
                );
            }
            sources.shuffle(&mut rng);
        }
        let src: Vec<&[u8]> = (0..plan_c.classical)
            .map(|j| sources[j % sources.len()])
            .collect();
        add_classical(plan, &mut built, &src, c, &mut rng)?;
        // Synthetic images, a random subset of those available.
        if let Some(s) = &plan.synthetic {
            let mut idx: Vec<usize> = (0..s.len()).filter(|&i| s.labels[i] == c as i64).collect();
            idx.shuffle(&mut rng);
            for &i in idx.iter().take(plan_c.synthetic) {
                built.push_added(s.image(i), c, train.image_len(), source::SYNTHETIC);
            }
        }
        if plan_c.total() > plan_c.real {
            info!(
                "class `{}`: {} real + {} repeated + {} classical + {} synthetic = {}",
                train.classes[c],
                plan_c.real,
                plan_c.repeated,
                plan_c.classical,
                plan_c.synthetic,
                plan_c.total()
            );
        }
    }
    Ok(built)
}

impl Built {
    fn push_added(&mut self, img: &[u8], c: usize, per: usize, kind: u8) {
        self.out.push_from(img, c as i64, kind);
        if self.added_rows[c].len() < 10 * per {
            self.added_rows[c].extend_from_slice(img);
        }
    }
}

/// Warn when a class to fill cannot reach the target.
fn warn_short(plan: &Plan, c: usize, plan_c: &Composition) {
    if plan_c.classical_fallback {
        warn!(
            "class `{}`: no synthetic image to use (the filter kept none); filled with {} classical images instead",
            plan.train.classes[c], plan_c.classical
        );
    }
    let target = plan.target;
    if plan.fill[c]
        && target > plan_c.real
        && plan_c.total() < target.max(plan_c.real)
        && plan.args.strategy != Strategy::None
    {
        warn!(
            "class `{}`: reaches {} of the target {target} (real {}, synthetic available {}{})",
            plan.train.classes[c],
            plan_c.total(),
            plan_c.real,
            plan_c.synthetic_available,
            if plan_c.real == 0 {
                ", and no real image to transform"
            } else {
                ""
            }
        );
    }
}

/// Classical transforms of `src` (one each), in batches of 512 on the device.
fn add_classical(
    plan: &Plan,
    built: &mut Built,
    src: &[&[u8]],
    c: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<()> {
    let train = &plan.train;
    let per = train.image_len();
    let shape = [
        train.channels as i64,
        train.height as i64,
        train.width as i64,
    ];
    for chunk in src.chunks(512) {
        let mut pix = Vec::with_capacity(chunk.len() * per);
        for img in chunk {
            pix.extend_from_slice(img);
        }
        let x =
            Tensor::from_slice(&pix).reshape([chunk.len() as i64, shape[0], shape[1], shape[2]]);
        let mats: Vec<[f32; 6]> = chunk
            .iter()
            .map(|_| plan.args.classical.sample(rng))
            .collect();
        let y = rebalance_nn::transforms::transform(
            &x,
            &mats,
            plan.args.classical.elastic,
            plan.device,
        );
        let v = Vec::<u8>::try_from(y.contiguous().view([-1]))?;
        for img in v.chunks(per) {
            built.push_added(img, c, per, source::CLASSICAL);
        }
    }
    Ok(())
}

/// The set, composition.json, the charts and the manifest; the totals.
fn write_outputs(plan: &Plan, built: &Built, started: Instant) -> Result<Totals> {
    let (args, train) = (&plan.args, &plan.train);
    let staged = StagedDir::new(&plan.out)?;
    built.out.write(&staged.path().join(file::TRAIN))?;
    let classes: BTreeMap<String, Composition> = train
        .classes
        .iter()
        .cloned()
        .zip(plan.comp.iter().copied())
        .collect();
    let totals = plan.comp.iter().fold(
        Totals {
            images: built.out.len(),
            ..Default::default()
        },
        |t, c| Totals {
            real: t.real + c.real,
            repeated: t.repeated + c.repeated,
            classical: t.classical + c.classical,
            synthetic: t.synthetic + c.synthetic,
            images: t.images,
        },
    );
    let composition = CompositionFile {
        strategy: args.strategy.name(),
        target: plan.target,
        train: plan.train_path.display().to_string(),
        synthetic: plan
            .synthetic
            .as_ref()
            .map(|_| plan.synth_path.display().to_string()),
        classical: args.classical.ranges(),
        classical_from: args.classical_from.name(),
        classes: classes.clone(),
        totals,
    };
    staged.write(file::COMPOSITION, &serde_json::to_vec_pretty(&composition)?)?;
    write_charts(&staged, plan, built)?;
    let synthetic = plan.synthetic.as_ref().map(|_| &plan.synth_path);
    let mut m = Manifest::new(
        "augment",
        serde_json::to_value(args)?,
        &device_name(plan.device),
        args.common.seed,
    )
    .with_input_files(std::iter::once(&plan.train_path).chain(synthetic))?;
    m.set_metrics(&AugmentMetrics {
        n_images: built.out.len(),
        n_real: train.len(),
        n_synthetic: totals.synthetic,
        n_classical: totals.classical,
        n_repeated: totals.repeated,
    })?;
    m.set_extra(&AugmentInfo {
        composition: classes,
    })?;
    m.commit(staged, started)?;
    Ok(totals)
}

/// The before/after bar chart and the grid of added images.
fn write_charts(staged: &StagedDir, plan: &Plan, built: &Built) -> Result<()> {
    let train = &plan.train;
    let svg = rebalance_core::chart::grouped_bars_svg(
        &format!(
            "training images per class: before / after ({})",
            plan.args.strategy.name()
        ),
        &train.classes,
        &[
            rebalance_core::chart::BarSeries {
                name: "before (real)",
                values: train.counts().iter().map(|&v| v as f64).collect(),
            },
            rebalance_core::chart::BarSeries {
                name: "after",
                values: built.out.counts().iter().map(|&v| v as f64).collect(),
            },
        ],
        "images",
    )?;
    staged.write("class_counts.svg", svg.as_bytes())?;
    let per = train.image_len();
    let rows: Vec<Vec<&[u8]>> = built
        .added_rows
        .iter()
        .map(|r| r.chunks(per).collect())
        .collect();
    if rows.iter().any(|r| !r.is_empty()) {
        let png = grid::grid_png(
            &rows,
            train.channels,
            train.height,
            train.width,
            grid::default_scale(train.height),
        )?;
        staged.write("samples.png", &png)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(strategy: &str, extra: &[&str]) -> Args {
        let mut v = vec!["augment", "--strategy", strategy];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    #[test]
    fn plans_fill_the_gap_per_strategy() {
        let real = [300, 10, 300, 0];
        let synth = [0, 500, 0, 40];
        let fill = [true; 4];
        let p = plan(&args("oversample", &[]), &real, &synth, &fill);
        assert_eq!((p[1].repeated, p[1].total()), (290, 300));
        assert_eq!(p[0].total(), 300);
        assert_eq!(
            p[3].total(),
            0,
            "nothing to repeat in a class without real images"
        );
        let p = plan(
            &args("classical", &["--target", "400"]),
            &real,
            &synth,
            &fill,
        );
        assert_eq!((p[0].classical, p[1].classical), (100, 390));
        let p = plan(&args("synthetic", &[]), &real, &synth, &fill);
        assert_eq!((p[1].synthetic, p[3].synthetic), (290, 40));
        let p = plan(&args("synthetic+classical", &[]), &real, &synth, &fill);
        assert_eq!((p[1].synthetic, p[1].classical), (145, 145));
        assert_eq!((p[3].synthetic, p[3].classical), (40, 0));
        let p = plan(&args("synthetic", &["--add", "250"]), &real, &synth, &fill);
        assert_eq!((p[1].synthetic, p[1].total()), (250, 260));
        // A class at the target gets none unless --classes names it.
        let both = [50, 50];
        let p2 = plan(
            &args("synthetic", &["--add", "5"]),
            &real[..2],
            &both,
            &fill[..2],
        );
        assert_eq!((p2[0].synthetic, p2[1].synthetic), (0, 5));
        let named = plan(
            &args("synthetic", &["--add", "5", "--classes", "c0"]),
            &real[..2],
            &both,
            &fill[..2],
        );
        assert_eq!(named[0].synthetic, 5);
        let p = plan(
            &args("synthetic+classical", &["--add", "0"]),
            &real,
            &synth,
            &fill,
        );
        assert_eq!((p[1].synthetic, p[1].classical), (0, 290));
        let p = plan(
            &args("synthetic", &["--max-synthetic-ratio", "2"]),
            &real,
            &synth,
            &fill,
        );
        assert_eq!(p[1].synthetic, 20);
        let p = plan(&args("none", &[]), &real, &synth, &fill);
        assert_eq!(p.iter().map(|c| c.total()).sum::<usize>(), 610);
        // Classical transforms of synthetic images can fill a class without real images.
        let p = plan(
            &args(
                "synthetic+classical",
                &["--classical-from", "real+synthetic"],
            ),
            &real,
            &synth,
            &fill,
        );
        assert_eq!((p[3].synthetic, p[3].classical), (40, 260));
        let p = plan(
            &args("classical", &[]),
            &real,
            &synth,
            &[false, true, false, false],
        );
        assert_eq!((p[1].classical, p[0].classical), (290, 0));
    }

    #[test]
    fn a_class_with_no_synthetic_image_is_filled_classically_and_marked() {
        let real = [300, 10, 10, 0];
        let synth = [0, 0, 50, 0];
        let fill = [true; 4];
        for strategy in ["synthetic", "synthetic+classical"] {
            let p = plan(&args(strategy, &[]), &real, &synth, &fill);
            assert_eq!(
                (p[1].synthetic, p[1].classical, p[1].classical_fallback),
                (0, 290, true),
                "{strategy}"
            );
            assert!(!p[2].classical_fallback && p[2].synthetic > 0, "{strategy}");
            assert!(!p[0].classical_fallback, "no gap, nothing to fill");
            assert_eq!(p[3].total(), 0, "nothing to transform in an empty class");
        }
        let p = plan(&args("synthetic", &["--no-fallback"]), &real, &synth, &fill);
        assert_eq!((p[1].total(), p[1].classical_fallback), (10, false));
        // --add fills only the classes the synthetic set has.
        let p = plan(&args("synthetic", &["--add", "5"]), &real, &synth, &fill);
        assert_eq!((p[1].total(), p[1].classical_fallback), (10, false));
    }
}
