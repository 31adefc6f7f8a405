//! The training loop, checkpoints with exact resume, and failure detection.
//!
//! Exact resume: at the start of every step libtorch's generator and the batch sampler are
//! seeded from (seed, step), so the random state is a function of the step and needs no
//! saving. A checkpoint holds G, D, the EMA of G, both Adam states and the step; a run
//! stopped at step k and resumed reaches bit-identical weights at step n on the CPU.
//!
//! The job module resolves the [`Plan`] and where the run starts; [`train`] builds the networks
//! and runs the loop skeleton of [`rebalance_nn::train::cadence`] with this loop's hooks
//! ([`Adversarial`]), then writes the output folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rebalance_core::contract::gan::LossRow;
use rebalance_core::contract::layout::file;
use rebalance_core::contract::write_json;
use rebalance_core::tensorboard::SummaryWriter;
use rebalance_core::{ImageSet, CONTRACT_VERSION};
use rebalance_nn::models::{Discriminator, GanConfig, GanKind, Generator, Network};
use rebalance_nn::train::cadence::{self, Hooks, Steps};
use rebalance_nn::train::{checkpoint, CsvLog, Failure, FailureMonitor};
use rebalance_nn::{adam::Adam, io, quality};
use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};

use crate::args::{GanLoss, MsCap, TrainArgs};
use crate::diffaug::diff_augment;
use crate::output::{finish_with, write_grid};
use crate::plan::{check_architecture, checkpoint_path, Plan};

/// Samples shown per class in the progress grids.
const GRID_COLS: i64 = 8;

struct Nets {
    g_vs: VarStore,
    d_vs: VarStore,
    ema_vs: VarStore,
    g: Generator,
    d: Discriminator,
    ema: Generator,
    opt_g: Adam,
    opt_d: Adam,
    /// The EMA's tensors and G's, matched by name once (parallel lists).
    ema_pairs: (Vec<Tensor>, Vec<Tensor>),
    /// Sample from the EMA copy of G (when `--ema` > 0).
    use_ema: bool,
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
        let mut opt_g = Adam::new(&g_vs, args.lr_g, args.beta1, args.beta2);
        if args.cbn_lr_mult != 1.0 {
            // Class-conditional batch norm's per-class γ and β (`…/gamma.weight`, `…/beta.weight`).
            opt_g.set_lr_mult(
                |name| name.ends_with("gamma.weight") || name.ends_with("beta.weight"),
                args.cbn_lr_mult,
            );
        }
        let opt_d = Adam::new(&d_vs, args.lr_d, args.beta1, args.beta2);
        let ema_pairs = io::named_vars(&ema_vs, "")
            .into_iter()
            .zip(io::named_vars(&g_vs, ""))
            .map(|((_, e), (_, s))| (e, s))
            .unzip();
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
            use_ema: args.ema > 0.0,
        })
    }

    fn save(&self, dir: &Path, step: u64, cfg: &GanConfig) -> Result<()> {
        let meta = HashMap::from([
            ("kind".to_string(), "gan-train checkpoint".to_string()),
            ("contract_version".to_string(), CONTRACT_VERSION.to_string()),
            ("step".to_string(), step.to_string()),
            ("config".to_string(), serde_json::to_string(cfg)?),
        ]);
        checkpoint::save(
            &checkpoint_path(dir),
            &[("g", &self.g_vs), ("d", &self.d_vs), ("ema", &self.ema_vs)],
            &[("opt_g", &self.opt_g), ("opt_d", &self.opt_d)],
            meta,
        )
    }

    /// Load a full checkpoint; returns its step.
    fn resume(&mut self, path: &Path, cfg: &GanConfig, device: Device) -> Result<u64> {
        let meta = checkpoint::load_checked(
            path,
            &[("g", &self.g_vs), ("d", &self.d_vs), ("ema", &self.ema_vs)],
            &mut [("opt_g", &mut self.opt_g), ("opt_d", &mut self.opt_d)],
            device,
            |meta| check_architecture(meta, path, cfg, "--resume"),
        )?;
        checkpoint::meta_value(&meta, "step", path)
    }

    /// Take G's and D's weights from an earlier run (`--init`): step 0, fresh optimizers.
    fn init_from(&mut self, path: &Path, cfg: &GanConfig, device: Device) -> Result<()> {
        checkpoint::load_checked(
            path,
            &[("g", &self.g_vs), ("d", &self.d_vs)],
            &mut [],
            device,
            |meta| check_architecture(meta, path, cfg, "--init"),
        )?;
        self.ema_vs.copy(&self.g_vs)?;
        Ok(())
    }

    /// Resume the interrupted run, or start fresh (from `--init` when given); the first step.
    /// A resumed run never re-applies `--init`: it already holds the weights it started from
    /// and trained on.
    fn start(&mut self, plan: &Plan, resume_from: Option<&Path>) -> Result<u64> {
        let (cfg, device) = (&plan.cfg, plan.device);
        match (resume_from, &plan.args.init) {
            (Some(ck), init) => {
                let step = self.resume(ck, cfg, device)?;
                tracing::info!("resumed from {} at step {step}", ck.display());
                if let Some(init) = init {
                    tracing::info!(
                        "resumed run: --init {} was applied when it started and is not applied again",
                        init.display()
                    );
                }
                Ok(step)
            }
            (None, Some(init)) => {
                self.init_from(init, cfg, device)?;
                tracing::info!("initialised G and D from {}", init.display());
                Ok(0)
            }
            (None, None) => Ok(0),
        }
    }

    /// EMA update with a warm-up, so early samples are not dominated by the initial weights.
    fn update_ema(&mut self, decay: f64, step: u64) {
        let d = decay.min((1.0 + step as f64) / (10.0 + step as f64));
        let (ema, g) = &self.ema_pairs;
        rebalance_nn::ops::foreach_lerp(ema, g, 1.0 - d); // e = d e + (1-d) g
    }

    /// The generator samples come from (the EMA when enabled).
    fn sampler(&self) -> &Generator {
        if self.use_ema {
            &self.ema
        } else {
            &self.g
        }
    }

    fn sampler_vs(&self) -> &VarStore {
        if self.use_ema {
            &self.ema_vs
        } else {
            &self.g_vs
        }
    }
}

