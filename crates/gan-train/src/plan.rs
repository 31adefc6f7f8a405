//! What every training job resolves before it trains: the checked flags, the data, the chosen
//! classes and the network configuration ([`Plan`]), and where the run starts ([`prepare_work`]):
//! afresh, or from the checkpoint of an interrupted run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rebalance_core::contract::layout::{file, Layout, DATASET, GAN};
use rebalance_core::{partial_dir, FileRecord, ImageSet};
use rebalance_nn::models::{GanConfig, GanKind, Judge};
use rebalance_nn::train::cadence::{Cadence, Settings};
use rebalance_nn::train::run_key::{Claim, RunKey};
use rebalance_nn::{device_name, resolve_device};
use tch::Device;

use crate::args::{CycleganArgs, GanLoss, MsCap, TrainArgs};
use crate::classes::choose_classes;
use crate::diffaug::Aug;

pub(crate) fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("checkpoints").join("latest.safetensors")
}

/// Read a checkpoint's config from its metadata.
pub(crate) fn checkpoint_config(meta: &HashMap<String, String>, path: &Path) -> Result<GanConfig> {
    let json = meta.get("config").with_context(|| {
        format!(
            "{}: not a gan-train checkpoint (no `config` metadata)",
            path.display()
        )
    })?;
    serde_json::from_str(json)
        .with_context(|| format!("{}: unreadable config metadata", path.display()))
}

/// Everything a run needs, resolved and checked before training.
pub(crate) struct Plan {
    pub(crate) args: TrainArgs,
    pub(crate) device: Device,
    /// The training image set's path, and the set.
    pub(crate) data: PathBuf,
    pub(crate) set: ImageSet,
    pub(crate) out: PathBuf,
    /// The hidden sibling of `out` the run lives in until it finishes.
    pub(crate) work: PathBuf,
    pub(crate) cfg: GanConfig,
    /// D (critic) steps per G step.
    pub(crate) n_d: u32,
    pub(crate) policy: Vec<Aug>,
    /// The judge whose feature space the warm-up matches (`--warmup-steps`) and whose
    /// classifier the `--ac-weight` term asks.
    pub(crate) judge: Option<Judge>,
    /// `--real-augment`: the transform of real batches.
    pub(crate) real_augment: Option<rebalance_nn::transforms::Online>,
}

impl Plan {
    /// `cyclegan`: the translation's options when the job is one.
    pub(crate) fn resolve(args: &TrainArgs, cyclegan: Option<&CycleganArgs>) -> Result<Self> {
        check_flags(args)?;
        if args.threads > 0 {
            tch::set_num_threads(args.threads);
        }
        let device = resolve_device(args.common.device)?;
        let layout = Layout::new(&args.common.artifacts);
        let data = args
            .data
            .clone()
            .unwrap_or_else(|| layout.file(DATASET, file::TRAIN));
        let out = args.out.clone().unwrap_or_else(|| layout.dir(GAN));
        if !data.exists() {
            bail!(
                "{}: no training set. Run `just ingest` first (it writes artifacts/dataset from data/mnist), \
                 or pass --data <image set>",
                data.display()
            );
        }
        let set = ImageSet::read(&data)?;
        let trained = choose_classes(&set, &data, args, cyclegan)?;
        let judge = match &args.judge {
            Some(dir) if args.warmup_steps > 0 || args.ac_weight > 0.0 => {
                let mut j = Judge::load(dir, device)?;
                j.check_compatible(&set, &data)?;
                j.freeze();
                Some(j)
            }
            _ => None,
        };
        if args.model == GanKind::Dcgan && trained.len() > 1 {
            tracing::info!(
                "dcgan is unconditional: it learns the {} classes as one pool",
                trained.len()
            );
        }
        let cfg = gan_config(args, &set, trained);
        cfg.stages()?;
        let default_d_steps = if args.model == GanKind::WganGp { 5 } else { 1 };
        let real_augment = real_augment(args, &set);
        Ok(Self {
            args: args.clone(),
            device,
            work: partial_dir(&out),
            out,
            data,
            set,
            cfg,
            n_d: args.d_steps.unwrap_or(default_d_steps).max(1),
            policy: args.diffaug.iter().flatten().copied().collect(),
            judge,
            real_augment,
        })
    }
}

/// The networks' configuration: the flags' architecture for the set's images and classes.
fn gan_config(args: &TrainArgs, set: &ImageSet, trained: Vec<i64>) -> GanConfig {
    GanConfig {
        model: args.model,
        channels: set.channels as i64,
        height: set.height as i64,
        width: set.width as i64,
        z_dim: args.z_dim,
        g_width: args.g_width,
        d_width: args.d_width,
        embed_dim: args.embed_dim,
        g_dropout: args.g_dropout,
        minibatch_std: args.minibatch_std,
        spectral_norm: args.spectral_norm,
        conditioning: args.conditioning,
        classes: set.classes.clone(),
        trained_classes: trained,
    }
}

/// `--real-augment`'s transform of real batches (augment's ranges), unless it is `none`.
fn real_augment(args: &TrainArgs, set: &ImageSet) -> Option<rebalance_nn::transforms::Online> {
    (args.real_augment != rebalance_nn::transforms::OnlineAugment::None).then(|| {
        rebalance_nn::transforms::Online::new(
            args.real_augment,
            Default::default(),
            rebalance_nn::transforms::Elastic {
                alpha: 34.0,
                sigma: 4.0,
            },
            0.125,
            set.channels as i64,
        )
    })
}

