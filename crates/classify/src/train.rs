//! Training with early stopping on the real val split, evaluation on the real test split,
//! K seeds, per-epoch checkpoints (a killed run resumes where it stopped), and the outputs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rebalance_core::{partial_dir, swap_into, write_atomic, FileRecord, ImageSet, Manifest};
use rebalance_nn::{adam::Adam, device_name, imageset_tensors, io, resolve_device};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};
use tracing::{info, warn};

use crate::metrics::{confusion, mean_std, Metrics};
use crate::TrainArgs;
use rebalance_nn::models::{judge, Classifier, ClassifierConfig, Network};

/// One row of `curves.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurveRow {
    pub seed: u64,
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_macro_f1: f64,
    pub seconds: f64,
}

/// The result of one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    /// Epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub train_s: f64,
    pub val: Metrics,
    pub test: Metrics,
}

/// The real splits and the training set, checked against each other.
pub struct Data {
    pub train: ImageSet,
    pub val: ImageSet,
    pub test: ImageSet,
    pub train_path: PathBuf,
    pub val_path: PathBuf,
    pub test_path: PathBuf,
}

impl Data {
    pub fn load(args: &TrainArgs) -> Result<Self> {
        let a = &args.common.artifacts;
        let train_path = args
            .train
            .clone()
            .unwrap_or_else(|| a.join("augmented/train.safetensors"));
        let data = args.data.clone().unwrap_or_else(|| a.join("dataset"));
        let (val_path, test_path) = (data.join("val.safetensors"), data.join("test.safetensors"));
        let train = ImageSet::read_input(
            &train_path,
            "training",
            "run `cargo run --release -p augment` first, or pass --train (the judge trains on \
             artifacts/dataset/train.safetensors)",
        )?;
        let val =
            ImageSet::read_input(&val_path, "validation", "run ingest first, or pass --data")?;
        let test = ImageSet::read_input(&test_path, "test", "run ingest first, or pass --data")?;
        for (set, p) in [(&val, &val_path), (&test, &test_path)] {
            set.ensure_matches(p, &train, &train_path)?;
            if set.is_empty() {
                bail!("{}: the set is empty", p.display());
            }
        }
        if train.is_empty() {
            bail!("{}: the training set is empty", train_path.display());
        }
        Ok(Self {
            train,
            val,
            test,
            train_path,
            val_path,
            test_path,
        })
    }
}

/// Inverse-frequency class weights `N / (K · n_c)`; a class with no examples gets 0.
pub fn class_weights(counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f64 / (present as f64 * c as f64)
            }
        })
        .collect()
}

/// Evaluate on a labelled set: metrics with the (unweighted) mean cross-entropy.
pub fn evaluate(model: &Classifier, images: &Tensor, labels: &Tensor, batch: i64) -> Metrics {
    let logits = model.batched(images, batch, |x| model.forward_t(x, false));
    let loss = f64::try_from(logits.cross_entropy_loss::<Tensor>(
        labels,
        None,
        Reduction::Mean,
        -100,
        0.0,
    ))
    .unwrap_or(f64::NAN);
    let pred = Vec::<i64>::try_from(logits.argmax(-1, false).to_device(Device::Cpu)).expect("i64");
    let truth = Vec::<i64>::try_from(labels.to_device(Device::Cpu)).expect("i64");
    let k = model.config.num_classes() as usize;
    Metrics::from_confusion(confusion(&truth, &pred, k), &model.config.classes, loss)
}

/// Early-stopping state, carried in the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct Progress {
    epoch: usize,
    best_epoch: usize,
    best_f1: f64,
    best_loss: f64,
    bad_epochs: usize,
    adam_t: i64,
    train_s: f64,
    curves: Vec<CurveRow>,
}

fn copy_vars(dst: &VarStore, src: &VarStore) {
    let src_vars = src.variables();
    tch::no_grad(|| {
        for (name, mut v) in dst.variables() {
            v.copy_(&src_vars[&name]);
        }
    });
}

fn save_checkpoint(
    path: &Path,
    vs: &VarStore,
    best: &VarStore,
    opt: &Adam,
    p: &Progress,
) -> Result<()> {
    let mut tensors = io::named_vars(vs, "m.");
    tensors.extend(io::named_vars(best, "best."));
    tensors.extend(opt.state("opt."));
    let meta = HashMap::from([("progress".to_string(), serde_json::to_string(p)?)]);
    write_atomic(path, &io::to_safetensors(&tensors, meta)?)
}