/// The real images of the trained classes on the device, and what the progress grids need.
struct Real {
    /// Images in [-1, 1] and their labels.
    images: Tensor,
    labels: Tensor,
    /// Per trained class, the indices of its images in `images`.
    by_class: Vec<Vec<i64>>,
    /// Per image in `images`, its class's position in `by_class`.
    class_pos: Vec<usize>,
    /// One grid row per class shown: the trained classes (one row for dcgan), and for dagan
    /// also the classes it is applied to.
    grid_rows: i64,
    fixed_z: Tensor,
    fixed_y: Tensor,
    /// DAGAN: each grid row's source image, repeated along the row.
    fixed_x: Option<Tensor>,
    /// Up to GRID_COLS real images per grid row, and their mean diversity (pixels in [0, 1]).
    rows: Vec<Tensor>,
    diversity: f64,
    /// Per label, the mean absolute pixel difference between two real images of that class
    /// ([-1, 1] units; 0 for classes not trained): the cap of the mode-seeking term.
    l1_by_label: Tensor,
}

/// A real batch: images and labels, and for dagan the same-class partner each image is paired
/// with (the source G varies).
struct Batch {
    x: Tensor,
    y: Tensor,
    src: Option<Tensor>,
}

impl Real {
    fn new(plan: &Plan) -> Self {
        let (set, cfg, device) = (&plan.set, &plan.cfg, plan.device);
        let trained = &cfg.trained_classes;
        let (imgs, labels) = rebalance_nn::imageset_tensors(set, device);
        let all = rebalance_nn::to_unit_range(&imgs);
        let keep: Vec<i64> = (0..set.len() as i64)
            .filter(|&i| trained.contains(&set.labels[i as usize]))
            .collect();
        let keep_t = Tensor::from_slice(&keep).to_device(device);
        let images = all.index_select(0, &keep_t);
        let by_class: Vec<Vec<i64>> = trained
            .iter()
            .map(|c| {
                (0..keep.len() as i64)
                    .filter(|&i| set.labels[keep[i as usize] as usize] == *c)
                    .collect()
            })
            .collect();
        let class_pos = keep
            .iter()
            .map(|&i| {
                let y = set.labels[i as usize];
                trained.iter().position(|&c| c == y).expect("kept")
            })
            .collect();
        let shown = grid_classes(set, cfg);
        let grid_rows = shown.len() as i64;
        tch::manual_seed((plan.args.common.seed ^ 0x5eed_f1ed) as i64);
        let fixed_z = Tensor::randn([grid_rows * GRID_COLS, cfg.z_dim], (Kind::Float, device));
        let fixed_y: Vec<i64> = (0..grid_rows * GRID_COLS)
            .map(|i| shown[(i / GRID_COLS) as usize])
            .collect();
        // Up to GRID_COLS real images of each shown class, from the whole set.
        let rows: Vec<Tensor> = shown
            .iter()
            .map(|c| {
                let ix: Vec<i64> = (0..set.len() as i64)
                    .filter(|&i| set.labels[i as usize] == *c)
                    .take(GRID_COLS as usize)
                    .collect();
                all.index_select(0, &Tensor::from_slice(&ix).to_device(device))
            })
            .collect();
        let fixed_x = cfg.model.image_conditioned().then(|| {
            let firsts: Vec<Tensor> = rows
                .iter()
                .map(|r| r.narrow(0, 0, 1).expand([GRID_COLS, -1, -1, -1], false))
                .collect();
            Tensor::cat(&firsts, 0)
        });
        let divs: Vec<f64> = rows
            .iter()
            .filter_map(|r| quality::diversity(&((r + 1.0) / 2.0)))
            .collect();
        let mut l1 = vec![0f32; cfg.classes.len()];
        for (c, ix) in trained.iter().zip(&by_class) {
            let ix = &ix[..ix.len().min(64)];
            let x = images.index_select(0, &Tensor::from_slice(ix).to_device(device));
            l1[*c as usize] = mean_pairwise_l1(&x) as f32;
        }
        Self {
            labels: labels.index_select(0, &keep_t),
            images,
            by_class,
            class_pos,
            grid_rows,
            fixed_z,
            fixed_y: Tensor::from_slice(&fixed_y).to_device(device),
            fixed_x,
            rows,
            diversity: divs.iter().sum::<f64>() / divs.len().max(1) as f64,
            l1_by_label: Tensor::from_slice(&l1).to_device(device),
        }
    }

