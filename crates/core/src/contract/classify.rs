//! `classify`'s files: the classifier `config.json`, `metrics.json`, `curves.csv`, and each
//! seed's `result.json`.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

pub use super::metrics::{confusion, mean_std, paired, ClassMetrics, Metrics};

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

/// The fields `classify` adds to its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyInfo {
    pub seeds: Vec<u64>,
    pub model: ClassifierKind,
}
