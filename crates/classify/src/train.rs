//! Training with early stopping on the real val split, evaluation on the real test split,
//! K seeds, per-epoch checkpoints (a killed run resumes where it stopped), and the outputs.
//! `run` is resolve → work → write: [`Plan::resolve`] checks every flag and reads the data,
//! [`train_seeds`] trains, [`write_outputs`] writes the folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Beta, Distribution};
use rebalance_core::contract::classify::{
    confusion, ClassifierMetrics, ClassifyInfo, CurveRow, MeanStd, Metrics, SeedRun,
};
use rebalance_core::contract::dataset::rare_classes_of;
use rebalance_core::contract::layout::{file, Layout, AUGMENTED, CLASSIFY, DATASET};
use rebalance_core::contract::{self, write_csv};
use rebalance_core::tensorboard::SummaryWriter;
use rebalance_core::{
    partial_dir, remove_path, swap_into, write_atomic, FileRecord, ImageSet, Manifest,
};
use rebalance_nn::models::{judge, Classifier, ClassifierConfig, Network};
use rebalance_nn::train::checkpoint;
use rebalance_nn::train::run_key::{Claim, RunKey};
use rebalance_nn::train::EarlyStopping;
use rebalance_nn::{adam::Adam, device_name, imageset_tensors, resolve_device};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};
use tracing::info;

use crate::recipe::{Choice, Recipe};
use crate::TrainArgs;

