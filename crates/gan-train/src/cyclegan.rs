//! `gan-train --model cyclegan --from A --to B`: unpaired translation of class A into class B
//! (Zhu et al. 2017). Two ResNet generators (G_AB, G_BA) and two PatchGAN discriminators
//! (D_A, D_B) trained with the least-squares GAN loss, the cycle loss λ‖G_BA(G_AB(a)) − a‖₁
//! (and the other way), the identity loss λ·w‖G_AB(b) − b‖₁, a 50-image history pool per
//! discriminator, Adam(2e-4, 0.5, 0.999) and a learning rate that decays linearly to 0 over the
//! second half of the steps. Every step's randomness comes from (seed, step) and the pools are
//! in the checkpoint, so a resumed run continues exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rebalance_core::contract::gan::{CycleRow, LossRow};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::write_json;
use rebalance_core::tensorboard::SummaryWriter;
use rebalance_core::CONTRACT_VERSION;
use rebalance_nn::adam::Adam;
use rebalance_nn::models::cyclegan::{PatchDiscriminator, ResnetGenerator};
use rebalance_nn::train::cadence::{self, Hooks, Steps};
use rebalance_nn::train::{checkpoint, CsvLog, Failure};
use tch::{nn::VarStore, Kind, Reduction, Tensor};

use crate::args::CycleganArgs;
use crate::output::{finish_with, write_grid};
use crate::plan::{check_architecture, checkpoint_path, Plan};

/// Images per row of the progress grids.
const GRID: i64 = 8;

/// Generated images from earlier steps (Shrivastava et al. 2017): once full, each new image
/// is, with probability ½, swapped for a random stored one, which D then sees instead.
struct Pool {
    /// `[size, C, H, W]`, a variable of the pool store so checkpoints hold it.
    buf: Tensor,
    len: usize,
    size: usize,
}

impl Pool {
    fn query(&mut self, fake: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
        if self.size == 0 {
            return fake.shallow_clone();
        }
        tch::no_grad(|| {
            let out: Vec<Tensor> = (0..fake.size()[0])
                .map(|i| {
                    let img = fake.get(i);
                    if self.len < self.size {
                        self.buf.get(self.len as i64).copy_(&img);
                        self.len += 1;
                        img
                    } else if rng.random::<f64>() < 0.5 {
                        let j = rng.random_range(0..self.size) as i64;
                        let old = self.buf.get(j).copy();
                        self.buf.get(j).copy_(&img);
                        old
                    } else {
                        img
                    }
                })
                .collect();
            Tensor::stack(&out, 0)
        })
    }
}

struct Nets {
    g_vs: VarStore,
    d_vs: VarStore,
    pool_vs: VarStore,
    g_ab: ResnetGenerator,
    g_ba: ResnetGenerator,
    d_a: PatchDiscriminator,
    d_b: PatchDiscriminator,
    opt_g: Adam,
    opt_d: Adam,
    pool_a: Pool,
    pool_b: Pool,
}

impl Nets {
    fn new(plan: &Plan, opts: &CycleganArgs) -> Result<Self> {
        let (cfg, args, device) = (&plan.cfg, &plan.args, plan.device);
        rebalance_nn::seed_everything(args.common.seed);
        let (c, side) = (cfg.channels, cfg.height);
        let g_vs = VarStore::new(device);
        let g_ab = ResnetGenerator::new(g_vs.root() / "g_ab", c, side, cfg.g_width)?;
        let g_ba = ResnetGenerator::new(g_vs.root() / "g_ba", c, side, cfg.g_width)?;
        let d_vs = VarStore::new(device);
        let d_a = PatchDiscriminator::new(d_vs.root() / "d_a", c, side, cfg.d_width);
        let d_b = PatchDiscriminator::new(d_vs.root() / "d_b", c, side, cfg.d_width);
        let pool_vs = VarStore::new(device);
        let shape = [opts.pool_size.max(1) as i64, c, side, side];
        let pool = |name: &str| Pool {
            buf: pool_vs.root().zeros_no_train(name, &shape),
            len: 0,
            size: opts.pool_size,
        };
        let (pool_a, pool_b) = (pool("a"), pool("b"));
        Ok(Self {
            opt_g: Adam::new(&g_vs, args.lr_g, args.beta1, args.beta2),
            opt_d: Adam::new(&d_vs, args.lr_d, args.beta1, args.beta2),
            g_vs,
            d_vs,
            pool_vs,
            g_ab,
            g_ba,
            d_a,
            d_b,
            pool_a,
            pool_b,
        })
    }