    /// A batch of real images and labels, class-balanced when asked (conditional models and
    /// dagan); for dagan each image comes with another image of its class as the source.
    fn batch(&self, plan: &Plan, rng: &mut ChaCha8Rng) -> Batch {
        let model = plan.cfg.model;
        let balanced = plan.args.balanced && (model.conditional() || model.image_conditioned());
        let n = self.images.size()[0];
        let mut idx = Vec::with_capacity(plan.args.batch as usize);
        let mut src = Vec::new();
        for _ in 0..plan.args.batch {
            let (pos, i) = if balanced {
                let pos = rng.random_range(0..self.by_class.len());
                let c = &self.by_class[pos];
                (pos, c[rng.random_range(0..c.len())])
            } else {
                let i = rng.random_range(0..n);
                (self.class_pos[i as usize], i)
            };
            idx.push(i);
            if model.image_conditioned() {
                // Another image of the class (dagan's classes have at least two).
                let c = &self.by_class[pos];
                let k = c.iter().position(|&j| j == i).expect("in class");
                let other = (k + 1 + rng.random_range(0..c.len() - 1)) % c.len();
                src.push(c[other]);
            }
        }
        let take = |ix: &[i64]| {
            self.images
                .index_select(0, &Tensor::from_slice(ix).to_device(plan.device))
        };
        Batch {
            x: take(&idx),
            y: self
                .labels
                .index_select(0, &Tensor::from_slice(&idx).to_device(plan.device)),
            src: model.image_conditioned().then(|| take(&src)),
        }
    }
}

/// The classes a progress grid shows, one row each: the trained ones (one pooled row for
/// dcgan), and for dagan also every other class with images, the ones it will be applied to.
fn grid_classes(set: &ImageSet, cfg: &GanConfig) -> Vec<i64> {
    let trained = &cfg.trained_classes;
    if cfg.model.image_conditioned() {
        let counts = set.counts();
        let mut v = trained.clone();
        v.extend(
            (0..counts.len() as i64).filter(|c| !trained.contains(c) && counts[*c as usize] > 0),
        );
        v
    } else if cfg.model.conditional() {
        trained.clone()
    } else {
        vec![trained[0]]
    }
}

/// G's images for noise `z`: from labels `y` (the embedding scaled by `cond`), or for dagan
/// from the source images `src`.
fn generate(
    g: &Generator,
    z: &Tensor,
    y: &Tensor,
    src: Option<&Tensor>,
    cond: f64,
    train: bool,
) -> Tensor {
    match src {
        Some(x) => g.forward_image(x, z, train),
        None => g.forward_scaled(z, y, cond, train),
    }
}

/// D's input: the image, or for dagan the (source, image) pair stacked along the channels.
fn d_input(src: Option<&Tensor>, x: &Tensor) -> Tensor {
    match src {
        Some(s) => Tensor::cat(&[s.shallow_clone(), x.shallow_clone()], 1),
        None => x.shallow_clone(),
    }
}

