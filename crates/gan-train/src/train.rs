//! The training loop, checkpoints with exact resume, and failure detection.
//!
//! Exact resume: at the start of every step libtorch's generator and the batch sampler are
//! seeded from (seed, step), so the random state is a function of the step and needs no
//! saving. A checkpoint holds G, D, the EMA of G, both Adam states and the step; a run
//! stopped at step k and resumed reaches bit-identical weights at step n on the CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rebalance_core::{
    chart, grid, partial_dir, swap_into, write_atomic, ImageSet, Manifest, CONTRACT_VERSION,
};
use rebalance_nn::{adam::Adam, device_name, io, resolve_device};
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};

use crate::diffaug::{diff_augment, Aug};
use crate::TrainArgs;
use rebalance_nn::models::{Discriminator, GanConfig, GanKind, Generator, Network};

/// Columns of `losses.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LossRow {
    pub step: u64,
    pub d_loss_real: f64,
    pub d_loss_fake: f64,
    pub g_loss: f64,
    pub d_acc_real: f64,
    pub d_acc_fake: f64,
    pub gp: f64,
    pub images_per_s: f64,
}

/// Samples shown per class in the progress grids.
const GRID_COLS: i64 = 8;

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

fn choose_classes(set: &ImageSet, args: &TrainArgs) -> Result<Vec<i64>> {
    let counts = set.counts();
    let find = |name: &str| -> Result<i64> {
        set.classes
            .iter()
            .position(|c| c == name)
            .map(|i| i as i64)
            .with_context(|| {
                format!(
                    "class `{name}` is not in the dataset; its classes are {}",
                    set.classes.join(", ")
                )
            })
    };
    let chosen: Vec<i64> = if let Some(c) = &args.class {
        vec![find(c)?]
    } else if !args.classes.is_empty() {
        args.classes
            .iter()
            .map(|c| find(c))
            .collect::<Result<_>>()?
    } else if let Some(n) = args.minority {
        let v: Vec<i64> = (0..counts.len())
            .filter(|&i| counts[i] < n)
            .map(|i| i as i64)
            .collect();
        if v.is_empty() {
            bail!(
                "--minority {n}: no class has fewer than {n} training images (counts: {counts:?})"
            );
        }
        v
    } else {
        (0..counts.len() as i64).collect()
    };
    for &c in &chosen {
        if counts[c as usize] == 0 {
            bail!("class `{}` has no training images", set.classes[c as usize]);
        }
    }
    Ok(chosen)
}

/// Read a checkpoint and check that it fits the networks of `cfg`.
fn read_matching(
    path: &Path,
    cfg: &GanConfig,
    device: Device,
    flag: &str,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let (t, meta) = io::read_safetensors(path, device)?;
    let theirs = checkpoint_config(&meta, path)?;
    if !theirs.same_architecture(cfg) {
        bail!(
            "{flag} {}: a checkpoint of another architecture ({}); this run is {}",
            path.display(),
            theirs.describe(),
            cfg.describe()
        );
    }
    Ok((t, meta))
}

struct Nets {
    g_vs: VarStore,
    d_vs: VarStore,
    ema_vs: VarStore,
    g: Generator,
    d: Discriminator,
    ema: Generator,
    opt_g: Adam,
    opt_d: Adam,
    /// (EMA tensor, G tensor) pairs, matched by name once.
    ema_pairs: Vec<(Tensor, Tensor)>,
}

