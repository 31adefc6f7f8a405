//! `ingest`'s manifest fields: what the dataset is.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// ingest's default `--rare-below`.
pub const RARE_BELOW: f64 = 0.5;

/// The rare classes of the real data: those ingest recorded in the manifest of the dataset
/// folder `dir`, else (no manifest, or one of other classes) computed from `counts` with
/// ingest's default threshold.
pub fn rare_classes_of(dir: &Path, classes: &[String], counts: &[usize]) -> Vec<String> {
    crate::Manifest::read(dir)
        .ok()
        .and_then(|m| m.extra_as::<DatasetInfo>().ok())
        .map(|d| d.rare_classes)
        .filter(|r| r.iter().all(|c| classes.contains(c)))
        .unwrap_or_else(|| super::rare_classes(counts, classes, RARE_BELOW))
}

/// Images per class name.
pub type ClassCounts = BTreeMap<String, usize>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitCounts {
    pub train: ClassCounts,
    pub val: ClassCounts,
    pub test: ClassCounts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// A file ingest could not use, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// The fields `ingest` adds to `dataset/manifest.json` (flattened beside the common ones).
/// Missing fields read as empty, so a swapped-in program may write only what it knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetInfo {
    /// The input format that was read (`folder`, `csv`, `fer2013`, `idx`, `gtsrb`, …).
    pub format: String,
    pub classes: Vec<String>,
    pub counts: SplitCounts,
    pub image_shape: ImageShape,
    /// Train count below `--rare-below` × the median train count.
    pub rare_classes: Vec<String>,
    pub skipped: Vec<Skipped>,
    pub notes: Vec<String>,
    /// Splits ingest carved from the source's training images because the source has none of
    /// its own (`test`, `val`); empty when the source's splits were used or everything was split
    /// anew.
    pub carved_splits: Vec<String>,
}

/// `dataset/manifest.json` metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetMetrics {
    /// Largest train class over the smallest; null when a class has no train image.
    pub imbalance_ratio: Option<f64>,
    pub n_train: usize,
    pub n_val: usize,
    pub n_test: usize,
    pub n_skipped: usize,
    /// Seconds spent decoding images.
    pub decode_s: f64,
}
