//! Synthetic images as a capped share of their classes' draws (`--synthetic-share`), with
//! hard or soft (teacher) targets, a loss weight and a first epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::Rng;
use rebalance_core::contract::classify::{SyntheticLabels, SyntheticRecipe};
use rebalance_core::imageset::source;
use rebalance_core::ImageSet;
use rebalance_nn::models::Judge;
use tch::{Device, Kind, Tensor};

use crate::TrainArgs;

/// The synthetic pool of a training set and how draws take from it.
#[derive(Debug, Clone)]
pub struct SynPlan {
    pub share: f64,
    pub weight: f64,
    pub from_epoch: usize,
    pub labels: SyntheticLabels,
    pub temperature: f64,
    /// Teacher folders (soft labels).
    pub teachers: Vec<PathBuf>,
    /// Per class, the indices of its synthetic images in the training set.
    pub by_class: Vec<Vec<i64>>,
}

impl SynPlan {
    /// The plan for `set` (whose synthetic images its `source` marks), or `None` when
    /// `--synthetic-share` is not given.
    pub fn resolve(args: &TrainArgs, set: &ImageSet) -> Result<Option<Self>> {
        let Some(s) = args.synthetic_share else {
            return Ok(None);
        };
        if !(0.0..=1.0).contains(&s) {
            bail!("--synthetic-share must be between 0 and 1, not {s}");
        }
        if !(0.0..=1.0).contains(&args.synthetic_max_share) {
            bail!(
                "--synthetic-max-share must be between 0 and 1, not {}",
                args.synthetic_max_share
            );
        }
        if !(args.synthetic_weight >= 0.0 && args.synthetic_weight.is_finite()) {
            bail!(
                "--synthetic-weight must be a number ≥ 0, not {}",
                args.synthetic_weight
            );
        }
        if !(args.temperature > 0.0 && args.temperature.is_finite()) {
            bail!(
                "--temperature must be a positive number, not {}",
                args.temperature
            );
        }
        let share = s.min(args.synthetic_max_share);
        if share < s {
            tracing::warn!(
                "--synthetic-share {s} is above --synthetic-max-share {}: synthetic draws use {share}",
                args.synthetic_max_share
            );
        }
        let mut by_class = vec![Vec::new(); set.classes.len()];
        for i in 0..set.len() {
            if set.source_of(i) == source::SYNTHETIC {
                by_class[set.labels[i] as usize].push(i as i64);
            }
        }
        let teachers =
            match args.synthetic_labels {
                SyntheticLabels::Hard => Vec::new(),
                SyntheticLabels::Soft => {
                    let dir = args.teacher.as_ref().or(args.recipe_from.as_ref()).context(
                    "--synthetic-labels soft needs a teacher: --teacher DIR (or --recipe-from DIR)",
                )?;
                    teacher_dirs(dir)?
                }
            };
        Ok(Some(Self {
            share,
            weight: args.synthetic_weight,
            from_epoch: args.synthetic_from_epoch.max(1),
            labels: args.synthetic_labels,
            temperature: args.temperature,
            teachers,
            by_class,
        }))
    }

    /// The images of the synthetic pool.
    pub fn count(&self) -> usize {
        self.by_class.iter().map(Vec::len).sum()
    }

    /// Replace each draw of a class with synthetic images by one of them with probability
    /// `share` (from `from_epoch` on); `labels` are the training set's.
    pub fn swap(&self, draws: &mut [i64], labels: &[i64], epoch: usize, rng: &mut impl Rng) {
        if epoch < self.from_epoch || self.share <= 0.0 {
            return;
        }
        for d in draws.iter_mut() {
            let pool = &self.by_class[labels[*d as usize] as usize];
            if !pool.is_empty() && rng.random_bool(self.share) {
                *d = pool[rng.random_range(0..pool.len())];
            }
        }
    }