    fn save(&self, plan: &Plan, step: u64) -> Result<()> {
        let meta = HashMap::from([
            ("kind".to_string(), "gan-train checkpoint".to_string()),
            ("contract_version".to_string(), CONTRACT_VERSION.to_string()),
            ("step".to_string(), step.to_string()),
            ("config".to_string(), serde_json::to_string(&plan.cfg)?),
            ("pool_a_len".to_string(), self.pool_a.len.to_string()),
            ("pool_b_len".to_string(), self.pool_b.len.to_string()),
        ]);
        checkpoint::save(
            &checkpoint_path(&plan.work),
            &[
                ("g", &self.g_vs),
                ("d", &self.d_vs),
                ("pool", &self.pool_vs),
            ],
            &[("opt_g", &self.opt_g), ("opt_d", &self.opt_d)],
            meta,
        )
    }

    fn resume(&mut self, plan: &Plan, path: &Path) -> Result<u64> {
        let meta = checkpoint::load_checked(
            path,
            &[
                ("g", &self.g_vs),
                ("d", &self.d_vs),
                ("pool", &self.pool_vs),
            ],
            &mut [("opt_g", &mut self.opt_g), ("opt_d", &mut self.opt_d)],
            plan.device,
            |meta| check_architecture(meta, path, &plan.cfg, "--resume"),
        )?;
        for (key, pool) in [
            ("pool_a_len", &mut self.pool_a),
            ("pool_b_len", &mut self.pool_b),
        ] {
            let len: usize = checkpoint::meta_value(&meta, key, path)?;
            pool.len = len.min(pool.size);
        }
        checkpoint::meta_value(&meta, "step", path)
    }

    /// `--init`: the generators' and discriminators' weights of an earlier cyclegan run.
    fn init_from(&mut self, plan: &Plan, path: &Path) -> Result<()> {
        checkpoint::load_checked(
            path,
            &[("g", &self.g_vs), ("d", &self.d_vs)],
            &mut [],
            plan.device,
            |meta| check_architecture(meta, path, &plan.cfg, "--init"),
        )?;
        Ok(())
    }
}

/// The training images of A and B in [-1, 1], and the fixed images the grids translate.
struct Real {
    a: Tensor,
    b: Tensor,
    grid_a: Tensor,
    grid_b: Tensor,
}

impl Real {
    fn new(plan: &Plan) -> Self {
        let (imgs, _) = rebalance_nn::imageset_tensors(&plan.set, plan.device);
        let all = rebalance_nn::to_unit_range(&imgs);
        let of = |c: i64| {
            let ix: Vec<i64> = (0..plan.set.len() as i64)
                .filter(|&i| plan.set.labels[i as usize] == c)
                .collect();
            all.index_select(0, &Tensor::from_slice(&ix).to_device(plan.device))
        };
        let (a, b) = (
            of(plan.cfg.trained_classes[0]),
            of(plan.cfg.trained_classes[1]),
        );
        let first = |x: &Tensor| x.narrow(0, 0, GRID.min(x.size()[0]));
        Self {
            grid_a: first(&a),
            grid_b: first(&b),
            a,
            b,
        }
    }

    fn batch(x: &Tensor, n: i64, rng: &mut ChaCha8Rng) -> Tensor {
        let m = x.size()[0];
        let ix: Vec<i64> = (0..n).map(|_| rng.random_range(0..m)).collect();
        x.index_select(0, &Tensor::from_slice(&ix).to_device(x.device()))
    }
}

