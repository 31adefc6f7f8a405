//! The training recipe: how classify draws, transforms and weighs its batches, resolved from
//! the flags, a named recipe (`--recipe`, `--candidates`) or the recipe another run chose
//! (`--recipe-from`), and the loss terms it implies.

use std::path::Path;

use anyhow::{bail, Context, Result};
use rebalance_core::contract::classify::{
    find_preset, Loss, OnlineAugment, Preset, RecipeSelection, Sampler, TrainingRecipe,
};
use rebalance_core::contract::read_json;
use rebalance_nn::transforms::Online;
use tch::{Device, Kind, Reduction, Tensor};
use tracing::warn;

use crate::sampler::Draws;
use crate::TrainArgs;

/// `recipes.json`, the file `--candidates` writes and `--recipe-from` reads.
pub use rebalance_core::contract::layout::file::RECIPES as RECIPES_JSON;

/// The choices a recipe makes before a training set fixes its epoch size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub augment: OnlineAugment,
    pub sampler: Sampler,
    pub loss: Loss,
    pub class_weighted: bool,
    pub mixup: f64,
    pub tau: f64,
}

impl Choice {
    pub fn of_preset(p: &Preset, tau: f64) -> Self {
        Self {
            augment: p.augment,
            sampler: p.sampler,
            loss: p.loss,
            class_weighted: p.class_weighted,
            mixup: p.mixup,
            tau,
        }
    }

    /// The flags, over the named recipe or the chosen one when there is one.
    pub fn of_args(args: &TrainArgs) -> Result<Self> {
        let base = if let Some(name) = &args.recipe {
            Self::of_preset(find_preset(name)?, args.tau)
        } else if let Some(dir) = &args.recipe_from {
            let chosen = chosen_recipe(dir)?;
            let r = &chosen.recipe;
            Self {
                augment: r.augment,
                sampler: r.sampler,
                loss: r.loss,
                class_weighted: r.class_weighted,
                mixup: r.mixup,
                tau: r.tau,
            }
        } else {
            Self {
                augment: OnlineAugment::None,
                sampler: Sampler::Uniform,
                loss: Loss::Ce,
                class_weighted: false,
                mixup: 0.0,
                tau: args.tau,
            }
        };
        Ok(Self {
            augment: args.augment.unwrap_or(base.augment),
            sampler: args.sampler.unwrap_or(base.sampler),
            loss: args.loss.unwrap_or(base.loss),
            class_weighted: args.class_weighted || base.class_weighted,
            mixup: args.mixup.unwrap_or(base.mixup),
            tau: base.tau,
        })
    }
}

/// `recipes.json` of a finished `--candidates` run in `dir`.
pub fn read_selection(dir: &Path) -> Result<RecipeSelection> {
    read_json(&dir.join(RECIPES_JSON))
}

/// The recipe `classify --candidates` chose in `dir`, with its name.
pub fn chosen_recipe(dir: &Path) -> Result<rebalance_core::contract::classify::RecipeResult> {
    let path = dir.join(RECIPES_JSON);
    let sel: RecipeSelection = read_json(&path).with_context(|| {
        format!(
            "--recipe-from {}: no recipe choice there (it is written by classify --candidates)",
            dir.display()
        )
    })?;
    sel.chosen().cloned().with_context(|| {
        format!(
            "{}: the chosen recipe `{}` is not among its candidates",
            path.display(),
            sel.chosen
        )
    })
}

/// A resolved recipe: the transform, the sampler over one training set, and the loss.
pub struct Recipe {
    pub online: Online,
    pub choice: Choice,
    pub draws: Draws,
    pub epoch_size: usize,
    /// Added to the logits in the loss (logit-adjusted, balanced-softmax), `[K]`.
    adjust: Option<Tensor>,
    /// Class weights of the loss, `[K]`.
    weights: Option<Tensor>,
}

impl Recipe {
    /// The recipe for a training set with `labels` (class indices below `k`) of `channels`
    /// channels.
    /// `pool`: the images the sampler draws from (indices into `labels`), every image when
    /// `None`; the prior and the class weights are the pool's.
    pub fn new(
        args: &TrainArgs,
        choice: Choice,
        labels: &[i64],
        pool: Option<&[i64]>,
        k: usize,
        channels: i64,
        device: Device,
    ) -> Result<Self> {
        check(args, &choice)?;
        let all: Vec<i64>;
        let pool = match pool {
            Some(p) => p,
            None => {
                all = (0..labels.len() as i64).collect();
                &all
            }
        };
        let online = Online::new(
            choice.augment,
            args.affine,
            args.elastic,
            args.max_shift,
            channels,
        );
        let draws = Draws::over(pool, labels, k, choice.sampler);
        let epoch_size = args
            .epoch_size
            .unwrap_or_else(|| draws.default_epoch_size());
        let mut counts = vec![0usize; k];
        for &i in pool {
            counts[labels[i as usize] as usize] += 1;
        }
        let n = pool.len().max(1) as f64;
        let log_prior: Vec<f64> = counts.iter().map(|&c| (c.max(1) as f64 / n).ln()).collect();
        let adjust = match choice.loss {
            Loss::Ce => None,
            Loss::LogitAdjusted => Some(log_prior.iter().map(|v| v * choice.tau).collect()),
            // log n_c = log prior + log N; the constant does not change the softmax.
            Loss::BalancedSoftmax => Some(log_prior),
        }
        .map(|v: Vec<f64>| {
            Tensor::from_slice(&v)
                .to_kind(Kind::Float)
                .to_device(device)
        });
        let weights = choice.class_weighted.then(|| {
            Tensor::from_slice(&class_weights(&counts))
                .to_kind(Kind::Float)
                .to_device(device)
        });
        Ok(Self {
            online,
            choice,
            draws,
            epoch_size,
            adjust,
            weights,
        })
    }