    /// The contract's record, with the training set's class names.
    pub fn contract(&self, classes: &[String]) -> SyntheticRecipe {
        SyntheticRecipe {
            share: self.share,
            weight: self.weight,
            from_epoch: self.from_epoch,
            labels: self.labels,
            temperature: self.temperature,
            teachers: self
                .teachers
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            per_class: classes
                .iter()
                .cloned()
                .zip(self.by_class.iter().map(Vec::len))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    /// Per image of the training set: its target `[N, K]` (one-hot; a synthetic image's the
    /// teacher's softmax under soft labels) and its loss weight `[N]`.
    pub fn targets(&self, set: &ImageSet, device: Device) -> Result<(Tensor, Tensor)> {
        let k = set.classes.len() as i64;
        let y = Tensor::from_slice(&set.labels).to_device(device);
        let mut t = y.one_hot(k).to_kind(Kind::Float);
        let syn: Vec<i64> = self.by_class.iter().flatten().copied().collect();
        let mut w = vec![1f32; set.len()];
        for &i in &syn {
            w[i as usize] = self.weight as f32;
        }
        if self.labels == SyntheticLabels::Soft && !syn.is_empty() {
            let idx = Tensor::from_slice(&syn).to_device(device);
            let (x, _) = rebalance_nn::imageset_tensors(set, device);
            let soft = soft_targets(
                &self.teachers,
                &x.index_select(0, &idx),
                self.temperature,
                device,
            )?;
            t = t.index_copy(0, &idx, &soft);
        }
        Ok((t, Tensor::from_slice(&w).to_device(device)))
    }
}

/// The folders of a teacher: the chosen recipe's seeds of a `--candidates` folder, else the
/// folder's own seeds, else the folder itself.
pub fn teacher_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let base = match crate::recipe::read_selection(dir) {
        Ok(sel) => dir.join("recipes").join(&sel.chosen),
        Err(_) => dir.to_path_buf(),
    };
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&base)
        .with_context(|| format!("reading the teacher folder {}", base.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
                && p.join("model.safetensors").is_file()
        })
        .collect();
    seeds.sort();
    if seeds.is_empty() {
        seeds.push(base);
    }
    Ok(seeds)
}

/// The mean over the teachers of softmax(logits / T) of u8 images `[N, C, H, W]`.
pub fn soft_targets(
    teachers: &[PathBuf],
    images_u8: &Tensor,
    t: f64,
    device: Device,
) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for dir in teachers {
        let j = Judge::load(dir, device)?;
        let logits = j
            .model
            .batched(images_u8, 512, |x| j.model.forward_t(x, false));
        let p = (logits / t).softmax(-1, Kind::Float);
        sum = Some(match sum {
            Some(s) => s + p,
            None => p,
        });
    }
    Ok(sum.context("no teacher")? / teachers.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn soft_targets_are_the_teachers_mean_softmax_at_t() {
        use rebalance_nn::models::{judge, Classifier, ClassifierConfig, ClassifierKind};
        let tmp = tempfile::tempdir().unwrap();
        let cfg = ClassifierConfig::new(
            ClassifierKind::Lenet5,
            1,
            28,
            28,
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap();
        let mut dirs = Vec::new();
        let x = Tensor::randint(256, [5, 1, 28, 28], (Kind::Uint8, Device::Cpu));
        let xf = rebalance_nn::to_unit_range(&x);
        let mut want = Tensor::zeros([5, 3], (Kind::Float, Device::Cpu));
        for s in 0..2 {
            tch::manual_seed(s);
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let m = Classifier::new(&vs.root(), &cfg);
            let dir = tmp.path().join(format!("seed-{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            judge::save(&dir, &vs, &cfg).unwrap();
            want += (tch::no_grad(|| m.forward_t(&xf, false)) / 2.5).softmax(-1, Kind::Float) / 2.0;
            dirs.push(dir);
        }
        assert_eq!(
            teacher_dirs(tmp.path()).unwrap(),
            dirs,
            "the folder's seeds are the teachers"
        );
        let got = soft_targets(&dirs, &x, 2.5, Device::Cpu).unwrap();
        assert!(got.allclose(&want, 1e-5, 1e-6, false), "{got} {want}");
        let rows = got.sum_dim_intlist(1, false, Kind::Float);
        assert!(rows.allclose(&rows.ones_like(), 1e-5, 1e-6, false));
    }

    #[test]
    fn the_share_of_synthetic_draws_is_s() {
        // Class 0: 100 real, class 1: 10 real + 50 synthetic.
        let mut labels = vec![0i64; 100];
        labels.extend([1; 60]);
        let mut by_class = vec![Vec::new(), Vec::new()];
        by_class[1] = (110..160).collect();
        let plan = SynPlan {
            share: 0.3,
            weight: 1.0,
            from_epoch: 2,
            labels: SyntheticLabels::Hard,
            temperature: 1.0,
            teachers: Vec::new(),
            by_class,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // 10,000 draws of class 1's real images.
        let mut draws: Vec<i64> = (0..10_000).map(|i| 100 + (i % 10)).collect();
        plan.swap(&mut draws, &labels, 1, &mut rng);
        assert!(
            draws.iter().all(|&d| d < 110),
            "epoch 1 is before --synthetic-from-epoch 2"
        );
        plan.swap(&mut draws, &labels, 2, &mut rng);
        let syn = draws.iter().filter(|&&d| d >= 110).count() as f64 / 1e4;
        assert!((syn - 0.3).abs() < 0.015, "{syn}");
        // Class 0 has no synthetic images: its draws stay real.
        let mut zero: Vec<i64> = (0..1000)
            .collect::<Vec<i64>>()
            .iter()
            .map(|i| i % 100)
            .collect();
        plan.swap(&mut zero, &labels, 2, &mut rng);
        assert!(zero.iter().all(|&d| d < 100));
    }
}
