//! `classify`'s files: the classifier `config.json`, `metrics.json`, `curves.csv`, and each
//! seed's `result.json`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::stats::mean_std;

pub use super::augment::ClassicalRanges;
pub use super::metrics::{confusion, ClassMetrics, Metrics};

/// Which classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierKind {
    /// LeNet-5 (LeCun 1998): 32×32 input (28×28 is padded), tanh, average pooling, 84-unit F6.
    Lenet5,
    /// Two conv+conv+max-pool blocks (32, 64 filters) and a 128-unit dense layer, for small sets.
    SmallCnn,
    /// A residual CNN (stages of basic blocks with batch norm, global pooling) for 32–128 px colour data.
    Resnet,
}

impl std::fmt::Display for ClassifierKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            self.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
    }
}

impl ClassifierKind {
    /// Width of the features layer (the judge's feature space) for images of this size.
    pub fn feature_dim(self, height: i64, width: i64) -> i64 {
        match self {
            ClassifierKind::Lenet5 => 84,
            ClassifierKind::SmallCnn => 128,
            ClassifierKind::Resnet if height.min(width) >= 64 => 256,
            ClassifierKind::Resnet => 128,
        }
    }
}

/// Everything needed to rebuild a classifier (`config.json` beside `model.safetensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    pub contract_version: String,
    pub model: ClassifierKind,
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub classes: Vec<String>,
    /// Width of the `features` layer.
    pub feature_dim: i64,
    /// How the network was trained (not needed to rebuild it); absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecipe>,
}

impl ClassifierConfig {
    pub fn new(
        model: ClassifierKind,
        channels: i64,
        height: i64,
        width: i64,
        classes: Vec<String>,
    ) -> Result<Self> {
        if channels != 1 && channels != 3 {
            bail!("images have {channels} channels; the classifiers take 1 or 3");
        }
        if height < 8 || width < 8 {
            bail!("images are {height}×{width}; the classifiers need at least 8×8");
        }
        if classes.len() < 2 {
            bail!(
                "a classifier needs at least 2 classes, the set has {}",
                classes.len()
            );
        }
        Ok(Self {
            contract_version: crate::CONTRACT_VERSION.to_string(),
            model,
            channels,
            height,
            width,
            classes,
            feature_dim: model.feature_dim(height, width),
            training: None,
        })
    }

    pub fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }
}

/// A row of `curves.csv`: one epoch of one seed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// The result of one seed (`seed-<s>/result.json`, and an entry of `metrics.json` `runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    /// Epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub train_s: f64,
    pub val: Metrics,
    pub test: Metrics,
}

/// Mean and standard deviation over seeds of every scalar test metric (see
/// [`Metrics::scalars`] for the keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: BTreeMap<String, f64>,
    pub std: BTreeMap<String, f64>,
}

impl MeanStd {
    /// Over the metrics of several seeds.
    pub fn of(runs: &[&Metrics]) -> Self {
        let scalars: Vec<BTreeMap<String, f64>> = runs.iter().map(|m| m.scalars()).collect();
        let mut out = Self::default();
        if let Some(first) = scalars.first() {
            for key in first.keys() {
                let vals: Vec<f64> = scalars.iter().map(|s| s[key]).collect();
                let (m, s) = mean_std(&vals);
                out.mean.insert(key.clone(), m);
                out.std.insert(key.clone(), s);
            }
        }
        out
    }

    /// `(mean, std)` of a metric, when present.
    pub fn get(&self, key: &str) -> Option<(f64, f64)> {
        let mean = *self.mean.get(key)?;
        Some((mean, self.std.get(key).copied().unwrap_or(0.0)))
    }
}

/// `metrics.json`: the test-split results of a classify run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierMetrics {
    pub classes: Vec<String>,
    pub model: ClassifierKind,
    /// The training set's path.
    pub train: String,
    pub train_counts: BTreeMap<String, usize>,
    /// The real data's rare classes (from the dataset's ingest manifest).
    pub rare_classes: Vec<String>,
    pub seeds: Vec<u64>,
    /// Over seeds, on the real test split.
    pub test: MeanStd,
    pub runs: Vec<SeedRun>,
    /// How the classifier was trained; absent in files older than `--augment`/`--sampler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<TrainingRecipe>,
}