    /// The recipe as the contract records it.
    pub fn contract(&self) -> TrainingRecipe {
        TrainingRecipe {
            augment: self.choice.augment,
            ranges: self.online.ranges(),
            sampler: self.choice.sampler,
            epoch_size: self.epoch_size,
            loss: self.choice.loss,
            tau: match self.choice.loss {
                Loss::LogitAdjusted => self.choice.tau,
                Loss::BalancedSoftmax => 1.0,
                Loss::Ce => 0.0,
            },
            class_weighted: self.choice.class_weighted,
            mixup: self.choice.mixup,
            synthetic: None,
        }
    }

    /// The loss of `logits` against per-row targets `t` `[B, K]` with row weights `w` `[B]`
    /// (synthetic draws): Σ wᵢ·cᵢ·CE(tᵢ, zᵢ) / Σ wᵢ·cᵢ, cᵢ the class weight of the row's label
    /// `y`. With one-hot targets and unit weights it is [`Recipe::loss`].
    pub fn weighted_loss(&self, logits: &Tensor, y: &Tensor, t: &Tensor, w: &Tensor) -> Tensor {
        let z = match &self.adjust {
            Some(a) => logits + a,
            None => logits.shallow_clone(),
        };
        let ce = -(t * z.log_softmax(-1, Kind::Float)).sum_dim_intlist(1, false, Kind::Float);
        let w = match &self.weights {
            Some(cw) => w * cw.index_select(0, y),
            None => w.shallow_clone(),
        };
        (ce * &w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1e-12)
    }

    /// The training loss of `logits` against `labels` (mean over the batch).
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        let z = match &self.adjust {
            Some(a) => logits + a,
            None => logits.shallow_clone(),
        };
        z.cross_entropy_loss(labels, self.weights.as_ref(), Reduction::Mean, -100, 0.0)
    }
}

/// Refuse values that cannot train.
fn check(args: &TrainArgs, c: &Choice) -> Result<()> {
    if !(c.mixup >= 0.0 && c.mixup.is_finite()) {
        bail!("--mixup must be a number ≥ 0 (0 is off), not {}", c.mixup);
    }
    if !c.tau.is_finite() {
        bail!("--tau must be a finite number, not {}", c.tau);
    }
    if !(0.0..1.0).contains(&args.max_shift) {
        bail!("--max-shift must be in [0, 1), not {}", args.max_shift);
    }
    if args.epoch_size == Some(0) {
        bail!("--epoch-size must be at least 1");
    }
    let a = &args.affine;
    for (flag, v) in [
        ("--rotation", a.rotation),
        ("--shear", a.shear),
        ("--zoom", a.zoom),
        ("--shift", a.shift),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{flag} must be a number ≥ 0, not {v}");
        }
    }
    if a.zoom >= 1.0 {
        bail!(
            "--zoom must be below 1 (a factor of 1 - zoom must stay positive), not {}",
            a.zoom
        );
    }
    if c.class_weighted && c.sampler != Sampler::Uniform {
        warn!(
            "--class-weighted with --sampler {}: the sampler already balances the classes, so the weights count them twice",
            c.sampler
        );
    }
    Ok(())
}

