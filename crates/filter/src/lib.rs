//! `filter`: the confidence gate. A judge (a `classify` output trained on real data only) scores
//! every generated image; an image is kept when the judge's top class is the intended class with
//! probability ≥ --threshold (and ≤ --max-confidence, for a confidence band). Also reported: per
//! class acceptance, judge-space Fréchet distances before and after the gate, and the distance of
//! every image to its nearest real training image (near-copies can be dropped).

pub mod quality;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rebalance_core::contract::csv_bytes;
use rebalance_core::contract::filter::{
    AcceptanceRow, ConfidenceGate, FilterInfo, FilterMetrics, Reason, Score, Select,
};
use rebalance_core::contract::layout::{file, Layout, DATASET, FILTERED, GENERATED, JUDGE};
use rebalance_core::{grid, CommonArgs, ImageSet, Manifest, StagedDir};
use rebalance_nn::models::Judge;
use rebalance_nn::quality::diversity_u8;
use rebalance_nn::train::monitor::COLLAPSE_RATIO;
use rebalance_nn::{device_name, imageset_tensors, resolve_device};
use serde::Serialize;
use tch::{Device, Kind, Tensor};
use tracing::{info, warn};

/// rebalance stage `filter`: keep the generated images the judge is confident about.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(version)]
pub struct Args {
    /// Generated image set [default: <artifacts>/generated/generated.safetensors].
    #[arg(long)]
    pub generated: Option<PathBuf>,
    /// The judge: a classify output folder trained on real data only [default: <artifacts>/judge].
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// Folder of the real splits: train (nearest-copy check) and val (Fréchet reference)
    /// [default: <artifacts>/dataset].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output folder [default: <artifacts>/filtered].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `--threshold` and `--max-confidence`, flattened: the manifest's `params` hold them as
    /// fields of their own, which the report reads.
    #[command(flatten)]
    #[serde(flatten)]
    pub gate: ConfidenceGate,
    /// Keep at most the K most confident accepted images per class.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep at most N accepted images per class (a random subset).
    #[arg(long)]
    pub cap: Option<usize>,
    /// An image whose RMS pixel distance (pixels in [0, 1]) to its nearest real training image is
    /// below this is a near-copy.
    #[arg(long, default_value_t = 0.05)]
    pub copy_threshold: f64,
    /// Drop near-copies instead of only flagging them.
    #[arg(long)]
    pub drop_copies: bool,
    /// Which of the images that pass the gate to keep: `confident` (all, or the --top-k most
    /// confident), `informative` (the --top-k that a classifier trained on the real split alone,
    /// --plain, is least sure of), `diverse` (a greedy k-centre cover of --top-k in the judge's
    /// feature space). Without --top-k, informative and diverse keep half of each class's.
    #[arg(long, value_enum, default_value_t = Select::Confident)]
    pub select: Select,
    /// The real-only classifier of `--select informative` [default: the judge's `real`
    /// candidate, <judge>/recipes/real].
    #[arg(long, value_name = "DIR")]
    pub plain: Option<PathBuf>,
    /// Real split the Fréchet distances are measured against.
    #[arg(long, default_value = "val", value_parser = ["val", "train"])]
    pub reference: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 512)]
    pub batch: i64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub threshold: f64,
    pub max_confidence: f64,
    pub top_k: Option<usize>,
    pub cap: Option<usize>,
    pub drop_copies: bool,
}

/// The judge's top class and its probability (the first on ties).
fn top_class(p: &[f64]) -> (usize, f64) {
    p.iter()
        .enumerate()
        .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
}