fn mse_to(x: &Tensor, target: f64) -> Tensor {
    x.mse_loss(&x.full_like(target), Reduction::Mean)
}

fn l1(x: &Tensor, y: &Tensor) -> Tensor {
    x.l1_loss(y, Reduction::Mean)
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

/// Constant for the first half of the run, then linearly down to 0 at the last step.
fn decayed(lr: f64, step: u64, steps: u64) -> f64 {
    let half = steps / 2;
    if step <= half || steps == half {
        lr
    } else {
        lr * (steps - step + 1) as f64 / (steps - half) as f64
    }
}

struct StepOut {
    loss: LossRow,
    cycle: CycleRow,
}

fn step(plan: &Plan, opts: &CycleganArgs, nets: &mut Nets, real: &Real, step: u64) -> StepOut {
    let args = &plan.args;
    let b = args.batch;
    let mix = args.common.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step;
    tch::manual_seed(mix as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(mix);
    nets.opt_g.lr = decayed(args.lr_g, step, args.steps);
    nets.opt_d.lr = decayed(args.lr_d, step, args.steps);
    let xa = Real::batch(&real.a, b, &mut rng);
    let xb = Real::batch(&real.b, b, &mut rng);
    let lambda = opts.cycle_weight;
    let w_id = lambda * opts.identity_weight;

    // Generators: fool both discriminators, and come back to where they started. The
    // discriminators are constants here (frozen), so this backward computes no gradient of
    // theirs, which their own update would zero unread.
    nets.opt_g.zero_grad();
    nets.d_vs.freeze();
    let fake_b = nets.g_ab.forward(&xa);
    let rec_a = nets.g_ba.forward(&fake_b);
    let fake_a = nets.g_ba.forward(&xb);
    let rec_b = nets.g_ab.forward(&fake_a);
    let adv = mse_to(&nets.d_b.forward(&fake_b), 1.0) + mse_to(&nets.d_a.forward(&fake_a), 1.0);
    let (cyc_a, cyc_b) = (l1(&rec_a, &xa), l1(&rec_b, &xb));
    let mut g_loss = &adv + (&cyc_a + &cyc_b) * lambda;
    let (mut id_a, mut id_b) = (0.0, 0.0);
    if w_id > 0.0 {
        let ia = l1(&nets.g_ba.forward(&xa), &xa);
        let ib = l1(&nets.g_ab.forward(&xb), &xb);
        id_a = value(&ia);
        id_b = value(&ib);
        g_loss = &g_loss + (ia + ib) * w_id;
    }
    g_loss.backward();
    nets.opt_g.step();
    nets.d_vs.unfreeze();

    // Discriminators: real against the pool's mix of new and older fakes.
    nets.opt_d.zero_grad();
    let pa = nets.pool_a.query(&fake_a.detach(), &mut rng);
    let pb = nets.pool_b.query(&fake_b.detach(), &mut rng);
    let (ra, rb) = (nets.d_a.forward(&xa), nets.d_b.forward(&xb));
    let (fa, fb) = (nets.d_a.forward(&pa), nets.d_b.forward(&pb));
    let d_real = (mse_to(&ra, 1.0) + mse_to(&rb, 1.0)) * 0.5;
    let d_fake = (mse_to(&fa, 0.0) + mse_to(&fb, 0.0)) * 0.5;
    (&d_real + &d_fake).backward();
    nets.opt_d.step();

    let frac = |t: &Tensor, real: bool| {
        let above = t.gt(0.5).to_kind(Kind::Float).mean(Kind::Float);
        let v = value(&above);
        if real {
            v
        } else {
            1.0 - v
        }
    };
    let acc = |a: &Tensor, b: &Tensor, real: bool| (frac(a, real) + frac(b, real)) / 2.0;
    StepOut {
        loss: LossRow {
            step,
            d_loss_real: value(&d_real),
            d_loss_fake: value(&d_fake),
            g_loss: value(&adv),
            d_acc_real: acc(&ra, &rb, true),
            d_acc_fake: acc(&fa, &fb, false),
            gp: 0.0,
            images_per_s: 0.0,
        },
        cycle: CycleRow {
            step,
            cycle_a: value(&cyc_a),
            cycle_b: value(&cyc_b),
            identity_a: id_a,
            identity_b: id_b,
        },
    }
}

/// Rows: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)).
fn grid_rows(nets: &Nets, real: &Real) -> Vec<Vec<u8>> {
    tch::no_grad(|| {
        let ab = nets.g_ab.forward(&real.grid_a);
        let aba = nets.g_ba.forward(&ab);
        let ba = nets.g_ba.forward(&real.grid_b);
        let bab = nets.g_ab.forward(&ba);
        [&real.grid_a, &ab, &aba, &real.grid_b, &ba, &bab]
            .iter()
            .map(|t| rebalance_nn::to_u8_pixels(t))
            .collect()
    })
}

/// The cyclegan loop's work at each point of its cadence.
struct Translate<'a> {
    plan: &'a Plan,
    opts: &'a CycleganArgs,
    nets: Nets,
    real: Real,
    losses: CsvLog<LossRow>,
    cycles: CsvLog<CycleRow>,
    tb: SummaryWriter,
    last_log: Instant,
    /// Images the generators translated since the last log step.
    images_since: usize,
}

impl Hooks for Translate<'_> {
    type Out = StepOut;

    fn step(&mut self, at: u64) -> StepOut {
        step(self.plan, self.opts, &mut self.nets, &self.real, at)
    }

    /// A loss that is not finite ends the run at once.
    fn after_step(
        &mut self,
        at: &Steps,
        out: &StepOut,
        bar: &ProgressBar,
    ) -> Result<Option<Failure>> {
        self.images_since += 2 * self.plan.args.batch as usize;
        let values = [
            out.loss.d_loss_real,
            out.loss.d_loss_fake,
            out.loss.g_loss,
            out.cycle.cycle_a,
            out.cycle.cycle_b,
        ];
        if values.iter().any(|v| !v.is_finite()) {
            bar.finish_and_clear();
            bail!(
                "cyclegan diverged at step {}: a loss is not finite (D real {}, D fake {}, G {}, cycle {} / {}); \
                 no checkpoint of these weights was written. Lower --lr-g/--lr-d, or resume from the last checkpoint with --resume latest",
                at.step, values[0], values[1], values[2], values[3], values[4]
            );
        }
        Ok(None)
    }

    fn log(&mut self, at: &Steps, out: &mut StepOut, bar: &ProgressBar) -> Result<Option<Failure>> {
        let args = &self.plan.args;
        out.loss.images_per_s =
            (self.images_since as f64 / self.last_log.elapsed().as_secs_f64().max(1e-9)).round();
        (self.images_since, self.last_log) = (0, Instant::now());
        bar.set_message(format!(
            "cycle {:.3}/{:.3}",
            out.cycle.cycle_a, out.cycle.cycle_b
        ));
        self.tb.row(&(&out.loss, &out.cycle))?;
        if args.common.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            tracing::info!(
                "step {}/{}: D real {:.3} fake {:.3}, G {:.3}, cycle A {:.4} B {:.4}",
                at.step,
                args.steps,
                out.loss.d_loss_real,
                out.loss.d_loss_fake,
                out.loss.g_loss,
                out.cycle.cycle_a,
                out.cycle.cycle_b
            );
        }
        self.losses.push(out.loss.clone())?;
        self.cycles.push(out.cycle.clone())?;
        Ok(None)
    }

    fn sample(&mut self, at: u64) -> Result<Option<Failure>> {
        let rows = grid_rows(&self.nets, &self.real);
        let png = write_grid(
            &self.plan.work.join(format!("samples/step_{at:06}.png")),
            &rows,
            &self.plan.cfg,
        )?;
        self.tb.png(at as i64, "samples", &png)?;
        Ok(None)
    }

    fn checkpoint(&mut self, at: u64) -> Result<()> {
        self.nets.save(self.plan, at)
    }
}