fn load_checkpoint(
    path: &Path,
    vs: &VarStore,
    best: &VarStore,
    opt: &mut Adam,
    device: Device,
) -> Result<Progress> {
    let (t, meta) = io::read_safetensors(path, device)?;
    io::load_vars(vs, "m.", &t, path)?;
    io::load_vars(best, "best.", &t, path)?;
    opt.load_state("opt.", &t)?;
    let p: Progress = serde_json::from_str(
        meta.get("progress")
            .context("checkpoint without progress")?,
    )
    .with_context(|| format!("{}: unreadable progress", path.display()))?;
    opt.t = p.adam_t;
    Ok(p)
}

/// Train one seed in `dir` (resuming from `dir/checkpoint.safetensors` when present).
fn train_seed(
    args: &TrainArgs,
    data: &Data,
    cfg: &ClassifierConfig,
    seed: u64,
    dir: &Path,
    device: Device,
) -> Result<SeedRun> {
    std::fs::create_dir_all(dir)?;
    rebalance_nn::seed_everything(seed);
    let vs = VarStore::new(device);
    let model = Classifier::new(&vs.root(), cfg);
    if !args.common.quiet && seed == args.common.seed {
        eprint!("{}", model.summary(device));
    }
    let best_vs = VarStore::new(device);
    let best_model = Classifier::new(&best_vs.root(), cfg);
    copy_vars(&best_vs, &vs);
    let mut opt = Adam::new(&vs, args.lr, 0.9, 0.999);

    let (xtr, ytr) = imageset_tensors(&data.train, device);
    let (xva, yva) = imageset_tensors(&data.val, device);
    let weights = args.class_weighted.then(|| {
        Tensor::from_slice(&class_weights(&data.train.counts()))
            .to_kind(Kind::Float)
            .to_device(device)
    });

    let ckpt = dir.join("checkpoint.safetensors");
    let mut prog = if ckpt.exists() {
        let p = load_checkpoint(&ckpt, &vs, &best_vs, &mut opt, device)?;
        info!(
            "seed {seed}: resuming after epoch {} from {}",
            p.epoch,
            ckpt.display()
        );
        p
    } else {
        Progress {
            best_f1: -1.0,
            best_loss: f64::INFINITY,
            ..Default::default()
        }
    };

    let n = data.train.len();
    let stopped_early = |p: &Progress| args.patience > 0 && p.bad_epochs >= args.patience;
    while prog.epoch < args.epochs && !stopped_early(&prog) {
        let epoch = prog.epoch + 1;
        let t0 = Instant::now();
        // The batch order depends on (seed, epoch) only, so a resumed run sees the same batches.
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ epoch as u64);
        let mut order: Vec<i64> = (0..n as i64).collect();
        order.shuffle(&mut rng);
        tch::manual_seed((seed * 100_000 + epoch as u64) as i64);
        let (mut loss_sum, mut correct) = (0.0f64, 0i64);
        for chunk in order.chunks(args.batch.max(1) as usize) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let x = rebalance_nn::to_unit_range(&xtr.index_select(0, &idx));
            let y = ytr.index_select(0, &idx);
            let logits = model.forward_t(&x, true);
            let loss = logits.cross_entropy_loss(&y, weights.as_ref(), Reduction::Mean, -100, 0.0);
            let l = f64::try_from(&loss)?;
            if !l.is_finite() {
                bail!(
                    "seed {seed} epoch {epoch}: the training loss is {l}; lower --lr (now {})",
                    args.lr
                );
            }
            opt.zero_grad();
            loss.backward();
            opt.step();
            loss_sum += l * chunk.len() as f64;
            correct += i64::try_from(logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64))?;
        }
        let val = evaluate(&model, &xva, &yva, 512);
        let row = CurveRow {
            seed,
            epoch,
            train_loss: loss_sum / n as f64,
            train_accuracy: correct as f64 / n as f64,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            val_macro_f1: val.macro_f1,
            seconds: t0.elapsed().as_secs_f64(),
        };
        info!(
            "seed {seed} epoch {epoch}/{}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} macro-F1 {:.3}",
            args.epochs, row.train_loss, row.train_accuracy, row.val_loss, row.val_accuracy, row.val_macro_f1
        );
        let better = val.macro_f1 > prog.best_f1 + 1e-9
            || ((val.macro_f1 - prog.best_f1).abs() <= 1e-9 && val.loss < prog.best_loss);
        if better {
            prog.best_f1 = val.macro_f1;
            prog.best_loss = val.loss;
            prog.best_epoch = epoch;
            prog.bad_epochs = 0;
            copy_vars(&best_vs, &vs);
        } else {
            prog.bad_epochs += 1;
        }
        prog.train_s += row.seconds;
        prog.curves.push(row);
        prog.epoch = epoch;
        prog.adam_t = opt.t;
        save_checkpoint(&ckpt, &vs, &best_vs, &opt, &prog)?;
    }
    if stopped_early(&prog) && prog.epoch < args.epochs {
        info!(
            "seed {seed}: stopped after epoch {} (no better val macro-F1 for {} epochs); keeping epoch {}",
            prog.epoch, args.patience, prog.best_epoch
        );
    }
    // --patience 0 keeps the last epoch; otherwise the best on val.
    let (final_model, final_vs, kept) = if args.patience == 0 {
        (&model, &vs, prog.epoch)
    } else {
        (&best_model, &best_vs, prog.best_epoch)
    };
    let val = evaluate(final_model, &xva, &yva, 512);
    let (xte, yte) = imageset_tensors(&data.test, device);
    let test = evaluate(final_model, &xte, &yte, 512);
    judge::save(dir, final_vs, cfg)?;
    write_curves(&dir.join("curves.csv"), &prog.curves)?;
    let run = SeedRun {
        seed,
        best_epoch: kept,
        epochs_run: prog.epoch,
        train_s: prog.train_s,
        val,
        test,
    };
    write_atomic(&dir.join("result.json"), &serde_json::to_vec_pretty(&run)?)?;
    std::fs::remove_file(&ckpt).ok();
    Ok(run)
}