/// Decide every row: the per-image rules first, then top-k and cap per intended class.
/// `probs[i]` is the judge's distribution for image i, `intended[i]` its class.
pub fn gate(
    probs: &[Vec<f64>],
    intended: &[usize],
    near_copy: &[bool],
    g: &Gate,
    seed: u64,
) -> Vec<Reason> {
    let mut out: Vec<Reason> = probs
        .iter()
        .zip(intended)
        .zip(near_copy)
        .map(|((p, &c), &copy)| {
            let (pred, conf) = top_class(p);
            if pred != c {
                Reason::WrongClass
            } else if conf < g.threshold {
                Reason::BelowThreshold
            } else if conf > g.max_confidence {
                Reason::AboveBand
            } else if copy && g.drop_copies {
                Reason::NearCopy
            } else {
                Reason::Kept
            }
        })
        .collect();
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in intended.iter().enumerate() {
        if out[i].kept() {
            by_class.entry(c).or_default().push(i);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (c, mut idx) in by_class {
        if let Some(k) = g.top_k {
            idx.sort_by(|&a, &b| probs[b][c].total_cmp(&probs[a][c]).then(a.cmp(&b)));
            for &i in &idx[k.min(idx.len())..] {
                out[i] = Reason::TopK;
            }
            idx.truncate(k);
        }
        if let Some(cap) = g.cap {
            idx.shuffle(&mut rng);
            for &i in &idx[cap.min(idx.len())..] {
                out[i] = Reason::Cap;
            }
        }
    }
    out
}

/// `--select informative`: the `quota` candidates the real-only classifier is least sure of
/// (lowest probability of the intended class; the lower index first on ties).
pub fn pick_informative(cands: &[usize], plain_prob: &[f64], quota: usize) -> Vec<usize> {
    let mut v = cands.to_vec();
    v.sort_by(|&a, &b| plain_prob[a].total_cmp(&plain_prob[b]).then(a.cmp(&b)));
    v.truncate(quota);
    v.sort_unstable();
    v
}

/// `--select diverse`: a greedy k-centre cover (Gonzalez 1985) of the rows of `features`
/// (`[m, F]`): start from row `first`, then repeatedly add the row farthest from every row
/// chosen so far, `quota` rows in all. Returns row positions in the order chosen.
pub fn pick_diverse(features: &Tensor, first: usize, quota: usize) -> Vec<usize> {
    let m = features.size()[0] as usize;
    let quota = quota.min(m);
    if quota == 0 {
        return Vec::new();
    }
    let f = features.to_kind(Kind::Float);
    let dist_to = |i: usize| {
        (&f - f.get(i as i64).unsqueeze(0))
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
    };
    let mut chosen = vec![first];
    let mut nearest = dist_to(first);
    while chosen.len() < quota {
        let next = nearest.argmax(0, false).int64_value(&[]) as usize;
        if chosen.contains(&next) || nearest.double_value(&[next as i64]) <= 0.0 {
            break; // every remaining row is a duplicate of a chosen one
        }
        chosen.push(next);
        nearest = nearest.minimum(&dist_to(next));
    }
    chosen
}

/// The images of class `c` (among those with `keep[i]`, when given).
fn select_class(images: &Tensor, labels: &[i64], c: i64, keep: Option<&[bool]>) -> Tensor {
    let idx: Vec<i64> = (0..labels.len())
        .filter(|&i| labels[i] == c && keep.is_none_or(|k| k[i]))
        .map(|i| i as i64)
        .collect();
    images.index_select(0, &Tensor::from_slice(&idx).to_device(images.device()))
}

fn features_of_class(
    judge: &Judge,
    images: &Tensor,
    labels: &[i64],
    c: i64,
    keep: Option<&[bool]>,
    batch: i64,
) -> Tensor {
    judge.features(&select_class(images, labels, c, keep), batch)
}

fn fmt_fd(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3}")).unwrap_or_default()
}

/// Refuse a confidence band other than 0 ≤ threshold ≤ max-confidence.
fn check_gate(g: &ConfidenceGate) -> Result<()> {
    if !(0.0..=1.0).contains(&g.threshold) || g.max_confidence < g.threshold {
        bail!(
            "--threshold {} and --max-confidence {} must satisfy 0 ≤ threshold ≤ max-confidence",
            g.threshold,
            g.max_confidence
        );
    }
    Ok(())
}

/// Paths, the gate and the data, checked before any scoring.
struct Plan {
    args: Args,
    device: Device,
    gen_path: PathBuf,
    train_path: PathBuf,
    ref_path: PathBuf,
    out: PathBuf,
    gate: Gate,
    judge: Judge,
    /// `--select informative`'s real-only classifier.
    plain: Option<Judge>,
    generated: ImageSet,
    train: ImageSet,
    reference: ImageSet,
}

impl Plan {
    fn resolve(args: &Args) -> Result<Self> {
        check_gate(&args.gate)?;
        if args.batch < 1 {
            bail!("--batch must be at least 1, not {}", args.batch);
        }
        let device = resolve_device(args.common.device)?;
        let layout = Layout::new(&args.common.artifacts);
        let gen_path = args
            .generated
            .clone()
            .unwrap_or_else(|| layout.file(GENERATED, file::GENERATED));
        let judge_dir = args.judge.clone().unwrap_or_else(|| layout.dir(JUDGE));
        let data = args.data.clone().unwrap_or_else(|| layout.dir(DATASET));
        let out = args.out.clone().unwrap_or_else(|| layout.dir(FILTERED));
        let train_path = data.join(file::TRAIN);
        let ref_path = data.join(format!("{}.safetensors", args.reference));
        let generated = ImageSet::read_input(
            &gen_path,
            "generated image set",
            "run `cargo run --release -p gan-train -- generate` first, or pass --generated",
        )?;
        if generated.is_empty() {
            bail!(
                "{}: the generated set is empty; nothing to filter",
                gen_path.display()
            );
        }
        let judge = Judge::load(&judge_dir, device)?;
        judge.check_compatible(&generated, &gen_path)?;
        let plain = match args.select {
            Select::Informative => {
                let dir = args
                    .plain
                    .clone()
                    .unwrap_or_else(|| judge_dir.join("recipes").join("real"));
                let p = Judge::load(&dir, device).map_err(|e| {
                    e.context("--select informative needs a classifier trained on the real split alone: --plain DIR (default: the judge's `real` candidate)")
                })?;
                p.check_compatible(&generated, &gen_path)?;
                Some(p)
            }
            _ => None,
        };
        let hint = "run ingest first, or pass --data";
        let train = ImageSet::read_input(&train_path, "real training set", hint)?;
        judge.check_compatible(&train, &train_path)?;
        let reference = if args.reference == "train" {
            train.clone()
        } else {
            ImageSet::read_input(&ref_path, "real reference set", hint)?
        };
        judge.check_compatible(&reference, &ref_path)?;
        Ok(Self {
            args: args.clone(),
            device,
            gen_path,
            train_path,
            ref_path,
            out,
            gate: Gate {
                threshold: args.gate.threshold,
                max_confidence: args.gate.max_confidence,
                // informative and diverse use --top-k as their quota instead.
                top_k: args.top_k.filter(|_| args.select == Select::Confident),
                cap: args.cap,
                drop_copies: args.drop_copies,
            },
            judge,
            plain,
            generated,
            train,
            reference,
        })
    }
}

/// The data on the device, for scoring and the per-class measures.
struct Tensors {
    generated: Tensor,
    train: Tensor,
    reference: Tensor,
}

/// The judge's probabilities for every generated image, each image's nearest real training
/// image, and the gate's decision: one score per image.
fn score(plan: &Plan, t: &Tensors) -> Result<Vec<Score>> {
    let (generated, classes) = (&plan.generated, &plan.generated.classes);
    let probs_t = plan
        .judge
        .probs(&t.generated, plan.args.batch)
        .to_kind(Kind::Double)
        .to_device(Device::Cpu);
    let flat = Vec::<f64>::try_from(probs_t.view([-1]))?;
    let probs: Vec<Vec<f64>> = flat.chunks(classes.len()).map(|r| r.to_vec()).collect();
    let intended: Vec<usize> = generated.labels.iter().map(|&l| l as usize).collect();
    let (dist, nn_idx) = quality::nearest(&t.generated, &t.train, plan.device);
    let near_copy: Vec<bool> = dist.iter().map(|&d| d < plan.args.copy_threshold).collect();
    let mut reasons = gate(
        &probs,
        &intended,
        &near_copy,
        &plan.gate,
        plan.args.common.seed,
    );
    let plain_prob: Option<Vec<f64>> = match &plan.plain {
        Some(p) => {
            let pr = p
                .probs(&t.generated, plan.args.batch)
                .to_kind(Kind::Double)
                .to_device(Device::Cpu);
            let flat = Vec::<f64>::try_from(pr.view([-1]))?;
            Some(
                flat.chunks(classes.len())
                    .zip(&intended)
                    .map(|(r, &c)| r[c])
                    .collect(),
            )
        }
        None => None,
    };
    select(
        plan,
        t,
        &probs,
        &intended,
        plain_prob.as_deref(),
        &mut reasons,
    );
    Ok((0..generated.len())
        .map(|i| {
            let (pred, conf) = top_class(&probs[i]);
            Score {
                index: i,
                intended: classes[intended[i]].clone(),
                predicted: classes[pred].clone(),
                confidence: conf,
                intended_prob: probs[i][intended[i]],
                nearest_real_distance: dist[i],
                nearest_real_index: nn_idx[i],
                near_copy: near_copy[i],
                kept: reasons[i].kept(),
                reason: reasons[i],
                plain_prob: plain_prob.as_ref().map(|p| p[i]),
            }
        })
        .collect())
}

/// `--select informative|diverse`: per class, the quota (--top-k, else half) of the images the
/// gate kept; the others become `not-selected`.
fn select(
    plan: &Plan,
    t: &Tensors,
    probs: &[Vec<f64>],
    intended: &[usize],
    plain_prob: Option<&[f64]>,
    reasons: &mut [Reason],
) {
    let how = plan.args.select;
    if how == Select::Confident {
        return;
    }
    for (c, _) in plan.generated.classes.iter().enumerate() {
        let cands: Vec<usize> = (0..intended.len())
            .filter(|&i| intended[i] == c && reasons[i].kept())
            .collect();
        if cands.is_empty() {
            continue;
        }
        let quota = plan.args.top_k.unwrap_or(cands.len().div_ceil(2));
        let chosen: Vec<usize> = match (how, plain_prob) {
            (Select::Informative, Some(pp)) => pick_informative(&cands, pp, quota),
            _ => {
                let idx: Vec<i64> = cands.iter().map(|&i| i as i64).collect();
                let x = t
                    .generated
                    .index_select(0, &Tensor::from_slice(&idx).to_device(plan.device));
                let f = plan.judge.features(&x, plan.args.batch);
                // The most confident image first, then the farthest from those chosen.
                let first = (0..cands.len())
                    .max_by(|&a, &b| {
                        probs[cands[a]][c]
                            .total_cmp(&probs[cands[b]][c])
                            .then(b.cmp(&a))
                    })
                    .unwrap_or(0);
                pick_diverse(&f, first, quota)
                    .into_iter()
                    .map(|p| cands[p])
                    .collect()
            }
        };
        for &i in &cands {
            if !chosen.contains(&i) {
                reasons[i] = Reason::NotSelected;
            }
        }
    }
}

/// Median of a list (NaN when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One class's acceptance, judge-space Fréchet distances, near-copies and diversity.
fn class_quality(
    plan: &Plan,
    t: &Tensors,
    scores: &[Score],
    kept: &[bool],
    c: i64,
) -> AcceptanceRow {
    let (gen, reference, train) = (&plan.generated, &plan.reference, &plan.train);
    let (batch, device) = (plan.args.batch, plan.device);
    let name = &gen.classes[c as usize];
    let rows: Vec<&Score> = scores.iter().filter(|s| &s.intended == name).collect();
    let n = rows.len();
    let n_kept = rows.iter().filter(|s| s.kept).count();
    let feats = |images: &Tensor, labels: &[i64], keep: Option<&[bool]>| {
        features_of_class(&plan.judge, images, labels, c, keep, batch)
    };
    let ref_f = feats(&t.reference, &reference.labels, None);
    let vs_train = plan.args.reference != "train";
    let gen_c = select_class(&t.generated, &gen.labels, c, None);
    let kept_c = select_class(&t.generated, &gen.labels, c, Some(kept));
    let ref_c = select_class(&t.reference, &reference.labels, c, None);
    // The scale of a novel real image: real reference images' distance to the nearest train image.
    let real_nn = if vs_train {
        median(quality::nearest(&ref_c, &t.train, device).0)
    } else {
        f64::NAN
    };
    AcceptanceRow {
        class: name.clone(),
        generated: n,
        kept: n_kept,
        acceptance: n_kept as f64 / n.max(1) as f64,
        mean_confidence: rows.iter().map(|s| s.intended_prob).sum::<f64>() / n.max(1) as f64,
        fd_generated: quality::frechet_distance(&ref_f, &feats(&t.generated, &gen.labels, None)),
        fd_kept: quality::frechet_distance(&ref_f, &feats(&t.generated, &gen.labels, Some(kept))),
        fd_real_train: vs_train
            .then(|| quality::frechet_distance(&ref_f, &feats(&t.train, &train.labels, None)))
            .flatten(),
        near_copies: rows.iter().filter(|s| s.near_copy).count(),
        near_copies_kept: rows.iter().filter(|s| s.kept && s.near_copy).count(),
        median_nearest_real_distance: median(
            rows.iter().map(|s| s.nearest_real_distance).collect(),
        ),
        median_real_reference_distance: real_nn,
        diversity_generated: diversity_u8(&gen_c, 500, device),
        diversity_kept: diversity_u8(&kept_c, 500, device),
        diversity_real: diversity_u8(&ref_c, 500, device),
        selected_by: plan.args.select.to_string(),
    }
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::resolve(args)?;
    let _lock = rebalance_core::stage_lock::StageLock::share("filter", &plan.out)?;
    let t = Tensors {
        generated: imageset_tensors(&plan.generated, plan.device).0,
        train: imageset_tensors(&plan.train, plan.device).0,
        reference: imageset_tensors(&plan.reference, plan.device).0,
    };
    let scores = score(&plan, &t)?;
    let kept_mask: Vec<bool> = scores.iter().map(|s| s.kept).collect();
    let present: Vec<i64> = (0..plan.generated.classes.len() as i64)
        .filter(|c| plan.generated.labels.contains(c))
        .collect();
    let per_class: Vec<AcceptanceRow> = present
        .iter()
        .map(|&c| class_quality(&plan, &t, &scores, &kept_mask, c))
        .collect();
    warn_collapse(&per_class);
    for r in per_class.iter().filter(|r| r.kept == 0) {
        warn!(
            "class `{}`: the gate kept 0 of {} images (threshold {}); the judge may be biased against it",
            r.class, r.generated, args.gate.threshold
        );
    }
    let n_kept = write_outputs(&plan, &scores, &per_class, &present, started)?;
    println!("{}", acceptance_table(&per_class));
    info!(
        "Fréchet distances are in the judge's feature space against the real {} split.",
        args.reference
    );
    println!(
        "filter: kept {} of {} images ({:.1}%) at threshold {} in {}",
        n_kept,
        scores.len(),
        100.0 * n_kept as f64 / scores.len() as f64,
        args.gate.threshold,
        plan.out.display()
    );
    Ok(())
}

/// Warn, per class, when the generated images are far less varied than the real ones (the same
/// ratio gan-train's failure monitor watches during training).
fn warn_collapse(per_class: &[AcceptanceRow]) {
    for r in per_class {
        let (Some(g), Some(real)) = (r.diversity_generated, r.diversity_real) else {
            continue;
        };
        if real > 0.0 && g < COLLAPSE_RATIO * real {
            warn!(
                "class `{}`: the generated images are collapsing: diversity {g:.3} against {real:.3} for real images \
                 ({:.2}× real, below {COLLAPSE_RATIO}×); the generator replays a few styles (try gan-train --minibatch-std --mode-seeking 1)",
                r.class,
                g / real
            );
        }
    }
}

/// Write the kept set, both CSVs, the grids and the manifest into the output folder; the number
/// of images kept.
fn write_outputs(
    plan: &Plan,
    scores: &[Score],
    per_class: &[AcceptanceRow],
    present: &[i64],
    started: Instant,
) -> Result<usize> {
    let generated = &plan.generated;
    let mut kept = ImageSet::empty(
        generated.classes.clone(),
        generated.channels,
        generated.height,
        generated.width,
    );
    for s in scores.iter().filter(|s| s.kept) {
        kept.push(generated.image(s.index), generated.labels[s.index]);
    }
    let staged = StagedDir::new(&plan.out)?;
    kept.write(&staged.path().join(file::KEPT))?;
    staged.write(file::SCORES, &csv_bytes(scores)?)?;
    let rounded: Vec<AcceptanceRow> = per_class.iter().map(AcceptanceRow::rounded).collect();
    staged.write(file::ACCEPTANCE, &csv_bytes(&rounded)?)?;
    write_grids(&staged, generated, scores, present)?;
    let mut m = Manifest::new(
        "filter",
        serde_json::to_value(&plan.args)?,
        &device_name(plan.device),
        plan.args.common.seed,
    )
    .with_input_files([
        &plan.gen_path,
        &plan.judge.weights,
        &plan.train_path,
        &plan.ref_path,
    ])?;
    m.inputs.dedup_by(|a, b| a.path == b.path);
    m.set_metrics(&FilterMetrics {
        n_generated: generated.len(),
        n_kept: kept.len(),
        acceptance: kept.len() as f64 / generated.len() as f64,
        near_copies_kept: scores.iter().filter(|s| s.kept && s.near_copy).count(),
    })?;
    m.set_extra(&FilterInfo {
        per_class: per_class.to_vec(),
    })?;
    m.commit(staged, started)?;
    Ok(kept.len())
}

/// Up to 10 accepted (most confident first) and 10 rejected images per class.
fn write_grids(
    staged: &StagedDir,
    generated: &ImageSet,
    scores: &[Score],
    present: &[i64],
) -> Result<()> {
    let mut acc_rows = Vec::new();
    let mut rej_rows = Vec::new();
    for &c in present {
        let mut idx: Vec<usize> = (0..generated.len())
            .filter(|&i| generated.labels[i] == c)
            .collect();
        idx.sort_by(|&a, &b| scores[b].intended_prob.total_cmp(&scores[a].intended_prob));
        let pick = |kept: bool| -> Vec<&[u8]> {
            idx.iter()
                .filter(|&&i| scores[i].kept == kept)
                .take(10)
                .map(|&i| generated.image(i))
                .collect()
        };
        acc_rows.push(pick(true));
        rej_rows.push(pick(false));
    }
    let scale = grid::default_scale(generated.height);
    let (c, h, w) = (generated.channels, generated.height, generated.width);
    staged.write("accepted.png", &grid::grid_png(&acc_rows, c, h, w, scale)?)?;
    staged.write("rejected.png", &grid::grid_png(&rej_rows, c, h, w, scale)?)?;
    Ok(())
}

/// The terminal table of per-class acceptance and quality.
fn acceptance_table(per_class: &[AcceptanceRow]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(vec![
        "class",
        "kept / generated",
        "acceptance",
        "FD generated",
        "FD kept",
        "FD real train",
        "near-copies kept",
        "median NN dist gen / real",
        "diversity kept / real",
    ]);
    let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
    for r in per_class {
        t.add_row(vec![
            r.class.clone(),
            format!("{} / {}", r.kept, r.generated),
            format!("{:.1}%", 100.0 * r.acceptance),
            fmt_fd(r.fd_generated),
            fmt_fd(r.fd_kept),
            fmt_fd(r.fd_real_train),
            r.near_copies_kept.to_string(),
            format!(
                "{:.3} / {:.3}",
                r.median_nearest_real_distance, r.median_real_reference_distance
            ),
            format!(
                "{:.3} / {:.3}",
                opt(r.diversity_kept),
                opt(r.diversity_real)
            ),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn informative_keeps_what_the_plain_model_is_least_sure_of() {
        let plain = [0.9, 0.1, 0.5, 0.05, 0.7, 0.1];
        // Candidates 0, 1, 2, 4, 5 (3 did not pass the gate): the two least sure are 1 and 5
        // (0.1 each; the lower index first on the tie, then 2 at 0.5).
        assert_eq!(pick_informative(&[0, 1, 2, 4, 5], &plain, 2), [1, 5]);
        assert_eq!(pick_informative(&[0, 1, 2, 4, 5], &plain, 3), [1, 2, 5]);
        assert_eq!(pick_informative(&[0, 4], &plain, 5), [0, 4]);
    }

    #[test]
    fn diverse_covers_the_clusters_before_any_near_duplicate() {
        // Three tight clusters in 2-D: rows 0-3 near (0,0), 4-5 near (10,0), 6 at (0,10).
        let f = Tensor::from_slice(&[
            0.0f32, 0.0, 0.1, 0.0, 0.0, 0.1, 0.1, 0.1, 10.0, 0.0, 10.1, 0.0, 0.0, 10.0,
        ])
        .view([7, 2]);
        let picked = pick_diverse(&f, 0, 3);
        assert_eq!(picked[0], 0);
        let mut rest = picked[1..].to_vec();
        rest.sort_unstable();
        assert!(
            (rest == [4, 6] || rest == [5, 6]),
            "one of each other cluster, not a neighbour of 0: {picked:?}"
        );
        assert_eq!(pick_diverse(&f, 0, 10).len(), 7);
        // Identical rows: it stops rather than pick a duplicate twice.
        let same = Tensor::zeros([4, 3], (Kind::Float, Device::Cpu));
        assert_eq!(pick_diverse(&same, 2, 3), [2]);
    }

    fn g(threshold: f64) -> Gate {
        Gate {
            threshold,
            max_confidence: 1.0,
            top_k: None,
            cap: None,
            drop_copies: false,
        }
    }

    #[test]
    fn gate_keeps_confident_right_class_images_only() {
        let probs = vec![
            vec![0.95, 0.05], // right, confident
            vec![0.85, 0.15], // right, below 0.9
            vec![0.02, 0.98], // wrong class (intended 0)
            vec![0.10, 0.90], // right (intended 1), exactly at the threshold
            vec![0.999, 0.001],
        ];
        let intended = [0, 0, 0, 1, 0];
        let copies = [false, false, false, false, true];
        let d = gate(&probs, &intended, &copies, &g(0.9), 0);
        use Reason::*;
        assert_eq!(d, [Kept, BelowThreshold, WrongClass, Kept, Kept]);
        let d = gate(
            &probs,
            &intended,
            &copies,
            &Gate {
                drop_copies: true,
                max_confidence: 0.99,
                ..g(0.9)
            },
            0,
        );
        assert_eq!(d, [Kept, BelowThreshold, WrongClass, Kept, AboveBand]);
        let d = gate(
            &probs,
            &intended,
            &[false; 5],
            &Gate {
                drop_copies: true,
                ..g(0.9)
            },
            0,
        );
        assert!(d[4].kept(), "only near-copies are dropped");
    }

    #[test]
    fn top_k_keeps_the_most_confident_and_cap_limits_per_class() {
        let probs: Vec<Vec<f64>> = [0.91, 0.99, 0.95, 0.97, 0.5]
            .iter()
            .map(|&p| vec![p, 1.0 - p])
            .collect();
        let intended = [0; 5];
        let d = gate(
            &probs,
            &intended,
            &[false; 5],
            &Gate {
                top_k: Some(2),
                ..g(0.9)
            },
            0,
        );
        let kept: Vec<usize> = (0..5).filter(|&i| d[i].kept()).collect();
        assert_eq!(kept, [1, 3]);
        assert_eq!(d[0], Reason::TopK);
        let d = gate(
            &probs,
            &intended,
            &[false; 5],
            &Gate {
                cap: Some(3),
                ..g(0.0)
            },
            7,
        );
        assert_eq!(d.iter().filter(|x| x.kept()).count(), 3);
        assert_eq!(d.iter().filter(|&&x| x == Reason::Cap).count(), 2);
    }
}