/// Images transformed and batched together: one draw of the epoch's sampler is cut into
/// chunks of this many batches, each transformed in one pass on the device.
const CHUNK_BATCHES: usize = 16;

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
    fn load(train_path: PathBuf, data_dir: &Path) -> Result<Self> {
        let (val_path, test_path) = (data_dir.join(file::VAL), data_dir.join(file::TEST));
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
        train.ensure_classes_have_images(
            &train_path,
            0..train.classes.len(),
            "a classifier cannot learn a class it never sees: fill it with augment from \
             synthetic images",
        )?;
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

/// Everything `run` needs, resolved and checked before any training.
pub struct Plan {
    pub args: TrainArgs,
    pub device: Device,
    pub data: Data,
    /// Folder of the real splits (and of their ingest manifest).
    pub data_dir: PathBuf,
    pub out: PathBuf,
    pub cfg: ClassifierConfig,
    pub seeds: Vec<u64>,
    /// The real data's rare classes: the ingest manifest's, else computed from the train counts.
    pub rare: Vec<String>,
    pub inputs: Vec<FileRecord>,
    /// How the network trains on `data.train`.
    pub recipe: Recipe,
    /// Synthetic images as a capped share of their classes' draws.
    pub syn: Option<crate::synthetic::SynPlan>,
}

impl Plan {
    /// Check the flags first, then read and check the data.
    pub fn resolve(args: &TrainArgs) -> Result<Self> {
        let (train, _) = Self::paths(args);
        Self::resolve_with(args, train, Choice::of_args(args)?)
    }

    /// The training set and the output folder the flags name.
    pub(crate) fn paths(args: &TrainArgs) -> (PathBuf, PathBuf) {
        let layout = Layout::new(&args.common.artifacts);
        let train = args
            .train
            .clone()
            .unwrap_or_else(|| layout.file(AUGMENTED, file::TRAIN));
        let out = args.out.clone().unwrap_or_else(|| layout.dir(CLASSIFY));
        (train, out)
    }

    /// The plan for one recipe on the training set `train_path`.
    pub fn resolve_with(args: &TrainArgs, train_path: PathBuf, choice: Choice) -> Result<Self> {
        if args.seeds == 0 {
            bail!("--seeds must be at least 1");
        }
        if args.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if args.batch < 1 {
            bail!("--batch must be at least 1");
        }
        if !(args.lr > 0.0 && args.lr.is_finite()) {
            bail!("--lr must be a positive number, not {}", args.lr);
        }
        let device = resolve_device(args.common.device)?;
        let layout = Layout::new(&args.common.artifacts);
        let data_dir = args.data.clone().unwrap_or_else(|| layout.dir(DATASET));
        let (_, out) = Self::paths(args);
        let mut data = Data::load(train_path, &data_dir)?;
        let inputs_extra = add_synthetic(args, &mut data)?;
        let syn = crate::synthetic::SynPlan::resolve(args, &data.train)?;
        let t = &data.train;
        let mut cfg = ClassifierConfig::new(
            args.model,
            t.channels as i64,
            t.height as i64,
            t.width as i64,
            t.classes.clone(),
        )?;
        let (recipe, training) = recipe_for(args, choice, t, syn.as_ref(), device)?;
        cfg.training = Some(training);
        // Rare classes are those of the real data (ingest's manifest), not of a rebalanced set.
        let rare = rare_classes_of(&data_dir, &cfg.classes, &t.counts());
        let mut inputs = [&data.train_path, &data.val_path, &data.test_path]
            .iter()
            .map(|p| FileRecord::of_file(p, &p.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        inputs.extend(inputs_extra);
        Ok(Self {
            args: args.clone(),
            device,
            seeds: (0..args.seeds).map(|i| args.common.seed + i).collect(),
            data,
            data_dir,
            out,
            cfg,
            rare,
            inputs,
            recipe,
            syn,
        })
    }
}

/// `--synthetic FILE`: its images appended to the training set, marked synthetic; the input
/// record of the file.
fn add_synthetic(args: &TrainArgs, data: &mut Data) -> Result<Vec<FileRecord>> {
    let Some(p) = &args.synthetic else {
        return Ok(Vec::new());
    };
    let s = ImageSet::read_input(p, "synthetic", "pass filter's kept.safetensors")?;
    s.ensure_matches(p, &data.train, &data.train_path)?;
    for i in 0..s.len() {
        data.train.push_from(
            s.image(i),
            s.labels[i],
            rebalance_core::imageset::source::SYNTHETIC,
        );
    }
    Ok(vec![FileRecord::of_file(p, &p.display().to_string())?])
}

/// The recipe on training set `t` (with a synthetic share the sampler draws from its real
/// images only) and its contract record.
fn recipe_for(
    args: &TrainArgs,
    choice: Choice,
    t: &ImageSet,
    syn: Option<&crate::synthetic::SynPlan>,
    device: Device,
) -> Result<(Recipe, rebalance_core::contract::classify::TrainingRecipe)> {
    let pool: Option<Vec<i64>> = syn.map(|_| {
        (0..t.len())
            .filter(|&i| t.source_of(i) != rebalance_core::imageset::source::SYNTHETIC)
            .map(|i| i as i64)
            .collect()
    });
    let recipe = Recipe::new(
        args,
        choice,
        &t.labels,
        pool.as_deref(),
        t.classes.len(),
        t.channels as i64,
        device,
    )?;
    let mut training = recipe.contract();
    training.synthetic = syn.map(|s| s.contract(&t.classes));
    if syn.is_some_and(|s| s.count() == 0) {
        tracing::warn!(
            "--synthetic-share: the training set holds no synthetic image, so every draw is real"
        );
    }
    Ok((recipe, training))
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

/// One seed's training state between epochs, carried in its checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    stopping: EarlyStopping,
    train_s: f64,
    curves: Vec<CurveRow>,
}

/// A seed's network, the copy of its best epoch, and its optimizer.
struct SeedModel {
    vs: VarStore,
    model: Classifier,
    best_vs: VarStore,
    best: Classifier,
    opt: Adam,
}

impl SeedModel {
    fn new(plan: &Plan, seed: u64) -> Result<Self> {
        rebalance_nn::seed_everything(seed);
        let vs = VarStore::new(plan.device);
        let model = Classifier::new(&vs.root(), &plan.cfg);
        if !plan.args.common.quiet && seed == plan.seeds[0] {
            eprint!("{}", model.summary(plan.device));
        }
        let mut best_vs = VarStore::new(plan.device);
        let best = Classifier::new(&best_vs.root(), &plan.cfg);
        best_vs.copy(&vs)?;
        let opt = Adam::new(&vs, plan.args.lr, 0.9, 0.999);
        Ok(Self {
            vs,
            model,
            best_vs,
            best,
            opt,
        })
    }

    fn save(&self, path: &Path, p: &Progress) -> Result<()> {
        let meta = HashMap::from([("progress".to_string(), serde_json::to_string(p)?)]);
        checkpoint::save(
            path,
            &[("m", &self.vs), ("best", &self.best_vs)],
            &[("opt", &self.opt)],
            meta,
        )
    }

    fn load(&mut self, path: &Path, device: Device) -> Result<Progress> {
        let meta = checkpoint::load(
            path,
            &[("m", &self.vs), ("best", &self.best_vs)],
            &mut [("opt", &mut self.opt)],
            device,
        )?;
        serde_json::from_str(
            meta.get("progress")
                .context("checkpoint without progress")?,
        )
        .with_context(|| format!("{}: unreadable progress", path.display()))
    }
}

/// The tensors a seed trains and validates on.
struct Tensors {
    xtr: Tensor,
    ytr: Tensor,
    xva: Tensor,
    yva: Tensor,
    /// With a synthetic share: each training image's target `[N, K]` and loss weight `[N]`.
    targets: Option<(Tensor, Tensor)>,
}

/// A training batch: inputs, labels and, with a synthetic share, per-row targets and weights.
struct Batch {
    x: Tensor,
    y: Tensor,
    targets: Option<(Tensor, Tensor)>,
}

impl Batch {
    /// Rows `start..start + len` of a transformed chunk.
    fn rows(&self, start: i64, len: i64) -> Batch {
        Batch {
            x: self.x.narrow(0, start, len),
            y: self.y.narrow(0, start, len),
            targets: self
                .targets
                .as_ref()
                .map(|(t, w)| (t.narrow(0, start, len), w.narrow(0, start, len))),
        }
    }

    /// The recipe's loss of `logits` against these rows, reordered by `rows` (mixup's
    /// partners) when given; with a synthetic share, the form with per-row targets and weights.
    fn loss(&self, r: &Recipe, logits: &Tensor, rows: Option<&Tensor>) -> Tensor {
        let pick = |v: &Tensor| rows.map_or(v.shallow_clone(), |p| v.index_select(0, p));
        match &self.targets {
            None => r.loss(logits, &pick(&self.y)),
            Some((t, w)) => r.weighted_loss(logits, &pick(&self.y), &pick(t), &pick(w)),
        }
    }
}

/// The epoch's draws, in a (seed, epoch)-determined order, and the generator that goes on to
/// draw its transforms and mixing: a resumed run sees the same batches.
fn epoch_draws(plan: &Plan, seed: u64, epoch: usize) -> (Vec<i64>, rand_chacha::ChaCha8Rng) {
    let r = &plan.recipe;
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003) ^ epoch as u64);
    let mut draws = r.draws.epoch(r.epoch_size, &mut rng);
    if let Some(s) = &plan.syn {
        s.swap(&mut draws, &plan.data.train.labels, epoch, &mut rng);
    }
    tch::manual_seed((seed * 100_000 + epoch as u64) as i64);
    (draws, rng)
}

/// One chunk of draws, transformed afresh in one pass.
fn chunk_batch(plan: &Plan, t: &Tensors, chunk: &[i64], rng: &mut impl rand::Rng) -> Batch {
    let r = &plan.recipe;
    let idx = Tensor::from_slice(chunk).to_device(plan.device);
    let xu8 = t.xtr.index_select(0, &idx);
    let x = match r.choice.augment {
        rebalance_nn::transforms::OnlineAugment::None => rebalance_nn::to_unit_range(&xu8),
        _ => r.online.apply(&xu8.to_kind(Kind::Float), rng) / 127.5 - 1.0,
    };
    Batch {
        x,
        y: t.ytr.index_select(0, &idx),
        targets: t
            .targets
            .as_ref()
            .map(|(tt, w)| (tt.index_select(0, &idx), w.index_select(0, &idx))),
    }
}

/// One optimiser step on a batch (with mixup when `beta` is given); the logits and the loss.
fn batch_step(
    plan: &Plan,
    sm: &mut SeedModel,
    b: &Batch,
    beta: Option<&Beta<f64>>,
    rng: &mut impl rand::Rng,
) -> (Tensor, Tensor) {
    let r = &plan.recipe;
    let (logits, loss) = match beta {
        None => {
            let logits = sm.model.forward_t(&b.x, true);
            let loss = b.loss(r, &logits, None);
            (logits, loss)
        }
        Some(beta) => {
            let lam = beta.sample(rng);
            let mut perm: Vec<i64> = (0..b.x.size()[0]).collect();
            perm.shuffle(rng);
            let perm = Tensor::from_slice(&perm).to_device(plan.device);
            let mixed = &b.x * lam + b.x.index_select(0, &perm) * (1.0 - lam);
            let logits = sm.model.forward_t(&mixed, true);
            let loss =
                b.loss(r, &logits, None) * lam + b.loss(r, &logits, Some(&perm)) * (1.0 - lam);
            (logits, loss)
        }
    };
    sm.opt.zero_grad();
    loss.backward();
    sm.opt.step();
    (logits, loss)
}

/// One epoch of the recipe's draws, each chunk of draws transformed afresh; (mean loss,
/// accuracy over the draws).
fn train_epoch(
    plan: &Plan,
    sm: &mut SeedModel,
    t: &Tensors,
    seed: u64,
    epoch: usize,
) -> Result<(f64, f64)> {
    let r = &plan.recipe;
    let (draws, mut rng) = epoch_draws(plan, seed, epoch);
    let batch = plan.args.batch.max(1) as usize;
    let beta = (r.choice.mixup > 0.0)
        .then(|| Beta::new(r.choice.mixup, r.choice.mixup))
        .transpose()
        .map_err(|e| anyhow!("--mixup {}: {e}", r.choice.mixup))?;
    let mut loss_sum = Tensor::zeros([], (Kind::Double, plan.device));
    let mut correct = Tensor::zeros([], (Kind::Int64, plan.device));
    for chunk in draws.chunks(batch * CHUNK_BATCHES) {
        let c = chunk_batch(plan, t, chunk, &mut rng);
        for start in (0..chunk.len()).step_by(batch) {
            let len = batch.min(chunk.len() - start) as i64;
            let b = c.rows(start as i64, len);
            let (logits, loss) = batch_step(plan, sm, &b, beta.as_ref(), &mut rng);
            loss_sum += loss.detach().to_kind(Kind::Double) * len as f64;
            correct += logits.argmax(-1, false).eq_tensor(&b.y).sum(Kind::Int64);
        }
    }
    let n = draws.len().max(1) as f64;
    let l = f64::try_from(&loss_sum)? / n;
    if !l.is_finite() {
        bail!(
            "seed {seed} epoch {epoch}: the training loss is {l}; lower --lr (now {})",
            plan.args.lr
        );
    }
    Ok((l, i64::try_from(&correct)? as f64 / n))
}

/// Train one seed in `dir` (resuming from `dir/checkpoint.safetensors` when present).
fn train_seed(plan: &Plan, seed: u64, dir: &Path) -> Result<SeedRun> {
    let args = &plan.args;
    std::fs::create_dir_all(dir)?;
    let mut sm = SeedModel::new(plan, seed)?;
    let (xtr, ytr) = imageset_tensors(&plan.data.train, plan.device);
    let (xva, yva) = imageset_tensors(&plan.data.val, plan.device);
    let targets = match &plan.syn {
        Some(s) => Some(s.targets(&plan.data.train, plan.device)?),
        None => None,
    };
    let t = Tensors {
        xtr,
        ytr,
        xva,
        yva,
        targets,
    };
    let ckpt = dir.join("checkpoint.safetensors");
    let mut prog = if ckpt.exists() {
        let p = sm.load(&ckpt, plan.device)?;
        info!(
            "seed {seed}: resuming after epoch {} from {}",
            p.epoch,
            ckpt.display()
        );
        p
    } else {
        Progress {
            epoch: 0,
            stopping: EarlyStopping::new(args.patience),
            train_s: 0.0,
            curves: Vec::new(),
        }
    };
    // TensorBoard: one run per seed under `<out>/tb/seed-<s>` (the work folder becomes <out>).
    let work = dir.parent().unwrap_or(Path::new("."));
    let mut tb = SummaryWriter::create(&work.join("tb").join(format!("seed-{seed}")))?;
    while prog.epoch < args.epochs && !prog.stopping.should_stop() {
        let epoch = prog.epoch + 1;
        let t0 = Instant::now();
        let (train_loss, train_accuracy) = train_epoch(plan, &mut sm, &t, seed, epoch)?;
        let val = evaluate(&sm.model, &t.xva, &t.yva, 512);
        let row = CurveRow {
            seed,
            epoch,
            train_loss,
            train_accuracy,
            val_loss: val.loss,
            val_accuracy: val.accuracy,
            val_macro_f1: val.macro_f1,
            seconds: t0.elapsed().as_secs_f64(),
        };
        info!(
            "seed {seed} epoch {epoch}/{}: train loss {:.4} acc {:.3} | val loss {:.4} acc {:.3} macro-F1 {:.3}",
            args.epochs, row.train_loss, row.train_accuracy, row.val_loss, row.val_accuracy, row.val_macro_f1
        );
        if prog.stopping.update(epoch, val.macro_f1, val.loss) {
            sm.best_vs.copy(&sm.vs)?;
        }
        tb.row(&row)?;
        prog.train_s += row.seconds;
        prog.curves.push(row);
        prog.epoch = epoch;
        sm.save(&ckpt, &prog)?;
    }
    finish_seed(plan, &sm, &t, &prog, seed, dir)
}

/// Evaluate a trained seed on val and test, and write its folder.
fn finish_seed(
    plan: &Plan,
    sm: &SeedModel,
    t: &Tensors,
    prog: &Progress,
    seed: u64,
    dir: &Path,
) -> Result<SeedRun> {
    let args = &plan.args;
    if prog.stopping.should_stop() && prog.epoch < args.epochs {
        info!(
            "seed {seed}: stopped after epoch {} (no better val macro-F1 for {} epochs); keeping epoch {}",
            prog.epoch, args.patience, prog.stopping.best_epoch
        );
    }
    // --patience 0 keeps the last epoch; otherwise the best on val.
    let (model, vs, kept) = if args.patience == 0 {
        (&sm.model, &sm.vs, prog.epoch)
    } else {
        (&sm.best, &sm.best_vs, prog.stopping.best_epoch)
    };
    let val = evaluate(model, &t.xva, &t.yva, 512);
    let (xte, yte) = imageset_tensors(&plan.data.test, plan.device);
    let test = evaluate(model, &xte, &yte, 512);
    judge::save(dir, vs, &plan.cfg)?;
    write_csv(&dir.join(file::CURVES), &prog.curves)?;
    let run = SeedRun {
        seed,
        best_epoch: kept,
        epochs_run: prog.epoch,
        train_s: prog.train_s,
        val,
        test,
    };
    contract::write_json(&dir.join("result.json"), &run)?;
    std::fs::remove_file(dir.join("checkpoint.safetensors")).ok();
    Ok(run)
}

/// Train (or reuse, when already finished in an interrupted run) every seed in `work`.
pub(crate) fn train_seeds(plan: &Plan, work: &Path) -> Result<Vec<SeedRun>> {
    let mut runs = Vec::new();
    for &seed in &plan.seeds {
        let dir = work.join(format!("seed-{seed}"));
        let done = dir.join("result.json");
        let run = if done.exists() {
            info!("seed {seed}: already finished, reusing {}", done.display());
            contract::read_json(&done)?
        } else {
            train_seed(plan, seed, &dir)?
        };
        info!(
            "seed {seed}: test accuracy {:.4}, macro-F1 {:.4} (epoch {} of {})",
            run.test.accuracy, run.test.macro_f1, run.best_epoch, run.epochs_run
        );
        runs.push(run);
    }
    Ok(runs)
}

/// Train with one recipe (the job module sends `--candidates` runs to the candidates module).
pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::resolve(args)?;
    let _lock = rebalance_core::stage_lock::StageLock::share("classify", &plan.out)?;
    crate::recipe::warn_if_ranges_differ(args, plan.cfg.training.as_ref().expect("set"))?;
    info!(
        "classify: {} on {} ({} images, {} classes) → {}, device {}, {} seed(s); {}",
        plan.cfg.model,
        plan.data.train_path.display(),
        plan.data.train.len(),
        plan.cfg.classes.len(),
        plan.out.display(),
        device_name(plan.device),
        args.seeds,
        plan.recipe.contract().describe()
    );
    // The work folder is reused (resumed) only when the same parameters and inputs made it.
    let work = partial_dir(&plan.out);
    let key = RunKey::new(
        serde_json::to_value(args)?,
        &["/common/quiet"],
        plan.inputs.clone(),
        &device_name(plan.device),
    );
    if let Some(i) = args.seed_task {
        return train_seed_task(&plan, &key, &work, i);
    }
    let runs = if args.merge_seeds {
        finished_seed_tasks(&plan, &key, &work)?
    } else {
        if key.claim(&work)? == Claim::Resume {
            info!(
                "{} holds an interrupted run of this same command: resuming it",
                work.display()
            );
        }
        train_seeds(&plan, &work)?
    };
    let summary = write_outputs(&plan, &runs, &work)?;
    RunKey::release(&work)?;
    write_manifest(&plan, &runs, &work, started, |_| {})?;
    swap_into(&work, &plan.out)?;
    println!("{summary}");
    println!("classify: outputs in {}", plan.out.display());
    Ok(())
}