/// Train the cyclegan from where `prepare_work` said the run starts, then write it.
pub(crate) fn train(
    plan: &Plan,
    opts: &CycleganArgs,
    resume_from: Option<PathBuf>,
    started: Instant,
) -> Result<()> {
    let args = &plan.args;
    let mut nets = Nets::new(plan, opts)?;
    let at = match (&resume_from, &args.init) {
        (Some(ck), _) => {
            let s = nets.resume(plan, ck)?;
            tracing::info!("resumed from {} at step {s}", ck.display());
            s
        }
        (None, Some(init)) => {
            nets.init_from(plan, init)?;
            tracing::info!("initialised the cyclegan from {}", init.display());
            0
        }
        (None, None) => 0,
    };
    write_json(&plan.work.join(file::CONFIG), &plan.cfg)?;
    let real = Real::new(plan);
    let loss_path = plan.work.join(file::LOSSES);
    let cycle_path = plan.work.join(file::CYCLE);
    let (losses, cycles) = if resume_from.is_some() {
        (
            CsvLog::resume(&loss_path, |r: &LossRow| r.step <= at)?,
            CsvLog::resume(&cycle_path, |r: &CycleRow| r.step <= at)?,
        )
    } else {
        (CsvLog::create(&loss_path), CsvLog::create(&cycle_path))
    };
    let mut hooks = Translate {
        plan,
        opts,
        nets,
        real,
        losses,
        cycles,
        tb: SummaryWriter::create(&plan.work.join("tb"))?,
        last_log: Instant::now(),
        images_since: 0,
    };
    let mut steps = Steps::new(at, resume_from.is_some());
    cadence::run(
        &plan.loop_settings("training cyclegan"),
        &mut steps,
        &mut hooks,
    )?;
    write_grid(
        &plan.work.join("samples/translation.png"),
        &grid_rows(&hooks.nets, &hooks.real),
        &plan.cfg,
    )?;
    finish_with(
        plan,
        &hooks.nets.g_vs,
        hooks.losses.rows(),
        (steps.step, steps.at_start),
        steps.train_time,
        started,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_learning_rate_holds_then_falls_to_zero() {
        assert_eq!(decayed(1.0, 1, 100), 1.0);
        assert_eq!(decayed(1.0, 50, 100), 1.0);
        assert!((decayed(1.0, 51, 100) - 1.0).abs() < 1e-12);
        assert!((decayed(1.0, 100, 100) - 0.02).abs() < 1e-12);
        assert!(decayed(1.0, 75, 100) < decayed(1.0, 60, 100));
    }

    #[test]
    fn the_pool_fills_then_swaps_half_on_average() {
        let mut pool = Pool {
            buf: Tensor::zeros([4, 1, 2, 2], (Kind::Float, Device::Cpu)),
            len: 0,
            size: 4,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batch = |v: f64| Tensor::full([4, 1, 2, 2], v, (Kind::Float, Device::Cpu));
        // Filling: the new images come back and are stored.
        let out = pool.query(&batch(1.0), &mut rng);
        assert_eq!(pool.len, 4);
        assert_eq!(value(&out.mean(Kind::Float)), 1.0);
        // Full: some of the returned images are older ones (value 1), the rest new (value 2).
        let mut old = 0;
        for _ in 0..50 {
            let out = pool.query(&batch(2.0), &mut rng);
            old += (0..4)
                .filter(|&i| value(&out.get(i).mean(Kind::Float)) < 2.0)
                .count();
            let _ = pool.query(&batch(1.0), &mut rng);
        }
        assert!((50..150).contains(&old), "{old} of 200 came from the pool");
        // Size 0: no pool.
        let mut none = Pool {
            buf: Tensor::zeros([1, 1, 2, 2], (Kind::Float, Device::Cpu)),
            len: 0,
            size: 0,
        };
        assert_eq!(
            value(&none.query(&batch(3.0), &mut rng).mean(Kind::Float)),
            3.0
        );
    }
}