fn write_curves(path: &Path, rows: &[CurveRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    write_atomic(path, &w.into_inner()?)
}

/// Confusion matrix as a heatmap PNG: one square per cell, shaded by the row-normalised rate
/// (white = 0, dark blue = 1); the diagonal is outlined in green when it holds the row's maximum.
pub fn confusion_png(cm: &[Vec<u64>]) -> Result<Vec<u8>> {
    let k = cm.len();
    let cell = (360 / k.max(1)).clamp(8, 40) as u32;
    let side = cell * k as u32 + 2;
    let mut img = image::RgbImage::from_pixel(side, side, image::Rgb([200, 200, 200]));
    for (r, row) in cm.iter().enumerate() {
        let total: u64 = row.iter().sum();
        let max = row.iter().copied().max().unwrap_or(0);
        for (c, &v) in row.iter().enumerate() {
            let rate = if total == 0 {
                0.0
            } else {
                v as f64 / total as f64
            };
            let shade = |hi: f64, lo: f64| (hi + (lo - hi) * rate).round() as u8;
            let color = image::Rgb([shade(255.0, 8.0), shade(255.0, 48.0), shade(255.0, 107.0)]);
            let edge = r == c && v == max && v > 0;
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    let border = x < 2 || y < 2 || x >= cell - 3 || y >= cell - 3;
                    let px = if edge && border {
                        image::Rgb([44, 160, 44])
                    } else {
                        color
                    };
                    img.put_pixel(1 + c as u32 * cell + x, 1 + r as u32 * cell + y, px);
                }
            }
        }
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut buf, image::ImageFormat::Png)?;
    Ok(buf.into_inner())
}

fn confusion_csv(cm: &[Vec<u64>], classes: &[String]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["true\\predicted".to_string()];
    header.extend(classes.iter().cloned());
    w.write_record(&header)?;
    for (c, row) in classes.iter().zip(cm) {
        let mut rec = vec![c.clone()];
        rec.extend(row.iter().map(|v| v.to_string()));
        w.write_record(&rec)?;
    }
    Ok(w.into_inner()?)
}