/// `--seed-task I`: train seed I of the work folder on its own (one array task; the other
/// seeds may be training at the same time). The seed's folder carries the run key, so a task
/// resumes only its own interrupted run and `--merge-seeds` takes only seeds of this command.
fn train_seed_task(plan: &Plan, key: &RunKey, work: &Path, i: u64) -> Result<()> {
    let seed = *plan.seeds.get(i as usize).ok_or_else(|| {
        anyhow!(
            "--seed-task {i}: there are only {} seeds (--seeds {}), numbered from 0",
            plan.seeds.len(),
            plan.seeds.len()
        )
    })?;
    let dir = work.join(format!("seed-{seed}"));
    let done = dir.join("result.json");
    if RunKey::read(&dir).as_ref() == Some(key) && done.exists() {
        info!("seed {seed}: already finished in {}", dir.display());
        return Ok(());
    }
    if key.claim(&dir)? == Claim::Resume {
        info!(
            "seed {seed}: resuming the interrupted task in {}",
            dir.display()
        );
    } else {
        // A fresh seed: no TensorBoard events from an earlier attempt.
        let tb = work.join("tb").join(format!("seed-{seed}"));
        if tb.exists() {
            std::fs::remove_dir_all(&tb).with_context(|| format!("clearing {}", tb.display()))?;
        }
    }
    let run = train_seed(plan, seed, &dir)?;
    info!(
        "seed {seed} (task {i}): test accuracy {:.4}, macro-F1 {:.4} (epoch {} of {}); `--merge-seeds` writes the outputs",
        run.test.accuracy, run.test.macro_f1, run.best_epoch, run.epochs_run
    );
    Ok(())
}