/// Mean absolute pixel difference over all pairs of images `[N, ...]` (0 for fewer than 2).
fn mean_pairwise_l1(x: &Tensor) -> f64 {
    let n = x.size()[0];
    if n < 2 {
        return 0.0;
    }
    let flat = x.reshape([n, -1]);
    let d = flat.size()[1] as f64;
    let sum = Tensor::cdist(&flat, &flat, 1.0, None::<i64>)
        .sum(Kind::Double)
        .double_value(&[]);
    sum / d / (n * (n - 1)) as f64
}

/// MSGAN's mode-seeking term for a fake batch whose first and second halves pair up (same
/// labels, different noise): mean over pairs of |z1 − z2| / min(|G(z1) − G(z2)|, cap), where the
/// cap is the real images' mean distance within the pair's class. Past the cap the term is
/// constant, so it never pushes G beyond real variety.
fn mode_seeking(fake: &Tensor, z: &Tensor, cap: &Tensor) -> Tensor {
    let h = fake.size()[0] / 2;
    let d_img = (fake.narrow(0, 0, h) - fake.narrow(0, h, h))
        .abs()
        .flatten(1, -1)
        .mean_dim(1, false, Kind::Float);
    let d_z = (z.narrow(0, 0, h) - z.narrow(0, h, h))
        .abs()
        .mean_dim(1, false, Kind::Float);
    (d_z / (d_img.minimum(cap) + 1e-5)).mean(Kind::Float)
}

fn bce(logits: &Tensor, target: f64) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &logits.full_like(target),
        None,
        None,
        Reduction::Mean,
    )
}

/// One step's losses and D outputs (the last D step's).
struct StepOut {
    l_real: f64,
    l_fake: f64,
    gp: Tensor,
    g_loss: f64,
    d_real: Tensor,
    d_fake: Tensor,
    /// A warm-up step: no D update.
    warmup: bool,
}