/// Warn when the recipe `--recipe-from` names was trained with other ranges than these flags.
pub fn warn_if_ranges_differ(args: &TrainArgs, mine: &TrainingRecipe) -> Result<()> {
    let Some(dir) = &args.recipe_from else {
        return Ok(());
    };
    let theirs = chosen_recipe(dir)?.recipe;
    if theirs.augment == mine.augment && theirs.ranges != mine.ranges {
        warn!(
            "{}: the chosen recipe's ranges {:?} differ from this run's {:?} (--rotation, --shear, --zoom, --shift, --elastic, --max-shift)",
            dir.display(),
            theirs.ranges,
            mine.ranges
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> TrainArgs {
        let mut v = vec!["classify"];
        v.extend_from_slice(extra);
        crate::Cli::parse_from(v).args.train
    }

    fn recipe(extra: &[&str], labels: &[i64]) -> Recipe {
        let a = args(extra);
        Recipe::new(
            &a,
            Choice::of_args(&a).unwrap(),
            labels,
            None,
            2,
            1,
            Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn losses_on_hand_made_logits() {
        // Two classes, 3 and 1 images: prior (0.75, 0.25).
        let labels = [0i64, 0, 0, 1];
        let logits = Tensor::from_slice(&[2.0f32, 0.0]).view([1, 2]);
        let y = Tensor::from_slice(&[1i64]);
        let ce = |z: [f64; 2], yi: usize| {
            let lse = (z[0].exp() + z[1].exp()).ln();
            lse - z[yi]
        };
        let got = |r: &Recipe| r.loss(&logits, &y).double_value(&[]);
        let plain = recipe(&[], &labels);
        assert!((got(&plain) - ce([2.0, 0.0], 1)).abs() < 1e-6);
        let la = recipe(&["--loss", "logit-adjusted", "--tau", "2"], &labels);
        let adj = [2.0 + 2.0 * 0.75f64.ln(), 2.0 * 0.25f64.ln()];
        assert!(
            (got(&la) - ce(adj, 1)).abs() < 1e-5,
            "{} {}",
            got(&la),
            ce(adj, 1)
        );
        let bs = recipe(&["--loss", "balanced-softmax"], &labels);
        let adj = [2.0 + 3f64.ln(), 0.0];
        assert!((got(&bs) - ce(adj, 1)).abs() < 1e-5);
        assert_eq!(bs.contract().tau, 1.0);
        // Class weights N / (K n_c) = (4/6, 2): a one-sample batch's weighted mean is the plain loss.
        // The weighted form with one-hot targets and unit weights is the plain loss.
        let y2 = Tensor::from_slice(&[0i64, 1]);
        let z2 = Tensor::from_slice(&[2.0f32, 0.0, -1.0, 3.0]).view([2, 2]);
        let onehot = y2.one_hot(2).to_kind(Kind::Float);
        let ones = Tensor::ones([2], (Kind::Float, Device::Cpu));
        for r in [&plain, &la] {
            let a = r.loss(&z2, &y2).double_value(&[]);
            let b = r.weighted_loss(&z2, &y2, &onehot, &ones).double_value(&[]);
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        let w = recipe(&["--class-weighted"], &labels);
        let a = w.loss(&z2, &y2).double_value(&[]);
        let b = w.weighted_loss(&z2, &y2, &onehot, &ones).double_value(&[]);
        assert!((a - b).abs() < 1e-6, "{a} {b}");
        assert!((got(&w) - ce([2.0, 0.0], 1)).abs() < 1e-6);
        let two = Tensor::from_slice(&[2.0f32, 0.0, 2.0, 0.0]).view([2, 2]);
        let y2 = Tensor::from_slice(&[0i64, 1]);
        let want = (ce([2.0, 0.0], 0) * 4.0 / 6.0 + ce([2.0, 0.0], 1) * 2.0) / (4.0 / 6.0 + 2.0);
        assert!((w.loss(&two, &y2).double_value(&[]) - want).abs() < 1e-5);
    }

    #[test]
    fn presets_and_flags_combine() {
        let labels = [0i64, 0, 0, 1];
        let r = recipe(&["--recipe", "online"], &labels);
        assert_eq!(r.choice.augment, OnlineAugment::AffineElastic);
        assert_eq!(r.choice.sampler, Sampler::ClassBalanced);
        assert_eq!(r.epoch_size, 6, "2 classes × the largest count 3");
        let c = r.contract();
        assert_eq!(c.ranges.unwrap().elastic.unwrap().alpha, 34.0);
        assert_eq!(
            c.describe(),
            "online affine+elastic, class-balanced sampling"
        );
        let r = recipe(
            &[
                "--recipe",
                "online",
                "--sampler",
                "uniform",
                "--mixup",
                "0.4",
            ],
            &labels,
        );
        assert_eq!(r.choice.sampler, Sampler::Uniform);
        assert_eq!(r.epoch_size, 4, "one pass");
        assert_eq!(r.choice.mixup, 0.4);
        let r = recipe(&[], &labels);
        assert_eq!(r.contract().augment, OnlineAugment::None);
        assert!(r.contract().ranges.is_none());
        let a = args(&["--recipe", "nope"]);
        let e = Choice::of_args(&a).unwrap_err().to_string();
        assert!(
            e.contains("no recipe `nope`") && e.contains("online-mixup"),
            "{e}"
        );
        let a = args(&["--mixup=-1"]);
        let e = Recipe::new(
            &a,
            Choice::of_args(&a).unwrap(),
            &labels,
            None,
            2,
            1,
            Device::Cpu,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--mixup"), "{e}");
    }

    #[test]
    fn weights_are_inverse_frequency() {
        let w = class_weights(&[300, 10, 0]);
        assert!((w[0] - 310.0 / 600.0).abs() < 1e-12);
        assert!((w[1] - 310.0 / 20.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
    }
}