impl Nets {
    fn new(cfg: &GanConfig, args: &TrainArgs, device: Device) -> Result<Self> {
        rebalance_nn::seed_everything(args.common.seed);
        let g_vs = VarStore::new(device);
        let g = Generator::new(g_vs.root(), cfg)?;
        let d_vs = VarStore::new(device);
        let d = Discriminator::new(d_vs.root(), cfg)?;
        let mut ema_vs = VarStore::new(device);
        let ema = Generator::new(ema_vs.root(), cfg)?;
        ema_vs.copy(&g_vs)?;
        let opt_g = Adam::new(&g_vs, args.lr_g, args.beta1, args.beta2);
        let opt_d = Adam::new(&d_vs, args.lr_d, args.beta1, args.beta2);
        let ema_pairs = io::named_vars(&ema_vs, "")
            .into_iter()
            .zip(io::named_vars(&g_vs, ""))
            .map(|((_, e), (_, s))| (e, s))
            .collect();
        Ok(Self {
            g_vs,
            d_vs,
            ema_vs,
            g,
            d,
            ema,
            opt_g,
            opt_d,
            ema_pairs,
        })
    }

    fn save(&self, dir: &Path, step: u64, cfg: &GanConfig) -> Result<()> {
        let mut t = io::named_vars(&self.g_vs, "g.");
        t.extend(io::named_vars(&self.d_vs, "d."));
        t.extend(io::named_vars(&self.ema_vs, "ema."));
        t.extend(self.opt_g.state("opt_g."));
        t.extend(self.opt_d.state("opt_d."));
        let meta = HashMap::from([
            ("kind".to_string(), "gan-train checkpoint".to_string()),
            ("contract_version".to_string(), CONTRACT_VERSION.to_string()),
            ("step".to_string(), step.to_string()),
            ("opt_g_t".to_string(), self.opt_g.t.to_string()),
            ("opt_d_t".to_string(), self.opt_d.t.to_string()),
            ("config".to_string(), serde_json::to_string(cfg)?),
        ]);
        write_atomic(&checkpoint_path(dir), &io::to_safetensors(&t, meta)?)
    }

    /// Load a full checkpoint; returns its step.
    fn resume(&mut self, path: &Path, cfg: &GanConfig, device: Device) -> Result<u64> {
        let (t, meta) = read_matching(path, cfg, device, "--resume")?;
        io::load_vars(&self.g_vs, "g.", &t, path)?;
        io::load_vars(&self.d_vs, "d.", &t, path)?;
        io::load_vars(&self.ema_vs, "ema.", &t, path)?;
        self.opt_g.load_state("opt_g.", &t)?;
        self.opt_d.load_state("opt_d.", &t)?;
        let num = |k: &str| -> Result<i64> {
            meta.get(k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}: no `{k}` metadata", path.display()))
        };
        self.opt_g.t = num("opt_g_t")?;
        self.opt_d.t = num("opt_d_t")?;
        Ok(num("step")? as u64)
    }

    /// Take G's and D's weights from an earlier run (`--init`): step 0, fresh optimizers.
    fn init_from(&mut self, path: &Path, cfg: &GanConfig, device: Device) -> Result<()> {
        let (t, _) = read_matching(path, cfg, device, "--init")?;
        io::load_vars(&self.g_vs, "g.", &t, path)?;
        io::load_vars(&self.d_vs, "d.", &t, path)?;
        self.ema_vs.copy(&self.g_vs)?;
        Ok(())
    }

    /// EMA update with a warm-up, so early samples are not dominated by the initial weights.
    fn update_ema(&mut self, decay: f64, step: u64) {
        let d = decay.min((1.0 + step as f64) / (10.0 + step as f64));
        tch::no_grad(|| {
            for (e, s) in &mut self.ema_pairs {
                let _ = e.lerp_(s, 1.0 - d); // e = d e + (1-d) s
            }
        });
    }
}

fn bce(logits: &Tensor, target: f64) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &logits.full_like(target),
        None,
        None,
        Reduction::Mean,
    )
}