/// One training step: a warm-up step while `step` ≤ `--warmup-steps`, else `n_d` D (critic)
/// updates, then one G update on the last D step's fakes.
fn train_step(plan: &Plan, nets: &mut Nets, real: &Real, step: u64) -> StepOut {
    let args = &plan.args;
    let mix = args.common.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
    tch::manual_seed(mix as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(mix);
    let cond = args.transition.map_or(1.0, |t| t.scale(step));
    if step <= args.warmup_steps {
        return warmup_step(plan, nets, real, &mut rng, cond, step);
    }
    let mut last = None;
    for k in 0..plan.n_d {
        last = Some(d_step(plan, nets, real, &mut rng, cond, k + 1 == plan.n_d));
    }
    g_step(plan, nets, last.expect("n_d ≥ 1"), cond, step)
}

/// DiffAugment's ops on images before D (`--diffaug`).
fn augment(plan: &Plan, x: &Tensor) -> Tensor {
    if plan.policy.is_empty() {
        x.shallow_clone()
    } else {
        diff_augment(x, &plan.policy)
    }
}

/// With mode seeking, sample i pairs with sample i + b/2: the same label (and source), other
/// noise.
fn pair_up(plan: &Plan, t: &Tensor) -> Tensor {
    let b = plan.args.batch;
    if plan.args.mode_seeking > 0.0 {
        let h = b / 2;
        Tensor::cat(&[t.narrow(0, 0, h), t.narrow(0, 0, b - h)], 0)
    } else {
        t.shallow_clone()
    }
}

/// What one D update leaves for G's: its losses, D's outputs, and the fakes with their labels
/// (and sources), noise and mode-seeking caps.
struct DStep {
    losses: (Tensor, Tensor, Tensor),
    d_out: (Tensor, Tensor),
    fake: Tensor,
    y: Tensor,
    src: Option<Tensor>,
    z: Tensor,
    cap: Option<Tensor>,
}

/// One D (critic) update on a real batch and G's fakes; the fakes keep their graph when G's
/// update follows (`last`).
fn d_step(
    plan: &Plan,
    nets: &mut Nets,
    real: &Real,
    rng: &mut ChaCha8Rng,
    cond: f64,
    last: bool,
) -> DStep {
    let (args, cfg, device, b) = (&plan.args, &plan.cfg, plan.device, plan.args.batch);
    let mut real_b = real.batch(plan, rng);
    if let Some(online) = &plan.real_augment {
        let t = |x: &Tensor, rng: &mut ChaCha8Rng| {
            online.apply(&((x + 1.0) * 127.5), rng) / 127.5 - 1.0
        };
        real_b.x = t(&real_b.x, rng);
        real_b.src = real_b.src.as_ref().map(|s| t(s, rng));
    }
    let z = Tensor::randn([b, cfg.z_dim], (Kind::Float, device));
    let yg = pair_up(plan, &real_b.y);
    let src = real_b.src.as_ref().map(|s| pair_up(plan, s));
    let make = || generate(&nets.g, &z, &yg, src.as_ref(), cond, true);
    let fake = if last { make() } else { tch::no_grad(make) };
    let d_of = |src: Option<&Tensor>, x: &Tensor, y: &Tensor| {
        nets.d
            .forward_scaled(&augment(plan, &d_input(src, x)), y, cond, true)
    };
    let d_real = d_of(real_b.src.as_ref(), &real_b.x, &real_b.y);
    let d_fake = d_of(src.as_ref(), &fake.detach(), &yg);
    let (l_real, l_fake, gp) = if cfg.model == GanKind::WganGp {
        let gp = gradient_penalty(nets, &real_b.x, &fake, &real_b.y, cond);
        (-d_real.mean(Kind::Float), d_fake.mean(Kind::Float), gp)
    } else {
        let zero = Tensor::zeros([], (Kind::Float, device));
        match args.loss {
            GanLoss::Bce => (bce(&d_real, args.label_smoothing), bce(&d_fake, 0.0), zero),
            GanLoss::Hinge => (
                (-&d_real + 1.0).relu().mean(Kind::Float),
                (&d_fake + 1.0).relu().mean(Kind::Float),
                zero,
            ),
        }
    };
    let loss = &l_real + &l_fake + &gp * args.gp_lambda;
    nets.opt_d.zero_grad();
    loss.backward();
    nets.opt_d.step();
    // The mode-seeking cap of each pair (the first half of the batch).
    let cap = (args.mode_seeking > 0.0).then(|| {
        let h = b / 2;
        match (args.ms_cap, &real_b.src) {
            (MsCap::Source, Some(s)) => (real_b.x.narrow(0, 0, h) - s.narrow(0, 0, h))
                .abs()
                .flatten(1, -1)
                .mean_dim(1, false, Kind::Float),
            _ => real.l1_by_label.index_select(0, &yg.narrow(0, 0, h)),
        }
    });
    DStep {
        losses: (l_real, l_fake, gp),
        d_out: (d_real.detach(), d_fake.detach()),
        fake,
        y: yg,
        src,
        z,
        cap,
    }
}

/// G's update on the last D step's fakes: the adversarial loss, the mode-seeking term and the
/// auxiliary classifier's.
fn g_step(plan: &Plan, nets: &mut Nets, last: DStep, cond: f64, step: u64) -> StepOut {
    let args = &plan.args;
    let DStep {
        losses: (l_real, l_fake, gp),
        d_out: (d_real, d_fake),
        fake,
        y,
        src,
        z,
        cap,
    } = last;
    // D's weights are constants in G's update: frozen, so its backward computes only the
    // gradient that flows to G, not D's own (which D's next step would zero unread). G's
    // gradients are the same bits either way.
    nets.d_vs.freeze();
    let d_g = nets.d.forward_scaled(
        &augment(plan, &d_input(src.as_ref(), &fake)),
        &y,
        cond,
        true,
    );
    let mut g_loss = if plan.cfg.model == GanKind::WganGp || args.loss == GanLoss::Hinge {
        -d_g.mean(Kind::Float)
    } else {
        bce(&d_g, 1.0)
    };
    if let Some(cap) = &cap {
        g_loss += mode_seeking(&fake, &z, cap) * args.mode_seeking;
    }
    if args.ac_weight > 0.0 {
        let judge = plan
            .judge
            .as_ref()
            .expect("Plan::resolve loads the judge when --ac-weight > 0");
        let logits = judge.model.forward_t(&fake, false);
        g_loss += logits.cross_entropy_for_logits(&y) * args.ac_weight;
    }
    g_update(nets, &g_loss, args, step);
    nets.d_vs.unfreeze();
    StepOut {
        l_real: l_real.double_value(&[]),
        l_fake: l_fake.double_value(&[]),
        gp,
        g_loss: g_loss.double_value(&[]),
        d_real,
        d_fake,
        warmup: false,
    }
}

fn g_update(nets: &mut Nets, g_loss: &Tensor, args: &TrainArgs, step: u64) {
    nets.opt_g.zero_grad();
    g_loss.backward();
    nets.opt_g.step();
    if args.ema > 0.0 {
        nets.update_ema(args.ema, step);
    }
}

/// The warm-up (`--warmup-steps`): G alone, pulled towards the real images of each class in
/// the judge's feature space (per-class mean and standard deviation of the penultimate
/// features). D is not trained; the step logs zeros for D.
fn warmup_step(
    plan: &Plan,
    nets: &mut Nets,
    real: &Real,
    rng: &mut ChaCha8Rng,
    cond: f64,
    step: u64,
) -> StepOut {
    let judge = plan
        .judge
        .as_ref()
        .expect("Plan::resolve loads the judge when --warmup-steps > 0");
    let (cfg, device) = (&plan.cfg, plan.device);
    let real_b = real.batch(plan, rng);
    let z = Tensor::randn([plan.args.batch, cfg.z_dim], (Kind::Float, device));
    let fake = generate(&nets.g, &z, &real_b.y, real_b.src.as_ref(), cond, true);
    let f_fake = judge.model.features_t(&fake, false);
    let f_real = tch::no_grad(|| judge.model.features_t(&real_b.x, false));
    let k = cfg.classes.len() as i64;
    let loss = class_moment_distance(&f_fake, &f_real, &real_b.y, k);
    g_update(nets, &loss, &plan.args, step);
    let zero = Tensor::zeros([], (Kind::Float, device));
    StepOut {
        l_real: 0.0,
        l_fake: 0.0,
        gp: zero,
        g_loss: loss.double_value(&[]),
        d_real: Tensor::zeros([0], (Kind::Float, device)),
        d_fake: Tensor::zeros([0], (Kind::Float, device)),
        warmup: true,
    }
}

/// Mean over the classes present in `y` of the squared distance between the per-class mean
/// and standard deviation of features `a` and `b` (`[N, F]`, rows labelled by `y`).
pub(crate) fn class_moment_distance(a: &Tensor, b: &Tensor, y: &Tensor, classes: i64) -> Tensor {
    let onehot = y.one_hot(classes).to_kind(Kind::Float); // [N, K]
    let counts = onehot.sum_dim_intlist(0, false, Kind::Float); // [K]
    let present = counts.gt(0.0).to_kind(Kind::Float);
    let per = counts.clamp_min(1.0).unsqueeze(1);
    let moments = |f: &Tensor| {
        let mean = onehot.tr().mm(f) / &per;
        let sq = onehot.tr().mm(&f.square()) / &per;
        let std = ((sq - mean.square()).clamp_min(0.0) + 1e-6).sqrt();
        (mean, std)
    };
    let (ma, sa) = moments(a);
    let (mb, sb) = moments(b);
    let d = ((ma - mb).square() + (sa - sb).square()).sum_dim_intlist(1, false, Kind::Float);
    (d * &present).sum(Kind::Float) / present.sum(Kind::Float).clamp_min(1.0)
}

/// WGAN-GP's penalty: (‖∇D(x̂)‖ − 1)² on random interpolates of real and fake images.
fn gradient_penalty(nets: &Nets, xr: &Tensor, fake: &Tensor, y: &Tensor, cond: f64) -> Tensor {
    let b = xr.size()[0];
    let alpha = Tensor::rand([b, 1, 1, 1], (Kind::Float, xr.device()));
    let x_hat: Tensor = &alpha * xr + (1.0 - &alpha) * fake.detach();
    let x_hat = x_hat.set_requires_grad(true);
    let d_hat = nets.d.forward_scaled(&x_hat, y, cond, true);
    let grads = Tensor::run_backward(&[d_hat.sum(Kind::Float)], &[&x_hat], true, true).remove(0);
    (grads.view([b, -1]).norm_scalaropt_dim(2, [1], false) - 1.0)
        .square()
        .mean(Kind::Float)
}

/// The adversarial loop's work at each point of its cadence: the networks, the real images,
/// the logs and the failure monitor.
struct Adversarial<'a> {
    plan: &'a Plan,
    nets: &'a mut Nets,
    real: &'a Real,
    log: CsvLog<LossRow>,
    /// TensorBoard scalars (each losses.csv row) and images (the sample grids), `<out>/tb`.
    tb: SummaryWriter,
    monitor: FailureMonitor,
    last_log: Instant,
}

