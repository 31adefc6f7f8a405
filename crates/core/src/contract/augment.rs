//! `augment`'s `composition.json`: what the rebalanced training set is made of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one class of the output is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassComposition {
    pub real: usize,
    pub repeated: usize,
    pub classical: usize,
    pub synthetic: usize,
    /// Synthetic images of this class that were available.
    pub synthetic_available: usize,
    /// A synthetic strategy found no synthetic image of this class (the filter kept none),
    /// so the share meant for synthetic images was filled by classical transforms instead.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub classical_fallback: bool,
}

impl ClassComposition {
    pub fn total(&self) -> usize {
        self.real + self.repeated + self.classical + self.synthetic
    }
}

/// The ranges of the classical transforms (each symmetric: `r` draws from `[-r, r]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassicalRanges {
    /// Degrees.
    pub rotation: f64,
    /// Radians.
    pub shear: f64,
    /// Each axis scales by a factor in `[1 - zoom, 1 + zoom]`.
    pub zoom: f64,
    /// Fraction of width and height.
    pub shift: f64,
    pub hflip: bool,
    /// Elastic distortion after the affine transform, when on.
    #[serde(default)]
    pub elastic: Option<Elastic>,
}

/// Simard et al.'s elastic distortion: a random displacement field smoothed by a Gaussian of
/// width `sigma` pixels and scaled by `alpha` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Elastic {
    pub alpha: f64,
    pub sigma: f64,
}

/// Images of each kind over all classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub real: usize,
    pub repeated: usize,
    pub classical: usize,
    pub synthetic: usize,
    pub images: usize,
}

/// `composition.json`.
/// Missing fields read as empty, so a swapped-in program may write only what it knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Composition {
    /// `none`, `oversample`, `classical`, `synthetic` or `synthetic+classical`.
    pub strategy: String,
    /// Images per class the filled classes were brought to.
    pub target: usize,
    /// The real training set's path.
    pub train: String,
    /// The synthetic set's path, when one was used.
    pub synthetic: Option<String>,
    pub classical: ClassicalRanges,
    /// `real` or `real+synthetic`: where classical transforms take their source images.
    pub classical_from: String,
    pub classes: BTreeMap<String, ClassComposition>,
    pub totals: Totals,
}

/// `augmented/manifest.json` metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AugmentMetrics {
    pub n_images: usize,
    pub n_real: usize,
    pub n_synthetic: usize,
    pub n_classical: usize,
    pub n_repeated: usize,
}

/// The fields `augment` adds to its manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AugmentInfo {
    pub composition: BTreeMap<String, ClassComposition>,
}