/// Classes with fewer than half the median training count.
pub fn rare_classes(counts: &[usize], classes: &[String]) -> Vec<String> {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0) as f64;
    classes
        .iter()
        .zip(counts)
        .filter(|(_, &c)| (c as f64) < 0.5 * median)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Mean and std over seeds of every scalar metric.
pub fn summarise(runs: &[&Metrics]) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let scalars: Vec<BTreeMap<String, f64>> = runs.iter().map(|m| m.scalars()).collect();
    let (mut mean, mut std) = (BTreeMap::new(), BTreeMap::new());
    if let Some(first) = scalars.first() {
        for key in first.keys() {
            let vals: Vec<f64> = scalars.iter().map(|s| s[key]).collect();
            let (m, s) = mean_std(&vals);
            mean.insert(key.clone(), m);
            std.insert(key.clone(), s);
        }
    }
    (mean, std)
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    if args.batch < 1 {
        bail!("--batch must be at least 1");
    }
    let device = resolve_device(args.common.device)?;
    let data = Data::load(args)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.common.artifacts.join("classify"));
    let t = &data.train;
    let cfg = ClassifierConfig::new(
        args.model,
        t.channels as i64,
        t.height as i64,
        t.width as i64,
        t.classes.clone(),
    )?;
    let counts = t.counts();
    for (c, n) in t.classes.iter().zip(&counts) {
        if *n == 0 {
            warn!(
                "class `{c}` has no training images in {}",
                data.train_path.display()
            );
        }
    }

    // The work folder is reused (resumed) only when the same parameters and inputs made it.
    let inputs = [&data.train_path, &data.val_path, &data.test_path]
        .iter()
        .map(|p| FileRecord::of_file(p, &p.display().to_string()))
        .collect::<Result<Vec<_>>>()?;
    let mut key_params = serde_json::to_value(args)?;
    key_params["common"]["quiet"] = Value::Null;
    let key = json!({ "params": key_params, "inputs": inputs, "device": device_name(device) });
    let work = partial_dir(&out);
    let key_path = work.join("run-key.json");
    let same = std::fs::read(&key_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|k| k == key);
    if work.exists() && !same {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    write_atomic(&key_path, &serde_json::to_vec_pretty(&key)?)?;

    info!(
        "classify: {} on {} ({} images, {} classes) → {}, device {}, {} seed(s)",
        args.model
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        data.train_path.display(),
        t.len(),
        t.classes.len(),
        out.display(),
        device_name(device),
        args.seeds
    );
    let seeds: Vec<u64> = (0..args.seeds).map(|i| args.common.seed + i).collect();
    let mut runs = Vec::new();
    for &seed in &seeds {
        let dir = work.join(format!("seed-{seed}"));
        let done = dir.join("result.json");
        let run = if done.exists() {
            info!("seed {seed}: already finished, reusing {}", done.display());
            serde_json::from_slice(&std::fs::read(&done)?)?
        } else {
            train_seed(args, &data, &cfg, seed, &dir, device)?
        };
        info!(
            "seed {seed}: test accuracy {:.4}, macro-F1 {:.4} (epoch {} of {})",
            run.test.accuracy, run.test.macro_f1, run.best_epoch, run.epochs_run
        );
        runs.push(run);
    }

    // Top-level outputs: the first seed's model (the judge), curves of all seeds, summaries.
    let first = work.join(format!("seed-{}", seeds[0]));
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(first.join(f), work.join(f))?;
    }
    let mut curves = Vec::new();
    for s in &seeds {
        let mut r = csv::Reader::from_path(work.join(format!("seed-{s}/curves.csv")))?;
        for row in r.deserialize::<CurveRow>() {
            curves.push(row?);
        }
    }
    write_curves(&work.join("curves.csv"), &curves)?;
    let pts = |f: fn(&CurveRow) -> f64| -> Vec<(f64, f64)> {
        curves
            .iter()
            .filter(|r| r.seed == seeds[0])
            .map(|r| (r.epoch as f64, f(r)))
            .collect()
    };
    let svg = rebalance_core::chart::lines_svg(
        &format!("training curves (seed {})", seeds[0]),
        &[
            ("train loss", pts(|r| r.train_loss)),
            ("val loss", pts(|r| r.val_loss)),
            ("val accuracy", pts(|r| r.val_accuracy)),
            ("val macro-F1", pts(|r| r.val_macro_f1)),
        ],
        "epoch",
        "",
    )?;
    write_atomic(&work.join("curves.svg"), svg.as_bytes())?;
    let cm0 = &runs[0].test.confusion;
    write_atomic(
        &work.join("confusion.csv"),
        &confusion_csv(cm0, &cfg.classes)?,
    )?;
    write_atomic(&work.join("confusion.png"), &confusion_png(cm0)?)?;

    let (mean, std) = summarise(&runs.iter().map(|r| &r.test).collect::<Vec<_>>());
    // Rare classes are those of the real data (ingest's manifest), not of a rebalanced set.
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| args.common.artifacts.join("dataset"));
    let rare = Manifest::read(&data_dir)
        .ok()
        .and_then(|m| {
            serde_json::from_value::<Vec<String>>(m.extra.get("rare_classes")?.clone()).ok()
        })
        .filter(|r| r.iter().all(|c| cfg.classes.contains(c)))
        .unwrap_or_else(|| rare_classes(&counts, &cfg.classes));
    let train_counts: BTreeMap<&String, usize> =
        cfg.classes.iter().zip(counts.iter().copied()).collect();
    let metrics = json!({
        "classes": cfg.classes,
        "model": cfg.model,
        "train": data.train_path.display().to_string(),
        "train_counts": train_counts,
        "rare_classes": rare,
        "seeds": seeds,
        "test": { "mean": mean, "std": std },
        "runs": runs,
    });
    write_atomic(
        &work.join("metrics.json"),
        &serde_json::to_vec_pretty(&metrics)?,
    )?;
    let summary = summary_table(&mean, &std, &cfg.classes, &rare, seeds.len());
    write_atomic(&work.join("summary.txt"), summary.as_bytes())?;

    let mut m = Manifest::new(
        "classify",
        serde_json::to_value(args)?,
        &device_name(device),
        args.common.seed,
    );
    m.inputs = inputs;
    std::fs::remove_file(&key_path)?;
    m.record_outputs(&work)?;
    for k in ["accuracy", "balanced_accuracy", "macro_f1", "loss"] {
        m.metrics.insert(format!("test_{k}"), json!(mean[k]));
        m.metrics.insert(format!("test_{k}_std"), json!(std[k]));
    }
    for c in &rare {
        m.metrics.insert(
            format!("test_recall_{c}"),
            json!(mean[&format!("recall/{c}")]),
        );
    }
    m.extra.insert("seeds".into(), json!(seeds));
    m.extra.insert("model".into(), json!(cfg.model));
    m.finish(&work, started)?;
    swap_into(&work, &out)?;
    println!("{summary}");
    println!("classify: outputs in {}", out.display());
    Ok(())
}