impl Hooks for Adversarial<'_> {
    type Out = StepOut;

    fn step(&mut self, step: u64) -> StepOut {
        train_step(self.plan, self.nets, self.real, step)
    }

    /// The time estimate after the first steps; non-finite losses.
    fn after_step(
        &mut self,
        at: &Steps,
        out: &StepOut,
        bar: &ProgressBar,
    ) -> Result<Option<Failure>> {
        let (args, step) = (&self.plan.args, at.step);
        let done = step - at.at_start;
        if done == ESTIMATE_AFTER.min(args.steps - at.at_start) && !args.common.quiet {
            let per_step = at.train_time / done as f64;
            bar.suspend(|| {
                for line in estimate(self.plan, done, per_step, args.steps - step) {
                    tracing::info!("{line}");
                }
            });
        }
        Ok(if out.warmup {
            None
        } else {
            self.monitor.step(step, out.l_real, out.l_fake, out.g_loss)
        })
    }

    /// The losses.csv row and its TensorBoard scalars; whether D has won.
    fn log(&mut self, at: &Steps, out: &mut StepOut, bar: &ProgressBar) -> Result<Option<Failure>> {
        let row = self.log_row(at, out);
        bar.set_message(format!(
            "G {:.2} D {:.2}",
            row.g_loss,
            row.d_loss_real + row.d_loss_fake
        ));
        let won = if out.warmup {
            None
        } else {
            self.monitor
                .logged(at.step, row.d_loss_real, row.d_loss_fake)
        };
        self.tb.row(&row)?;
        self.log.push(row)?;
        Ok(won)
    }

    fn sample(&mut self, step: u64) -> Result<Option<Failure>> {
        self.write_samples(step)
    }

    fn checkpoint(&mut self, step: u64) -> Result<()> {
        self.nets.save(&self.plan.work, step, &self.plan.cfg)
    }
}

