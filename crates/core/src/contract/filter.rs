//! `filter`'s files: `scores.csv` (one row per generated image) and `acceptance.csv` (one row
//! per class, also the manifest's `per_class`), and the confidence gate its manifest's `params`
//! record.

use serde::{Deserialize, Serialize};

/// Why the gate kept or dropped an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Passed every rule.
    #[default]
    Kept,
    /// The judge's top class is not the intended one.
    WrongClass,
    /// The judge's confidence is below `--threshold`.
    BelowThreshold,
    /// The judge's confidence is above `--max-confidence` (a confidence band).
    AboveBand,
    /// A near-copy of a real training image, with `--drop-copies`.
    NearCopy,
    /// Beyond the `--top-k` most confident of its class.
    TopK,
    /// Beyond `--cap` of its class (a random subset is kept).
    Cap,
    /// Passed the gate, but `--select informative|diverse` chose others of its class.
    NotSelected,
}

/// The confidence band the judge's probability of an image's intended class must fall in for
/// the image to pass the gate: `filter`'s `--threshold` and `--max-confidence`, and the same
/// fields of its manifest's `params` (where the report reads them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ConfidenceGate {
    /// Keep an image when the judge gives its intended class at least this probability (and ranks it first).
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// Upper end of a confidence band: drop images the judge is more sure of than this.
    #[arg(long, default_value_t = 1.0)]
    pub max_confidence: f64,
}

/// `filter --select`: which of the images that pass the gate are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Select {
    /// All of them (or the `--top-k` most confident).
    #[default]
    Confident,
    /// Those a classifier trained on the real split alone is least sure of (the judge agrees
    /// on the class, the plain model does not yet know it): the informative ones.
    Informative,
    /// A greedy k-centre cover of them in the judge's feature space, so that near-duplicates
    /// of each other do not fill the quota.
    Diverse,
}

impl std::fmt::Display for Select {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        f.write_str(
            self.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
    }
}

impl Reason {
    pub fn kept(self) -> bool {
        self == Reason::Kept
    }
}

/// A row of `scores.csv`: one generated image and the gate's decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub index: usize,
    pub intended: String,
    pub predicted: String,
    /// The judge's top probability.
    pub confidence: f64,
    /// The judge's probability of the intended class.
    pub intended_prob: f64,
    pub nearest_real_distance: f64,
    pub nearest_real_index: i64,
    pub near_copy: bool,
    pub kept: bool,
    pub reason: Reason,
    /// `--select informative`: the real-only classifier's probability of the intended class.
    #[serde(default)]
    pub plain_prob: Option<f64>,
}

/// A row of `acceptance.csv`: per class, the gate's acceptance and the quality of the images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AcceptanceRow {
    pub class: String,
    pub generated: usize,
    pub kept: usize,
    pub acceptance: f64,
    /// Mean judge probability of the intended class.
    pub mean_confidence: f64,
    /// Judge-space Fréchet distance of all generated images to the real reference split.
    pub fd_generated: Option<f64>,
    /// The same for the kept images.
    pub fd_kept: Option<f64>,
    /// The same for the real train images: the floor a generator can hope for.
    pub fd_real_train: Option<f64>,
    pub near_copies: usize,
    pub near_copies_kept: usize,
    #[serde(deserialize_with = "super::nan_if_null")]
    pub median_nearest_real_distance: f64,
    /// Median distance of real reference images to their nearest train image.
    #[serde(deserialize_with = "super::nan_if_null")]
    pub median_real_reference_distance: f64,
    /// Mean pairwise RMS pixel distance (pixels in [0, 1]) within the class.
    pub diversity_generated: Option<f64>,
    pub diversity_kept: Option<f64>,
    pub diversity_real: Option<f64>,
    /// How the kept images were chosen among those that passed the gate (`--select`).
    #[serde(default)]
    pub selected_by: String,
}

impl AcceptanceRow {
    /// The row as the CSV shows it: rates and distances to 4 decimals, FDs to 3.
    pub fn rounded(&self) -> Self {
        let r = |v: f64, d: i32| {
            let p = 10f64.powi(d);
            (v * p).round() / p
        };
        let o = |v: Option<f64>, d| v.map(|x| r(x, d));
        Self {
            class: self.class.clone(),
            selected_by: self.selected_by.clone(),
            acceptance: r(self.acceptance, 4),
            mean_confidence: r(self.mean_confidence, 4),
            fd_generated: o(self.fd_generated, 3),
            fd_kept: o(self.fd_kept, 3),
            fd_real_train: o(self.fd_real_train, 3),
            median_nearest_real_distance: r(self.median_nearest_real_distance, 4),
            median_real_reference_distance: r(self.median_real_reference_distance, 4),
            diversity_generated: o(self.diversity_generated, 4),
            diversity_kept: o(self.diversity_kept, 4),
            diversity_real: o(self.diversity_real, 4),
            ..*self
        }
    }
}

/// `filtered/manifest.json` metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterMetrics {
    pub n_generated: usize,
    pub n_kept: usize,
    pub acceptance: f64,
    pub near_copies_kept: usize,
}

/// The fields `filter` adds to its manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterInfo {
    pub per_class: Vec<AcceptanceRow>,
}