/// `--merge-seeds`: every seed's result, trained by `--seed-task` runs of this same command.
fn finished_seed_tasks(plan: &Plan, key: &RunKey, work: &Path) -> Result<Vec<SeedRun>> {
    let mut runs = Vec::new();
    for (i, seed) in plan.seeds.iter().enumerate() {
        let dir = work.join(format!("seed-{seed}"));
        let done = dir.join("result.json");
        if !done.exists() {
            bail!(
                "--merge-seeds: seed {seed} has not finished in {} (run this command with --seed-task {i} first)",
                dir.display()
            );
        }
        if RunKey::read(&dir).as_ref() != Some(key) {
            bail!(
                "--merge-seeds: {} was trained by another command or on other inputs; run --seed-task {i} again",
                dir.display()
            );
        }
        runs.push(contract::read_json::<SeedRun>(&done)?);
    }
    // Only these seeds' folders become the output: nothing an earlier, other run left.
    let keep: Vec<String> = plan.seeds.iter().map(|s| format!("seed-{s}")).collect();
    for (dir, also) in [(work.to_path_buf(), Some("tb")), (work.join("tb"), None)] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) || Some(name.as_str()) == also {
                continue;
            }
            remove_path(&entry.path())?;
        }
    }
    for name in &keep {
        RunKey::release(&work.join(name))?;
    }
    Ok(runs)
}