/// Steps timed before the stage's time is estimated.
const ESTIMATE_AFTER: u64 = 20;

/// An estimate that takes longer than this on the CPU says how to make it shorter.
const LONG_S: f64 = 3600.0;

/// "35 s", "4 min 10 s", "2 h 05 min".
pub(crate) fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// What the first steps say about the whole stage: its time, and when that is over an hour on
/// the CPU, the flags that make it shorter.
fn estimate(plan: &Plan, done: u64, per_step: f64, left: u64) -> Vec<String> {
    let args = &plan.args;
    let mut lines = vec![format!(
        "estimate after {done} steps: {per_step:.2} s a step, so about {} for the {left} steps left of {}",
        duration_text(per_step * left as f64),
        args.steps
    )];
    if per_step * left as f64 > LONG_S && plan.device == tch::Device::Cpu {
        lines.push(format!(
            "that is over an hour on the CPU ({}x{} images, batch {}): fewer steps (--steps; in the pipeline -P steps=N), smaller images (ingest --size; -P size=HxW) or a GPU (--device cuda) shorten it",
            plan.cfg.height, plan.cfg.width, args.batch
        ));
    }
    lines
}

impl Adversarial<'_> {
    /// The `losses.csv` row of a log step (and its progress line when stderr is not a terminal).
    fn log_row(&mut self, at: &Steps, out: &StepOut) -> LossRow {
        let (plan, args) = (self.plan, &self.plan.args);
        let since = self.last_log.elapsed().as_secs_f64().max(1e-9);
        self.last_log = Instant::now();
        let last = self
            .log
            .rows()
            .last()
            .map_or(at.at_start, |r| r.step.max(at.at_start));
        let logged = (at.step - last) as f64;
        let rate = |t: &Tensor, positive: bool| {
            if t.numel() == 0 {
                return 0.0; // a warm-up step: D did not run
            }
            let hit = if positive { t.gt(0.0) } else { t.lt(0.0) };
            hit.to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
        };
        let row = LossRow {
            step: at.step,
            d_loss_real: out.l_real,
            d_loss_fake: out.l_fake,
            g_loss: out.g_loss,
            d_acc_real: rate(&out.d_real, true),
            d_acc_fake: rate(&out.d_fake, false),
            gp: out.gp.double_value(&[]),
            images_per_s: (logged * (args.batch * plan.n_d as i64) as f64 / since * 10.0).round()
                / 10.0,
        };
        if !args.common.quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let done = (at.step - at.at_start).max(1) as f64;
            let eta = at.train_time / done * args.steps.saturating_sub(at.step) as f64;
            tracing::info!(
            "step {}/{}: D real {:.3} fake {:.3}, G {:.3}, D acc {:.2}/{:.2}, {:.0} img/s, ETA {}",
            row.step,
            args.steps,
            row.d_loss_real,
            row.d_loss_fake,
            row.g_loss,
            row.d_acc_real,
            row.d_acc_fake,
            row.images_per_s,
            duration_text(eta)
        );
        }
        row
    }

    /// The fixed-noise sample grid of a sample step; a collapse when the samples' diversity is far
    /// below the real images'.
    fn write_samples(&mut self, step: u64) -> Result<Option<Failure>> {
        let (plan, nets, real) = (self.plan, &*self.nets, self.real);
        let samples = tch::no_grad(|| {
            generate(
                nets.sampler(),
                &real.fixed_z,
                &real.fixed_y,
                real.fixed_x.as_ref(),
                1.0,
                false,
            )
        });
        let per_row: Vec<f64> = (0..real.grid_rows)
            .filter_map(|r| {
                let row = samples.narrow(0, r * GRID_COLS, GRID_COLS);
                quality::diversity(&((row + 1.0) / 2.0))
            })
            .collect();
        let div = per_row.iter().sum::<f64>() / per_row.len().max(1) as f64;
        let pix: Vec<Vec<u8>> = (0..real.grid_rows)
            .map(|r| rebalance_nn::to_u8_pixels(&samples.narrow(0, r * GRID_COLS, GRID_COLS)))
            .collect();
        let path = plan.work.join(format!("samples/step_{step:06}.png"));
        let png = write_grid(&path, &pix, &plan.cfg)?;
        self.tb.png(step as i64, "samples", &png)?;
        self.tb
            .scalars(step as i64, &[("diversity/generated", div)])?;
        Ok(self
            .monitor
            .samples(step, plan.args.steps, div, real.diversity))
    }
}