impl Plan {
    /// How the training loop runs: the flags' cadence and `--stop-on-failure`.
    pub(crate) fn loop_settings<'a>(&'a self, label: &'a str) -> Settings<'a> {
        let args = &self.args;
        Settings {
            cadence: Cadence {
                steps: args.steps,
                log_every: args.log_every,
                sample_every: args.sample_every,
                checkpoint_every: args.checkpoint_every,
            },
            label,
            quiet: args.common.quiet,
            stop_on_failure: args.stop_on_failure,
            work: &self.work,
            checkpoint: checkpoint_path(&self.work),
        }
    }
}

/// Flags that are wrong whatever the data.
fn check_flags(args: &TrainArgs) -> Result<()> {
    if args.batch < 1 {
        bail!("--batch must be at least 1, not {}", args.batch);
    }
    for (flag, v) in [("--lr-g", args.lr_g), ("--lr-d", args.lr_d)] {
        if !(v > 0.0 && v.is_finite()) {
            bail!("{flag} must be a positive number, not {v}");
        }
    }
    if !(args.mode_seeking >= 0.0 && args.mode_seeking.is_finite()) {
        bail!(
            "--mode-seeking must be a number ≥ 0, not {}",
            args.mode_seeking
        );
    }
    if args.mode_seeking > 0.0 && args.batch < 2 {
        bail!("--mode-seeking compares pairs of samples: --batch must be at least 2 (or --mode-seeking 0)");
    }
    if args.ms_cap == MsCap::Source && !args.model.image_conditioned() {
        bail!("--ms-cap source caps the mode-seeking term by a source's real partner; only --model dagan has sources");
    }
    for (flag, v) in [
        ("--cbn-lr-mult", args.cbn_lr_mult),
        ("--ac-weight", args.ac_weight),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{flag} must be a number ≥ 0, not {v}");
        }
    }
    if args.cbn_lr_mult != 1.0 && args.conditioning != rebalance_nn::models::Conditioning::Cbn {
        bail!("--cbn-lr-mult scales class-conditional batch norm's class terms: add --conditioning cbn");
    }
    if args.ac_weight > 0.0 && !(args.model.conditional() || args.model.image_conditioned()) {
        bail!(
            "--ac-weight asks the judge for the label of G's images; {} makes unlabelled images",
            args.model
        );
    }
    if args.loss == GanLoss::Hinge && args.model == GanKind::WganGp {
        bail!("--loss hinge: wgan-gp has its own (Wasserstein) loss; use --model cgan or dcgan");
    }
    if let Some(t) = args.transition {
        if !args.model.conditional() {
            bail!(
                "--transition fades the label in, but {} takes no label; use --model cgan or wgan-gp",
                args.model
            );
        }
        if t.end > args.steps {
            bail!(
                "--transition {},{}: END is past --steps {}; the label must be fully in before the run ends",
                t.start,
                t.end,
                args.steps
            );
        }
    }
    if args.warmup_steps > 0 && args.warmup_steps >= args.steps {
        bail!(
            "--warmup-steps {} leaves no adversarial step of --steps {}",
            args.warmup_steps,
            args.steps
        );
    }
    if !(0.0..1.0).contains(&args.ema) {
        bail!("--ema must be in [0, 1), not {}", args.ema);
    }
    for (flag, v) in [
        ("--log-every", args.log_every),
        ("--sample-every", args.sample_every),
        ("--checkpoint-every", args.checkpoint_every),
    ] {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    Ok(())
}

/// Decide where the run starts: the checkpoint to resume from, if any. Without `--resume`, an
/// interrupted run of this same command and data (its run key) is resumed and anything else in
/// the work folder is cleared.
pub(crate) fn prepare_work(plan: &Plan) -> Result<Option<PathBuf>> {
    let (args, work) = (&plan.args, &plan.work);
    // What makes an interrupted run the same run: every flag but --resume/--quiet, and the data.
    let key = RunKey::new(
        serde_json::to_value(args)?,
        &["/resume", "/common/quiet"],
        vec![FileRecord::of_file(
            &plan.data,
            &plan.data.display().to_string(),
        )?],
        &device_name(plan.device),
    );
    let resume_from = match args.resume.as_deref() {
        None => match key.claim(work)? {
            Claim::Resume if checkpoint_path(work).exists() => {
                tracing::info!(
                    "{} holds an interrupted run of this same command: resuming it",
                    work.display()
                );
                Some(checkpoint_path(work))
            }
            Claim::Replaced => {
                tracing::warn!("{} held an interrupted run of another command or data; starting afresh (use --resume latest to continue it)", work.display());
                None
            }
            _ => None,
        },
        Some("latest") => {
            if !checkpoint_path(work).exists() {
                if !checkpoint_path(&plan.out).exists() {
                    bail!(
                        "--resume latest: no checkpoint in {} or {}",
                        work.display(),
                        plan.out.display()
                    );
                }
                copy_dir(&plan.out, work)?;
            }
            key.write(work)?;
            Some(checkpoint_path(work))
        }
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("--resume {}: no such checkpoint file", p.display());
            }
            key.write(work)?;
            Some(p)
        }
    };
    std::fs::create_dir_all(work.join("samples"))?;
    std::fs::create_dir_all(work.join("checkpoints"))?;
    Ok(resume_from)
}

/// Check that the checkpoint at `path` (its metadata) fits the networks of `cfg`.
pub(crate) fn check_architecture(
    meta: &HashMap<String, String>,
    path: &Path,
    cfg: &GanConfig,
    flag: &str,
) -> Result<()> {
    let theirs = checkpoint_config(meta, path)?;
    if !theirs.same_architecture(cfg) {
        bail!(
            "{flag} {}: a checkpoint of another architecture ({}); this run is {}",
            path.display(),
            theirs.describe(),
            cfg.describe()
        );
    }
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}