impl ClassifierMetrics {
    /// The mean over `rare` of each class's test recall (mean over seeds).
    pub fn mean_rare_recall(&self, rare: &[String]) -> Option<f64> {
        if rare.is_empty() {
            return None;
        }
        let vals: Option<Vec<f64>> = rare
            .iter()
            .map(|c| self.test.mean.get(&format!("recall/{c}")).copied())
            .collect();
        vals.map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// `classify --augment`: the transform drawn afresh for every training image of every batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
pub enum OnlineAugment {
    /// No transform: the images as they are.
    #[default]
    #[value(name = "none")]
    #[serde(rename = "none")]
    None,
    /// A random affine transform (augment's ranges: --rotation, --shear, --zoom, --shift).
    #[value(name = "affine")]
    #[serde(rename = "affine")]
    Affine,
    /// The affine transform, then Simard's elastic distortion (--elastic).
    #[value(name = "affine+elastic")]
    #[serde(rename = "affine+elastic")]
    AffineElastic,
    /// A horizontal flip (p = 0.5) and a shift of whole pixels (--max-shift), background fill:
    /// for data whose mirror image keeps its class.
    #[value(name = "flip-shift")]
    #[serde(rename = "flip-shift")]
    FlipShift,
    /// TrivialAugment (torchvision's TrivialAugmentWide): one random operation per image.
    #[value(name = "trivial")]
    #[serde(rename = "trivial")]
    Trivial,
}

/// `classify --sampler`: how an epoch's draws are picked from the training set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// Shuffled passes over the set, without replacement.
    #[default]
    Uniform,
    /// A class uniformly, then one of its images (PyTorch's WeightedRandomSampler with weights 1/n_c).
    ClassBalanced,
    /// A class with probability ∝ √n_c, then one of its images.
    Sqrt,
}

/// `classify --loss`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Cross-entropy.
    #[default]
    Ce,
    /// Cross-entropy on logits + τ·log(prior), the prior being the training set's class
    /// frequencies (Menon et al. 2021); prediction uses the plain logits.
    LogitAdjusted,
    /// Balanced softmax (Ren et al. 2020): cross-entropy on logits + log(n_c). It equals the
    /// logit-adjusted loss at τ = 1.
    BalancedSoftmax,
}

macro_rules! display_by_value {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.to_possible_value().expect("no skipped variants").get_name())
            }
        }
    )*};
}
display_by_value!(OnlineAugment, Sampler, Loss, SyntheticLabels);

/// How a classifier was trained: `config.json` `training`, `metrics.json` `recipe`, and each
/// candidate of `recipes.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecipe {
    pub augment: OnlineAugment,
    /// The transform's ranges: affine and affine+elastic (with `elastic`), flip-shift (`shift`
    /// and `hflip` only); absent for none and trivial.
    #[serde(default)]
    pub ranges: Option<ClassicalRanges>,
    pub sampler: Sampler,
    /// Draws per epoch.
    pub epoch_size: usize,
    pub loss: Loss,
    /// The logit adjustment's τ (logit-adjusted only; balanced-softmax is τ = 1).
    #[serde(default)]
    pub tau: f64,
    /// Inverse-frequency class weights in the loss.
    #[serde(default)]
    pub class_weighted: bool,
    /// Mixup's α (0: off).
    #[serde(default)]
    pub mixup: f64,
    /// Synthetic images as a capped share of their classes' draws (`--synthetic-share`);
    /// absent when the training set is one pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticRecipe>,
}

/// `classify --synthetic-labels`: the targets synthetic images train with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SyntheticLabels {
    /// The generator's label, one-hot.
    #[default]
    Hard,
    /// The teacher's (the judge's seeds') mean softmax at temperature T.
    Soft,
}

/// How synthetic images enter training (`TrainingRecipe::synthetic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticRecipe {
    /// The chance that a draw of a class with synthetic images takes one of them.
    pub share: f64,
    /// Their loss weight.
    pub weight: f64,
    /// The first epoch (1-based) that draws them.
    pub from_epoch: usize,
    pub labels: SyntheticLabels,
    /// Softmax temperature of soft labels.
    pub temperature: f64,
    /// The teacher's folders (soft labels), one per judge seed.
    pub teachers: Vec<String>,
    /// Synthetic images per class.
    pub per_class: BTreeMap<String, usize>,
}

impl TrainingRecipe {
    /// In words: "online affine+elastic, class-balanced sampling".
    pub fn describe(&self) -> String {
        let mut parts = vec![match self.augment {
            OnlineAugment::None => "no transform".to_string(),
            OnlineAugment::Trivial => "online TrivialAugment".to_string(),
            a => format!("online {a}"),
        }];
        parts.push(match self.sampler {
            Sampler::Uniform => "uniform sampling".to_string(),
            Sampler::ClassBalanced => "class-balanced sampling".to_string(),
            Sampler::Sqrt => "square-root sampling".to_string(),
        });
        match self.loss {
            Loss::Ce => {}
            Loss::LogitAdjusted => parts.push(format!("logit-adjusted loss (τ {})", self.tau)),
            Loss::BalancedSoftmax => parts.push("balanced-softmax loss".into()),
        }
        if self.class_weighted {
            parts.push("class-weighted loss".into());
        }
        if self.mixup > 0.0 {
            parts.push(format!("mixup (α {})", self.mixup));
        }
        if let Some(s) = &self.synthetic {
            let mut syn = format!(
                "synthetic images as a {:.0}% share of their classes' draws",
                100.0 * s.share
            );
            if s.labels == SyntheticLabels::Soft {
                syn.push_str(&format!(" with soft teacher labels (T {})", s.temperature));
            }
            if s.weight != 1.0 {
                syn.push_str(&format!(", loss weight {}", s.weight));
            }
            if s.from_epoch > 1 {
                syn.push_str(&format!(", from epoch {}", s.from_epoch));
            }
            parts.push(syn);
        }
        parts.join(", ")
    }
}