/// Mean pairwise distance of images in each row (class), averaged over rows;
/// per-pixel RMS so that sizes compare.
fn diversity(images: &Tensor, rows: i64, cols: i64) -> f64 {
    if cols < 2 {
        return 0.0;
    }
    let x = images.view([rows, cols, -1]);
    let d = Tensor::cdist(&x, &x, 2.0, None::<i64>) / (x.size()[2] as f64).sqrt();
    d.sum(Kind::Float).double_value(&[]) / (rows * cols * (cols - 1)) as f64
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = resolve_device(args.common.device)?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| args.common.artifacts.join("dataset/train.safetensors"));
    if !data.exists() {
        bail!(
            "{}: no training set. Run `just ingest` first (it writes artifacts/dataset from data/mnist), \
             or pass --data <image set>",
            data.display()
        );
    }
    let set = ImageSet::read(&data)?;
    let trained = choose_classes(&set, args)?;
    if args.model == GanKind::Dcgan && trained.len() > 1 {
        tracing::info!(
            "dcgan is unconditional: it learns the {} classes as one pool",
            trained.len()
        );
    }
    let cfg = GanConfig {
        model: args.model,
        channels: set.channels as i64,
        height: set.height as i64,
        width: set.width as i64,
        z_dim: args.z_dim,
        g_width: args.g_width,
        d_width: args.d_width,
        embed_dim: args.embed_dim,
        g_dropout: args.g_dropout,
        classes: set.classes.clone(),
        trained_classes: trained.clone(),
    };
    cfg.stages()?;
    let n_d = args
        .d_steps
        .unwrap_or(if args.model == GanKind::WganGp { 5 } else { 1 })
        .max(1);
    let policy: Vec<Aug> = args.diffaug.iter().flatten().copied().collect();

    // The run lives in a hidden sibling folder until it finishes; a killed run resumes from it.
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.common.artifacts.join("gan"));
    let work = partial_dir(&out);
    // What makes an interrupted run the same run: every flag but --resume/--quiet, and the data.
    let run_key = {
        let mut a = args.clone();
        a.resume = None;
        a.common.quiet = false;
        let json = serde_json::to_string(&a).expect("args serialise");
        format!("{json}\n{}", rebalance_core::hash::sha256_file(&data)?)
    };
    let key_path = work.join(".run-key");
    let resume_from = match args.resume.as_deref() {
        None => {
            let same = std::fs::read_to_string(&key_path).is_ok_and(|k| k == run_key);
            if same && checkpoint_path(&work).exists() {
                tracing::info!(
                    "{} holds an interrupted run of this same command: resuming it",
                    work.display()
                );
                Some(checkpoint_path(&work))
            } else {
                if work.exists() {
                    tracing::warn!("{} holds an interrupted run of another command or data; starting afresh (use --resume latest to continue it)", work.display());
                    std::fs::remove_dir_all(&work)
                        .with_context(|| format!("removing {}", work.display()))?;
                }
                None
            }
        }
        Some("latest") => {
            if checkpoint_path(&work).exists() {
                Some(checkpoint_path(&work))
            } else if checkpoint_path(&out).exists() {
                copy_dir(&out, &work)?;
                Some(checkpoint_path(&work))
            } else {
                bail!(
                    "--resume latest: no checkpoint in {} or {}",
                    work.display(),
                    out.display()
                );
            }
        }
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("--resume {}: no such checkpoint file", p.display());
            }
            Some(p)
        }
    };
    std::fs::create_dir_all(work.join("samples"))?;
    std::fs::create_dir_all(work.join("checkpoints"))?;
    write_atomic(&key_path, run_key.as_bytes())?;

    let mut nets = Nets::new(&cfg, args, device)?;
    let mut step = 0;
    let mut rows: Vec<LossRow> = Vec::new();
    if let Some(ck) = &resume_from {
        step = nets.resume(ck, &cfg, device)?;
        rows = read_losses(&work.join("losses.csv"))?
            .into_iter()
            .filter(|r| r.step <= step)
            .collect();
        tracing::info!("resumed from {} at step {step}", ck.display());
    }
    // --init seeds a fresh run only: a resumed run already holds the weights it started from
    // and trained on, and re-applying --init would discard that training.
    match (&args.init, &resume_from) {
        (Some(init), None) => {
            nets.init_from(init, &cfg, device)?;
            tracing::info!("initialised G and D from {}", init.display());
        }
        (Some(init), Some(_)) => tracing::info!(
            "resumed run: --init {} was applied when it started and is not applied again",
            init.display()
        ),
        (None, _) => {}
    }
    if !args.common.quiet {
        eprint!("{}\n{}", nets.g.summary(device), nets.d.summary(device));
    }
    write_atomic(&work.join("config.json"), &serde_json::to_vec_pretty(&cfg)?)?;

    // Real images of the trained classes, in [-1, 1], on the device.
    let (imgs, labels) = rebalance_nn::imageset_tensors(&set, device);
    let keep: Vec<i64> = (0..set.len() as i64)
        .filter(|&i| trained.contains(&set.labels[i as usize]))
        .collect();
    let keep_t = Tensor::from_slice(&keep).to_device(device);
    let real = rebalance_nn::to_unit_range(&imgs.index_select(0, &keep_t));
    let real_labels = labels.index_select(0, &keep_t);
    let by_class: Vec<Vec<i64>> = trained
        .iter()
        .map(|c| {
            (0..keep.len() as i64)
                .filter(|&i| set.labels[keep[i as usize] as usize] == *c)
                .collect()
        })
        .collect();

    // Fixed noise for the progress grids: one row per trained class (one row for dcgan).
    let grid_rows = if cfg.model.conditional() {
        trained.len() as i64
    } else {
        1
    };
    tch::manual_seed((args.common.seed ^ 0x5eed_f1ed) as i64);
    let fixed_z = Tensor::randn([grid_rows * GRID_COLS, cfg.z_dim], (Kind::Float, device));
    let fixed_y = Tensor::from_slice(
        &(0..grid_rows * GRID_COLS)
            .map(|i| {
                if cfg.model.conditional() {
                    trained[(i / GRID_COLS) as usize]
                } else {
                    trained[0]
                }
            })
            .collect::<Vec<_>>(),
    )
    .to_device(device);
    let real_rows: Vec<Tensor> = by_class
        .iter()
        .take(grid_rows as usize)
        .map(|ix| {
            real.index_select(
                0,
                &Tensor::from_slice(&ix[..ix.len().min(GRID_COLS as usize)]).to_device(device),
            )
        })
        .collect();
    let real_diversity = {
        let divs: Vec<f64> = real_rows
            .iter()
            .filter(|r| r.size()[0] >= 2)
            .map(|r| diversity(r, 1, r.size()[0]))
            .collect();
        divs.iter().sum::<f64>() / divs.len().max(1) as f64
    };
    if step == 0 {
        let pix: Vec<Vec<u8>> = real_rows.iter().map(rebalance_nn::to_u8_pixels).collect();
        write_grid(&work.join("samples/real.png"), &pix, &cfg)?;
    }

    let bar = rebalance_core::cli::progress(
        args.steps.saturating_sub(step),
        "training",
        args.common.quiet,
    );
    let show_lines = !args.common.quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut train_time = 0.0;
    let mut last_log = Instant::now();
    let mut d_zero_run = 0;
    let mut last_good_ckpt = resume_from.as_ref().map(|_| step);
    let steps_at_start = step;
    let mut failure: Option<String> = None;
    let b = args.batch;
    while step < args.steps {
        step += 1;
        let t0 = Instant::now();
        let mix = args.common.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
        tch::manual_seed(mix as i64);
        let mut rng = ChaCha8Rng::seed_from_u64(mix);
        let batch = |rng: &mut ChaCha8Rng| -> (Tensor, Tensor) {
            let idx: Vec<i64> = (0..b)
                .map(|_| {
                    if args.balanced && cfg.model.conditional() {
                        let c = &by_class[rng.random_range(0..by_class.len())];
                        c[rng.random_range(0..c.len())]
                    } else {
                        rng.random_range(0..keep.len() as i64)
                    }
                })
                .collect();
            let idx = Tensor::from_slice(&idx).to_device(device);
            (
                real.index_select(0, &idx),
                real_labels.index_select(0, &idx),
            )
        };
        let aug = |x: &Tensor| {
            if policy.is_empty() {
                x.shallow_clone()
            } else {
                diff_augment(x, &policy)
            }
        };

        // D (critic) steps; the last one's fake batch is reused for the G step.
        let mut out = (
            Tensor::new(),
            Tensor::new(),
            Tensor::new(),
            Tensor::new(),
            Tensor::new(),
        );
        let mut fake = Tensor::new();
        let mut y = Tensor::new();
        for k in 0..n_d {
            let (xr, yr) = batch(&mut rng);
            let z = Tensor::randn([b, cfg.z_dim], (Kind::Float, device));
            fake = if k + 1 == n_d {
                nets.g.forward_t(&z, &yr, true)
            } else {
                tch::no_grad(|| nets.g.forward_t(&z, &yr, true))
            };
            let d_real = nets.d.forward_t(&aug(&xr), &yr, true);
            let d_fake = nets.d.forward_t(&aug(&fake.detach()), &yr, true);
            let (l_real, l_fake, gp) = if cfg.model == GanKind::WganGp {
                let alpha = Tensor::rand([b, 1, 1, 1], (Kind::Float, device));
                let x_hat: Tensor = &alpha * &xr + (1.0 - &alpha) * fake.detach();
                let x_hat = x_hat.set_requires_grad(true);
                let d_hat = nets.d.forward_t(&x_hat, &yr, true);
                let grads = Tensor::run_backward(&[d_hat.sum(Kind::Float)], &[&x_hat], true, true)
                    .remove(0);
                let gp = (grads.view([b, -1]).norm_scalaropt_dim(2, [1], false) - 1.0)
                    .square()
                    .mean(Kind::Float);
                (-d_real.mean(Kind::Float), d_fake.mean(Kind::Float), gp)
            } else {
                (
                    bce(&d_real, args.label_smoothing),
                    bce(&d_fake, 0.0),
                    Tensor::zeros([], (Kind::Float, device)),
                )
            };
            let loss = &l_real + &l_fake + &gp * args.gp_lambda;
            nets.opt_d.zero_grad();
            loss.backward();
            nets.opt_d.step();
            out = (l_real, l_fake, gp, d_real.detach(), d_fake.detach());
            y = yr;
        }
        let d_g = nets.d.forward_t(&aug(&fake), &y, true);
        let g_loss = if cfg.model == GanKind::WganGp {
            -d_g.mean(Kind::Float)
        } else {
            bce(&d_g, 1.0)
        };
        nets.opt_g.zero_grad();
        g_loss.backward();
        nets.opt_g.step();
        if args.ema > 0.0 {
            nets.update_ema(args.ema, step);
        }
        let (l_real, l_fake, g_val) = (
            out.0.double_value(&[]),
            out.1.double_value(&[]),
            g_loss.double_value(&[]),
        );
        train_time += t0.elapsed().as_secs_f64();
        bar.inc(1);

        if !(l_real.is_finite() && l_fake.is_finite() && g_val.is_finite()) {
            failure.get_or_insert(format!(
                "step {step}: a loss is not finite (D real {l_real}, D fake {l_fake}, G {g_val}); training diverged, try lower learning rates"
            ));
        }
        if step % args.log_every == 0 || step == args.steps {
            let since = last_log.elapsed().as_secs_f64().max(1e-9);
            last_log = Instant::now();
            let logged = (step
                - rows
                    .last()
                    .map_or(steps_at_start, |r| r.step.max(steps_at_start)))
                as f64;
            let row = LossRow {
                step,
                d_loss_real: l_real,
                d_loss_fake: l_fake,
                g_loss: g_val,
                d_acc_real: out
                    .3
                    .gt(0.0)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[]),
                d_acc_fake: out
                    .4
                    .lt(0.0)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[]),
                gp: out.2.double_value(&[]),
                images_per_s: (logged * (b * n_d as i64) as f64 / since * 10.0).round() / 10.0,
            };
            let msg = format!(
                "step {step}/{}: D real {:.3} fake {:.3}, G {:.3}, D acc {:.2}/{:.2}, {:.0} img/s",
                args.steps,
                row.d_loss_real,
                row.d_loss_fake,
                row.g_loss,
                row.d_acc_real,
                row.d_acc_fake,
                row.images_per_s
            );
            bar.set_message(format!(
                "G {:.2} D {:.2}",
                row.g_loss,
                row.d_loss_real + row.d_loss_fake
            ));
            if show_lines {
                tracing::info!("{msg}");
            }
            // With one-sided smoothing the real loss cannot go below the target's entropy.
            let p = args.label_smoothing.clamp(1e-12, 1.0);
            let floor = if p < 1.0 {
                -(p * p.ln() + (1.0 - p) * (1.0 - p).ln())
            } else {
                0.0
            };
            if cfg.model != GanKind::WganGp && row.d_loss_real - floor + row.d_loss_fake < 0.01 {
                d_zero_run += 1;
                if d_zero_run == args.d_zero_patience {
                    failure.get_or_insert(format!(
                        "step {step}: D loss has been near 0 for {d_zero_run} log steps: D has won and G gets no gradient \
                         (try a lower --lr-d, more --diffaug ops, or --label-smoothing)"
                    ));
                }
            } else {
                d_zero_run = 0;
            }
            rows.push(row);
            write_losses(&work.join("losses.csv"), &rows)?;
        }
        if step % args.sample_every == 0 || step == args.steps {
            let samples = tch::no_grad(|| nets.sampler(args).forward_t(&fixed_z, &fixed_y, false));
            let div = diversity(&samples, grid_rows, GRID_COLS);
            // Judged only after a fifth of the run: a fresh G is not diverse yet.
            if real_diversity > 0.0 && step * 5 >= args.steps && div < 0.25 * real_diversity {
                failure.get_or_insert(format!(
                    "step {step}: sample diversity collapsed ({div:.3} against {real_diversity:.3} for real images): mode collapse"
                ));
            }
            let pix: Vec<Vec<u8>> = (0..grid_rows)
                .map(|r| rebalance_nn::to_u8_pixels(&samples.narrow(0, r * GRID_COLS, GRID_COLS)))
                .collect();
            write_grid(
                &work.join(format!("samples/step_{step:06}.png")),
                &pix,
                &cfg,
            )?;
        }
        if let Some(f) = &failure {
            tracing::warn!("{f}");
            if args.stop_on_failure {
                bar.finish_and_clear();
                match last_good_ckpt {
                    Some(s) => bail!("stopped on failure: {f}. The last good checkpoint (step {s}) is in {}; continue with --resume latest", work.display()),
                    None => bail!("stopped on failure: {f}. No checkpoint was written yet"),
                }
            }
            // Warn once per kind; keep going, but never checkpoint diverged weights.
            if !f.contains("not finite") {
                failure = None;
            }
        }
        let diverged = failure.as_deref().is_some_and(|f| f.contains("not finite"));
        if (step % args.checkpoint_every == 0 || step == args.steps) && !diverged {
            nets.save(&work, step, &cfg)?;
            last_good_ckpt = Some(step);
        }
    }
    bar.finish_and_clear();
    if let Some(f) = &failure {
        bail!("training diverged ({f}); no checkpoint of diverged weights was written");
    }
    if step == steps_at_start && !checkpoint_path(&work).exists() {
        nets.save(&work, step, &cfg)?;
    }
    finish(
        args,
        &cfg,
        &nets,
        &work,
        &out,
        &rows,
        &data,
        step,
        steps_at_start,
        train_time,
        started,
        device,
        n_d,
    )
}