/// The top-level files: the first seed's model (the judge), curves of all seeds, the confusion
/// matrix, metrics.json and the summary table (returned for the terminal).
pub(crate) fn write_outputs(plan: &Plan, runs: &[SeedRun], work: &Path) -> Result<String> {
    let seeds = &plan.seeds;
    let first = work.join(format!("seed-{}", seeds[0]));
    for f in [file::MODEL, file::CONFIG] {
        std::fs::copy(first.join(f), work.join(f))?;
    }
    let mut curves = Vec::new();
    for s in seeds {
        curves.extend(contract::read_csv::<CurveRow>(
            &work.join(format!("seed-{s}/curves.csv")),
        )?);
    }
    write_csv(&work.join(file::CURVES), &curves)?;
    write_atomic(
        &work.join("curves.svg"),
        curves_svg(&curves, seeds[0])?.as_bytes(),
    )?;
    let cm0 = &runs[0].test.confusion;
    write_atomic(
        &work.join("confusion.csv"),
        &confusion_csv(cm0, &plan.cfg.classes)?,
    )?;
    write_atomic(&work.join("confusion.png"), &confusion_png(cm0)?)?;
    let test = MeanStd::of(&runs.iter().map(|r| &r.test).collect::<Vec<_>>());
    let metrics = ClassifierMetrics {
        classes: plan.cfg.classes.clone(),
        model: plan.cfg.model,
        train: plan.data.train_path.display().to_string(),
        train_counts: plan
            .cfg
            .classes
            .iter()
            .cloned()
            .zip(plan.data.train.counts())
            .collect(),
        rare_classes: plan.rare.clone(),
        seeds: seeds.clone(),
        test,
        runs: runs.to_vec(),
        recipe: plan.cfg.training.clone(),
    };
    contract::write_json(&work.join(file::METRICS), &metrics)?;
    let summary = summary_table(&metrics.test, &plan.cfg.classes, &plan.rare, seeds.len());
    write_atomic(&work.join("summary.txt"), summary.as_bytes())?;
    Ok(summary)
}

