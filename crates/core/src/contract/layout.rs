//! Where each stage's outputs live under the artifacts folder: the stage defaults, the runner's
//! uploads and the report all take their paths from here (`pipeline.toml`'s `outs` name the same
//! folders, and a test checks that they agree).

use std::path::{Path, PathBuf};

/// `ingest`: the train/val/test image sets.
pub const DATASET: &str = "dataset";
/// `augment --strategy classical` for the judge's training set.
pub const JUDGE_TRAIN: &str = "judge-train";
/// `classify` on the judge's training set: the judge `filter` loads.
pub const JUDGE: &str = "judge";
/// `gan-train`.
pub const GAN: &str = "gan";
/// `gan-train generate`.
pub const GENERATED: &str = "generated";
/// `filter`.
pub const FILTERED: &str = "filtered";
/// `augment`.
pub const AUGMENTED: &str = "augmented";
/// `classify` on the augmented set.
pub const CLASSIFY: &str = "classify";
/// `classify` on the real train split alone.
pub const BASELINE: &str = "baseline";
/// `pipeline report`.
pub const REPORT: &str = "report";
/// A refinement round's GAN training set: the real train split plus the previous round's kept
/// images.
pub const GAN_DATA: &str = "gan-data";
/// Refinement rounds: `rounds/<r>/` holds round r's stage folders.
pub const ROUNDS: &str = "rounds";
/// The runner's run records: `runs/<id>/`.
pub const RUNS: &str = "runs";
/// `classify compare`.
pub const COMPARISON: &str = "comparison";

/// The main chain's stages (their `pipeline.toml` entry names) and output folders, in pipeline
/// order.
pub const STAGES: [(&str, &str); 10] = [
    ("ingest", DATASET),
    ("judge-train", JUDGE_TRAIN),
    ("judge", JUDGE),
    ("gan-train", GAN),
    ("generate", GENERATED),
    ("filter", FILTERED),
    ("augment", AUGMENTED),
    ("classify", CLASSIFY),
    ("baseline", BASELINE),
    ("report", REPORT),
];

/// Files inside the stage folders.
pub mod file {
    pub const MANIFEST: &str = "manifest.json";
    pub const TRAIN: &str = "train.safetensors";
    pub const VAL: &str = "val.safetensors";
    pub const TEST: &str = "test.safetensors";
    pub const GENERATED: &str = "generated.safetensors";
    pub const KEPT: &str = "kept.safetensors";
    pub const MODEL: &str = "model.safetensors";
    pub const GENERATOR: &str = "generator.safetensors";
    pub const CONFIG: &str = "config.json";
    pub const METRICS: &str = "metrics.json";
    pub const CURVES: &str = "curves.csv";
    pub const LOSSES: &str = "losses.csv";
    /// cyclegan: reconstruction and identity errors per log step.
    pub const CYCLE: &str = "cycle.csv";
    /// gan-train --per-class-gans: the classes, each with its generator in `classes/<class>/`.
    pub const PER_CLASS: &str = "classes.json";
    pub const SCORES: &str = "scores.csv";
    pub const ACCEPTANCE: &str = "acceptance.csv";
    pub const COMPOSITION: &str = "composition.json";
    /// `classify --candidates`: every candidate recipe and the chosen one.
    pub const RECIPES: &str = "recipes.json";
    pub const VERDICT: &str = "verdict.txt";
    pub const INDEX: &str = "index.html";
    pub const RUN: &str = "run.json";
}

/// The artifacts folder of one run of the chain (round 1), or of refinement round r ≥ 2.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(artifacts: &Path) -> Self {
        Self {
            root: artifacts.to_path_buf(),
        }
    }

    /// The folder of round `r` (the artifacts folder itself for round 1).
    pub fn round(&self, r: u32) -> Self {
        if r <= 1 {
            self.clone()
        } else {
            Self::new(&self.root.join(ROUNDS).join(r.to_string()))
        }
    }

    /// `<root>/<stage folder>`.
    pub fn dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// `<root>/<stage folder>/<file>`.
    pub fn file(&self, stage: &str, file: &str) -> PathBuf {
        self.root.join(stage).join(file)
    }
}