impl Nets {
    fn sampler(&self, args: &TrainArgs) -> &Generator {
        if args.ema > 0.0 {
            &self.ema
        } else {
            &self.g
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    args: &TrainArgs,
    cfg: &GanConfig,
    nets: &Nets,
    work: &Path,
    out: &Path,
    rows: &[LossRow],
    data: &Path,
    step: u64,
    steps_at_start: u64,
    train_time: f64,
    started: Instant,
    device: Device,
    n_d: u32,
) -> Result<()> {
    // The model: the generator used for sampling (the EMA when enabled) plus its config.
    let g_vs = if args.ema > 0.0 {
        &nets.ema_vs
    } else {
        &nets.g_vs
    };
    let meta = HashMap::from([("config".to_string(), serde_json::to_string(cfg)?)]);
    write_atomic(
        &work.join("generator.safetensors"),
        &io::to_safetensors(&io::named_vars(g_vs, ""), meta)?,
    )?;
    let series = |f: fn(&LossRow) -> f64| {
        rows.iter()
            .map(|r| (r.step as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let svg = chart::lines_svg(
        "GAN losses",
        &[
            ("D loss real", series(|r| r.d_loss_real)),
            ("D loss fake", series(|r| r.d_loss_fake)),
            ("G loss", series(|r| r.g_loss)),
        ],
        "step",
        "loss",
    )?;
    write_atomic(&work.join("losses.svg"), svg.as_bytes())?;
    let trained_steps = step - steps_at_start;
    let mut m = Manifest::new(
        "gan-train",
        serde_json::to_value(args)?,
        &device_name(device),
        args.common.seed,
    );
    m.inputs.push(rebalance_core::FileRecord::of_file(
        data,
        &data.display().to_string(),
    )?);
    m.record_outputs(work)?;
    m.extra.insert("config".into(), serde_json::to_value(cfg)?);
    m.extra.insert(
        "trained_classes".into(),
        serde_json::json!(cfg
            .trained_classes
            .iter()
            .map(|&c| &cfg.classes[c as usize])
            .collect::<Vec<_>>()),
    );
    m.metrics.insert("steps".into(), serde_json::json!(step));
    m.metrics
        .insert("steps_this_run".into(), serde_json::json!(trained_steps));
    m.metrics.insert(
        "train_s".into(),
        serde_json::json!((train_time * 1000.0).round() / 1000.0),
    );
    if train_time > 0.0 {
        let ips = trained_steps as f64 * (args.batch * n_d as i64) as f64 / train_time;
        m.metrics.insert(
            "images_per_s".into(),
            serde_json::json!((ips * 10.0).round() / 10.0),
        );
    }
    if let Some(r) = rows.last() {
        m.metrics.insert("final".into(), serde_json::to_value(r)?);
    }
    m.finish(work, started)?;
    swap_into(work, out)?;
    println!(
        "gan-train: {} trained {} steps ({} this run) in {:.1} s; samples in {}/samples, generator {}/generator.safetensors",
        cfg.model,
        step,
        trained_steps,
        started.elapsed().as_secs_f64(),
        out.display(),
        out.display()
    );
    Ok(())
}

pub(crate) fn write_grid(path: &Path, rows: &[Vec<u8>], cfg: &GanConfig) -> Result<()> {
    let per = (cfg.channels * cfg.height * cfg.width) as usize;
    let cells: Vec<Vec<&[u8]>> = rows.iter().map(|r| r.chunks(per).collect()).collect();
    let png = grid::grid_png(
        &cells,
        cfg.channels as usize,
        cfg.height as usize,
        cfg.width as usize,
        grid::default_scale(cfg.height as usize),
    )?;
    write_atomic(path, &png)
}

fn write_losses(path: &Path, rows: &[LossRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    write_atomic(path, &w.into_inner()?)
}

fn read_losses(path: &Path) -> Result<Vec<LossRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    r.deserialize()
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))
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
