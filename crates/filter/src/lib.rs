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
use rebalance_core::{grid, CommonArgs, FileRecord, ImageSet, Manifest, StagedDir};
use rebalance_nn::models::Judge;
use rebalance_nn::{device_name, imageset_tensors, resolve_device};
use serde::{Deserialize, Serialize};
use serde_json::json;
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
    /// Keep an image when the judge gives its intended class at least this probability (and ranks it first).
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// Upper end of a confidence band: drop images the judge is more sure of than this.
    #[arg(long, default_value_t = 1.0)]
    pub max_confidence: f64,
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
    /// Real split the Fréchet distances are measured against.
    #[arg(long, default_value = "val", value_parser = ["val", "train"])]
    pub reference: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 512)]
    pub batch: i64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// One generated image and the gate's decision (a row of `scores.csv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub index: usize,
    pub intended: String,
    pub predicted: String,
    /// The judge's top probability.
    pub confidence: f64,
    /// The judge's probability of the intended class.
    pub intended_prob: f64,
    pub nearest_real_distance: f64,
    pub nearest_real_index: i64,
    pub near_copy: bool,
    pub kept: bool,
    /// Why it was kept or dropped: kept, wrong-class, below-threshold, above-band, near-copy, top-k, cap.
    pub reason: String,
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
) -> Vec<(bool, &'static str)> {
    let mut out: Vec<(bool, &'static str)> = probs
        .iter()
        .zip(intended)
        .zip(near_copy)
        .map(|((p, &c), &copy)| {
            let (pred, conf) = top_class(p);
            if pred != c {
                (false, "wrong-class")
            } else if conf < g.threshold {
                (false, "below-threshold")
            } else if conf > g.max_confidence {
                (false, "above-band")
            } else if copy && g.drop_copies {
                (false, "near-copy")
            } else {
                (true, "kept")
            }
        })
        .collect();
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in intended.iter().enumerate() {
        if out[i].0 {
            by_class.entry(c).or_default().push(i);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (c, mut idx) in by_class {
        if let Some(k) = g.top_k {
            idx.sort_by(|&a, &b| probs[b][c].total_cmp(&probs[a][c]).then(a.cmp(&b)));
            for &i in &idx[k.min(idx.len())..] {
                out[i] = (false, "top-k");
            }
            idx.truncate(k);
        }
        if let Some(cap) = g.cap {
            idx.shuffle(&mut rng);
            for &i in &idx[cap.min(idx.len())..] {
                out[i] = (false, "cap");
            }
        }
    }
    out
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

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let device = resolve_device(args.common.device)?;
    let a = &args.common.artifacts;
    let gen_path = args
        .generated
        .clone()
        .unwrap_or_else(|| a.join("generated/generated.safetensors"));
    let judge_dir = args.judge.clone().unwrap_or_else(|| a.join("judge"));
    let data = args.data.clone().unwrap_or_else(|| a.join("dataset"));
    let out_dir = args.out.clone().unwrap_or_else(|| a.join("filtered"));
    if !(0.0..=1.0).contains(&args.threshold) || args.max_confidence < args.threshold {
        bail!(
            "--threshold {} and --max-confidence {} must satisfy 0 ≤ threshold ≤ max-confidence",
            args.threshold,
            args.max_confidence
        );
    }
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
    let train_path = data.join("train.safetensors");
    let ref_path = data.join(format!("{}.safetensors", args.reference));
    let train = ImageSet::read_input(
        &train_path,
        "real training set",
        "run ingest first, or pass --data",
    )?;
    judge.check_compatible(&train, &train_path)?;
    let reference = if args.reference == "train" {
        train.clone()
    } else {
        ImageSet::read_input(
            &ref_path,
            "real reference set",
            "run ingest first, or pass --data",
        )?
    };
    judge.check_compatible(&reference, &ref_path)?;

    let classes = &generated.classes;
    let (gx, _) = imageset_tensors(&generated, device);
    let probs_t = judge
        .probs(&gx, args.batch)
        .to_kind(Kind::Double)
        .to_device(Device::Cpu);
    let k = classes.len();
    let flat = Vec::<f64>::try_from(probs_t.view([-1]))?;
    let probs: Vec<Vec<f64>> = flat.chunks(k).map(|r| r.to_vec()).collect();
    let intended: Vec<usize> = generated.labels.iter().map(|&l| l as usize).collect();

    let (tx, _) = imageset_tensors(&train, device);
    let (dist, nn_idx) = quality::nearest(&gx, &tx, device);
    let near_copy: Vec<bool> = dist.iter().map(|&d| d < args.copy_threshold).collect();
    let g = Gate {
        threshold: args.threshold,
        max_confidence: args.max_confidence,
        top_k: args.top_k,
        cap: args.cap,
        drop_copies: args.drop_copies,
    };
    let decisions = gate(&probs, &intended, &near_copy, &g, args.common.seed);

    let scores: Vec<Score> = (0..generated.len())
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
                kept: decisions[i].0,
                reason: decisions[i].1.to_string(),
            }
        })
        .collect();
    let kept_mask: Vec<bool> = decisions.iter().map(|d| d.0).collect();
    let mut kept = ImageSet::empty(
        classes.clone(),
        generated.channels,
        generated.height,
        generated.width,
    );
    for i in (0..generated.len()).filter(|&i| kept_mask[i]) {
        kept.push(generated.image(i), generated.labels[i]);
    }

    // Per class: acceptance, Fréchet distances, near-copies.
    let (rx, _) = imageset_tensors(&reference, device);
    let mut per_class = Vec::new();
    let present: Vec<i64> = (0..k as i64)
        .filter(|c| generated.labels.contains(c))
        .collect();
    for &c in &present {
        let name = &classes[c as usize];
        let rows: Vec<&Score> = scores.iter().filter(|s| &s.intended == name).collect();
        let n = rows.len();
        let n_kept = rows.iter().filter(|s| s.kept).count();
        let ref_f = features_of_class(&judge, &rx, &reference.labels, c, None, args.batch);
        let fd_gen = quality::frechet_distance(
            &ref_f,
            &features_of_class(&judge, &gx, &generated.labels, c, None, args.batch),
        );
        let fd_kept = quality::frechet_distance(
            &ref_f,
            &features_of_class(
                &judge,
                &gx,
                &generated.labels,
                c,
                Some(&kept_mask),
                args.batch,
            ),
        );
        let fd_train = if args.reference == "train" {
            None
        } else {
            quality::frechet_distance(
                &ref_f,
                &features_of_class(&judge, &tx, &train.labels, c, None, args.batch),
            )
        };
        let div_gen = rebalance_nn::quality::diversity_u8(
            &select_class(&gx, &generated.labels, c, None),
            500,
            device,
        );
        let div_kept = rebalance_nn::quality::diversity_u8(
            &select_class(&gx, &generated.labels, c, Some(&kept_mask)),
            500,
            device,
        );
        let div_real = rebalance_nn::quality::diversity_u8(
            &select_class(&rx, &reference.labels, c, None),
            500,
            device,
        );
        let copies_kept = rows.iter().filter(|s| s.kept && s.near_copy).count();
        let copies = rows.iter().filter(|s| s.near_copy).count();
        let mut d: Vec<f64> = rows.iter().map(|s| s.nearest_real_distance).collect();
        d.sort_by(f64::total_cmp);
        let median_nn = d.get(d.len() / 2).copied().unwrap_or(f64::NAN);
        // The scale of a novel real image: real reference images' distance to the nearest train image.
        let real_nn = if args.reference == "train" {
            f64::NAN
        } else {
            let sel = select_class(&rx, &reference.labels, c, None);
            let (mut rd, _) = quality::nearest(&sel, &tx, device);
            rd.sort_by(f64::total_cmp);
            rd.get(rd.len() / 2).copied().unwrap_or(f64::NAN)
        };
        per_class.push(json!({
            "class": name,
            "generated": n,
            "kept": n_kept,
            "acceptance": n_kept as f64 / n.max(1) as f64,
            "mean_confidence": rows.iter().map(|s| s.intended_prob).sum::<f64>() / n.max(1) as f64,
            "fd_generated": fd_gen,
            "fd_kept": fd_kept,
            "fd_real_train": fd_train,
            "near_copies": copies,
            "near_copies_kept": copies_kept,
            "median_nearest_real_distance": median_nn,
            "median_real_reference_distance": real_nn,
            "diversity_generated": div_gen,
            "diversity_kept": div_kept,
            "diversity_real": div_real,
        }));
        if n_kept == 0 {
            warn!("class `{name}`: the gate kept 0 of {n} images (threshold {}); the judge may be biased against it", args.threshold);
        }
    }

    let staged = StagedDir::new(&out_dir)?;
    kept.write(&staged.path().join("kept.safetensors"))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    for s in &scores {
        w.serialize(s)?;
    }
    staged.write("scores.csv", &w.into_inner()?)?;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "class",
        "generated",
        "kept",
        "acceptance",
        "mean_confidence",
        "fd_generated",
        "fd_kept",
        "fd_real_train",
        "near_copies",
        "near_copies_kept",
        "median_nearest_real_distance",
        "median_real_reference_distance",
        "diversity_generated",
        "diversity_kept",
        "diversity_real",
    ])?;
    for r in &per_class {
        let f = |k: &str| r[k].as_f64().map(|v| format!("{v:.4}")).unwrap_or_default();
        w.write_record([
            r["class"].as_str().unwrap_or_default().to_string(),
            r["generated"].to_string(),
            r["kept"].to_string(),
            f("acceptance"),
            f("mean_confidence"),
            fmt_fd(r["fd_generated"].as_f64()),
            fmt_fd(r["fd_kept"].as_f64()),
            fmt_fd(r["fd_real_train"].as_f64()),
            r["near_copies"].to_string(),
            r["near_copies_kept"].to_string(),
            f("median_nearest_real_distance"),
            f("median_real_reference_distance"),
            f("diversity_generated"),
            f("diversity_kept"),
            f("diversity_real"),
        ])?;
    }
    staged.write("acceptance.csv", &w.into_inner()?)?;

    // Grids: up to 10 accepted (most confident first) and 10 rejected per class.
    let mut acc_rows = Vec::new();
    let mut rej_rows = Vec::new();
    for &c in &present {
        let mut idx: Vec<usize> = (0..generated.len())
            .filter(|&i| generated.labels[i] == c)
            .collect();
        idx.sort_by(|&a, &b| scores[b].intended_prob.total_cmp(&scores[a].intended_prob));
        acc_rows.push(
            idx.iter()
                .filter(|&&i| kept_mask[i])
                .take(10)
                .map(|&i| generated.image(i))
                .collect::<Vec<_>>(),
        );
        rej_rows.push(
            idx.iter()
                .filter(|&&i| !kept_mask[i])
                .take(10)
                .map(|&i| generated.image(i))
                .collect::<Vec<_>>(),
        );
    }
    let scale = grid::default_scale(generated.height);
    staged.write(
        "accepted.png",
        &grid::grid_png(
            &acc_rows,
            generated.channels,
            generated.height,
            generated.width,
            scale,
        )?,
    )?;
    staged.write(
        "rejected.png",
        &grid::grid_png(
            &rej_rows,
            generated.channels,
            generated.height,
            generated.width,
            scale,
        )?,
    )?;

    let mut m = Manifest::new(
        "filter",
        serde_json::to_value(args)?,
        &device_name(device),
        args.common.seed,
    );
    for p in [&gen_path, &judge.weights, &train_path, &ref_path] {
        m.inputs
            .push(FileRecord::of_file(p, &p.display().to_string())?);
    }
    m.inputs.dedup_by(|a, b| a.path == b.path);
    m.record_outputs(staged.path())?;
    m.metrics
        .insert("n_generated".into(), json!(generated.len()));
    m.metrics.insert("n_kept".into(), json!(kept.len()));
    m.metrics.insert(
        "acceptance".into(),
        json!(kept.len() as f64 / generated.len() as f64),
    );
    m.metrics.insert(
        "near_copies_kept".into(),
        json!(scores.iter().filter(|s| s.kept && s.near_copy).count()),
    );
    m.extra.insert("per_class".into(), json!(per_class));
    m.finish(staged.path(), started)?;
    staged.commit()?;

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
    for r in &per_class {
        t.add_row(vec![
            r["class"].as_str().unwrap_or_default().to_string(),
            format!("{} / {}", r["kept"], r["generated"]),
            format!("{:.1}%", 100.0 * r["acceptance"].as_f64().unwrap_or(0.0)),
            fmt_fd(r["fd_generated"].as_f64()),
            fmt_fd(r["fd_kept"].as_f64()),
            fmt_fd(r["fd_real_train"].as_f64()),
            r["near_copies_kept"].to_string(),
            format!(
                "{:.3} / {:.3}",
                r["median_nearest_real_distance"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                r["median_real_reference_distance"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            format!(
                "{:.3} / {:.3}",
                r["diversity_kept"].as_f64().unwrap_or(f64::NAN),
                r["diversity_real"].as_f64().unwrap_or(f64::NAN)
            ),
        ]);
    }
    println!("{t}");
    info!(
        "Fréchet distances are in the judge's feature space against the real {} split.",
        args.reference
    );
    println!(
        "filter: kept {} of {} images ({:.1}%) at threshold {} in {}",
        kept.len(),
        generated.len(),
        100.0 * kept.len() as f64 / generated.len() as f64,
        args.threshold,
        out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let reasons: Vec<&str> = d.iter().map(|x| x.1).collect();
        assert_eq!(
            reasons,
            ["kept", "below-threshold", "wrong-class", "kept", "kept"]
        );
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
        let reasons: Vec<&str> = d.iter().map(|x| x.1).collect();
        assert_eq!(
            reasons,
            [
                "kept",
                "below-threshold",
                "wrong-class",
                "kept",
                "above-band"
            ]
        );
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
        assert!(d[4].0, "only near-copies are dropped");
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
        let kept: Vec<usize> = (0..5).filter(|&i| d[i].0).collect();
        assert_eq!(kept, [1, 3]);
        assert_eq!(d[0].1, "top-k");
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
        assert_eq!(d.iter().filter(|x| x.0).count(), 3);
        assert_eq!(d.iter().filter(|x| x.1 == "cap").count(), 2);
    }
}