/// Train one GAN adversarially from where `prepare_work` said the run starts, then write it.
pub(crate) fn train(plan: &Plan, resume_from: Option<PathBuf>, started: Instant) -> Result<()> {
    let args = &plan.args;
    let mut nets = Nets::new(&plan.cfg, args, plan.device)?;
    let step = nets.start(plan, resume_from.as_deref())?;
    if !args.common.quiet {
        eprint!(
            "{}\n{}",
            nets.g.summary(plan.device),
            nets.d.summary(plan.device)
        );
    }
    write_json(&plan.work.join(file::CONFIG), &plan.cfg)?;
    let real = Real::new(plan);
    if step == 0 {
        let pix: Vec<Vec<u8>> = real.rows.iter().map(rebalance_nn::to_u8_pixels).collect();
        write_grid(&plan.work.join("samples/real.png"), &pix, &plan.cfg)?;
    }
    let log_path = plan.work.join(file::LOSSES);
    let log = if resume_from.is_some() {
        CsvLog::resume(&log_path, |r: &LossRow| r.step <= step)?
    } else {
        CsvLog::create(&log_path)
    };
    let monitor = FailureMonitor::new(
        // Hinge's D loss, like unsmoothed BCE's, can reach 0.
        if args.loss == GanLoss::Hinge {
            1.0
        } else {
            args.label_smoothing
        },
        args.model == GanKind::WganGp,
        args.d_zero_patience,
    );
    let mut hooks = Adversarial {
        plan,
        nets: &mut nets,
        real: &real,
        log,
        tb: SummaryWriter::create(&plan.work.join("tb"))?,
        monitor,
        last_log: Instant::now(),
    };
    let mut at = Steps::new(step, resume_from.is_some());
    cadence::run(&plan.loop_settings("training"), &mut at, &mut hooks)?;
    // The generator used for sampling (the EMA when enabled).
    finish_with(
        plan,
        hooks.nets.sampler_vs(),
        hooks.log.rows(),
        (at.step, at.at_start),
        at.train_time,
        started,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(35.4), "35 s");
        assert_eq!(duration_text(250.0), "4 min 10 s");
        assert_eq!(duration_text(7500.0), "2 h 05 min");
    }

    #[test]
    fn class_moments_match_only_for_the_same_per_class_statistics() {
        let a = Tensor::from_slice(&[0f32, 0., 2., 2., 10., 10., 12., 12.]).view([4, 2]);
        let y = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let d = |b: &Tensor| class_moment_distance(&a, b, &y, 3).double_value(&[]);
        assert!(d(&a) < 1e-5);
        // The rows reordered within each class: the same statistics.
        let swapped = a.index_select(0, &Tensor::from_slice(&[1i64, 0, 3, 2]));
        assert!(d(&swapped) < 1e-5);
        // Class 1 collapsed onto its mean: same mean, no spread; costs the std term only.
        let collapsed = Tensor::from_slice(&[0f32, 0., 2., 2., 11., 11., 11., 11.]).view([4, 2]);
        let c = d(&collapsed);
        assert!((c - 1.0).abs() < 1e-2, "{c}");
        // Shifting class 0 by 3 in both features costs 18, averaged over the 2 classes present.
        let shifted = &a + Tensor::from_slice(&[3f32, 3., 3., 3., 0., 0., 0., 0.]).view([4, 2]);
        assert!((d(&shifted) - 9.0).abs() < 1e-3, "{}", d(&shifted));
    }
}