/// Where a named recipe's training images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// The real training split (`--train`).
    Real,
    /// The real split with the rare classes grown by static classical copies (`augment
    /// --strategy classical`, passed as `--classical-train`).
    Classical,
}

/// A named training recipe: a pool and the way classify trains on it (`classify --recipe`,
/// `--candidates`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub pool: Pool,
    pub augment: OnlineAugment,
    pub sampler: Sampler,
    pub loss: Loss,
    pub class_weighted: bool,
    pub mixup: f64,
    /// What a practitioner would call it.
    pub about: &'static str,
}

impl Preset {
    /// Cross-entropy, no class weights, no mixup.
    const fn new(
        name: &'static str,
        pool: Pool,
        augment: OnlineAugment,
        sampler: Sampler,
        about: &'static str,
    ) -> Self {
        Self {
            name,
            pool,
            augment,
            sampler,
            loss: Loss::Ce,
            class_weighted: false,
            mixup: 0.0,
            about,
        }
    }

    const fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    const fn weighted(mut self) -> Self {
        self.class_weighted = true;
        self
    }

    const fn mixup(mut self, alpha: f64) -> Self {
        self.mixup = alpha;
        self
    }
}

/// Every named recipe. None uses synthetic images: these are the cheap alternatives.
pub const PRESETS: [Preset; 10] = {
    use OnlineAugment as A;
    use Pool::*;
    use Sampler::*;
    let p = Preset::new;
    [
        p("real", Real, A::None, Uniform, "the real split alone"),
        p(
            "balanced",
            Real,
            A::None,
            ClassBalanced,
            "class-balanced sampling with no transform (oversampling)",
        ),
        p(
            "class-weighted",
            Real,
            A::None,
            Uniform,
            "a class-weighted loss",
        )
        .weighted(),
        p(
            "classical",
            Classical,
            A::None,
            Uniform,
            "static classical copies of the rare classes",
        ),
        p(
            "online",
            Real,
            A::AffineElastic,
            ClassBalanced,
            "online affine+elastic with class-balanced sampling",
        ),
        p(
            "affine",
            Real,
            A::Affine,
            ClassBalanced,
            "online affine with class-balanced sampling",
        ),
        p(
            "flip-shift",
            Real,
            A::FlipShift,
            ClassBalanced,
            "online flip + shift with class-balanced sampling",
        ),
        p(
            "trivial",
            Real,
            A::Trivial,
            ClassBalanced,
            "online TrivialAugment with class-balanced sampling",
        ),
        p(
            "online-la",
            Real,
            A::AffineElastic,
            Uniform,
            "online affine+elastic with a logit-adjusted loss",
        )
        .loss(Loss::LogitAdjusted),
        p(
            "online-mixup",
            Real,
            A::AffineElastic,
            ClassBalanced,
            "online affine+elastic with class-balanced sampling and mixup",
        )
        .mixup(0.2),
    ]
};

/// The named recipe, or an error listing the names.
pub fn find_preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "there is no recipe `{name}`; the recipes are {}",
            PRESETS.map(|p| p.name).join(", ")
        )
    })
}

/// One candidate of `recipes.json`: its recipe and its results over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeResult {
    pub name: String,
    /// In words, as the verdict names it.
    pub about: String,
    /// The training set's path.
    pub train: String,
    pub recipe: TrainingRecipe,
    /// Over seeds, on the real validation split (the best epoch's): what the choice is made by.
    pub val: MeanStd,
    /// Over seeds, on the real test split: reported, never chosen by.
    pub test: MeanStd,
    pub seeds: Vec<u64>,
}

/// `recipes.json` of `classify --candidates`: every candidate, and the one chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeSelection {
    /// The chosen candidate's name (its outputs are the folder's top-level files).
    pub chosen: String,
    /// What the choice was made by: `val macro_f1` (mean over seeds; ties go to the earlier candidate).
    pub by: String,
    pub candidates: Vec<RecipeResult>,
}

impl RecipeSelection {
    pub fn chosen(&self) -> Option<&RecipeResult> {
        self.candidates.iter().find(|c| c.name == self.chosen)
    }
}

/// The fields `classify` adds to its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyInfo {
    pub seeds: Vec<u64>,
    pub model: ClassifierKind,
}