fn pm(mean: f64, std: f64, k: usize) -> String {
    if k > 1 {
        format!("{mean:.4} ± {std:.4}")
    } else {
        format!("{mean:.4}")
    }
}

fn summary_table(
    mean: &BTreeMap<String, f64>,
    std: &BTreeMap<String, f64>,
    classes: &[String],
    rare: &[String],
    k: usize,
) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(vec![
        format!("test (real), {k} seed(s)"),
        "precision".into(),
        "recall".into(),
        "F1".into(),
    ]);
    for c in classes {
        let g = |m: &str| pm(mean[&format!("{m}/{c}")], std[&format!("{m}/{c}")], k);
        let name = if rare.contains(c) {
            format!("{c} (rare)")
        } else {
            c.clone()
        };
        t.add_row(vec![name, g("precision"), g("recall"), g("f1")]);
    }
    let mut s = t.to_string();
    for (label, key) in [
        ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"),
        ("macro-F1", "macro_f1"),
        ("loss", "loss"),
    ] {
        s.push_str(&format!("\n{label}: {}", pm(mean[key], std[key], k)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_inverse_frequency() {
        let w = class_weights(&[300, 10, 0]);
        assert!((w[0] - 310.0 / 600.0).abs() < 1e-12);
        assert!((w[1] - 310.0 / 20.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
    }

    #[test]
    fn rare_is_below_half_the_median() {
        let names: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(
            rare_classes(&[300, 10, 300, 70, 151], &names),
            vec!["1", "3"]
        );
    }
}