/// The first seed's training curves.
fn curves_svg(curves: &[CurveRow], seed: u64) -> Result<String> {
    let pts = |f: fn(&CurveRow) -> f64| -> Vec<(f64, f64)> {
        curves
            .iter()
            .filter(|r| r.seed == seed)
            .map(|r| (r.epoch as f64, f(r)))
            .collect()
    };
    rebalance_core::chart::lines_svg(
        &format!("training curves (seed {seed})"),
        &[
            ("train loss", pts(|r| r.train_loss)),
            ("val loss", pts(|r| r.val_loss)),
            ("val accuracy", pts(|r| r.val_accuracy)),
            ("val macro-F1", pts(|r| r.val_macro_f1)),
        ],
        "epoch",
        "",
    )
}

pub(crate) fn write_manifest(
    plan: &Plan,
    runs: &[SeedRun],
    work: &Path,
    started: Instant,
    extra: impl FnOnce(&mut Manifest),
) -> Result<()> {
    let args = &plan.args;
    let mut m = Manifest::new(
        "classify",
        serde_json::to_value(args)?,
        &device_name(plan.device),
        args.common.seed,
    );
    m.inputs = plan.inputs.clone();
    let test = MeanStd::of(&runs.iter().map(|r| &r.test).collect::<Vec<_>>());
    for k in ["accuracy", "balanced_accuracy", "macro_f1", "loss"] {
        m.metrics
            .insert(format!("test_{k}"), serde_json::json!(test.mean[k]));
        m.metrics
            .insert(format!("test_{k}_std"), serde_json::json!(test.std[k]));
    }
    for c in &plan.rare {
        m.metrics.insert(
            format!("test_recall_{c}"),
            serde_json::json!(test.mean[&format!("recall/{c}")]),
        );
    }
    m.set_extra(&ClassifyInfo {
        seeds: plan.seeds.clone(),
        model: plan.cfg.model,
    })?;
    extra(&mut m);
    m.write_into(work, started)
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
    let header = std::iter::once("true\\predicted".to_string()).chain(classes.iter().cloned());
    let rows = classes.iter().zip(cm).map(|(c, row)| {
        std::iter::once(c.clone())
            .chain(row.iter().map(|v| v.to_string()))
            .collect::<Vec<_>>()
    });
    contract::csv_of_records(std::iter::once(header.collect::<Vec<_>>()).chain(rows))
}

pub(crate) fn pm(mean: f64, std: f64, k: usize) -> String {
    if k > 1 {
        format!("{mean:.4} ± {std:.4}")
    } else {
        format!("{mean:.4}")
    }
}

fn summary_table(test: &MeanStd, classes: &[String], rare: &[String], k: usize) -> String {
    let (mean, std) = (&test.mean, &test.std);
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
