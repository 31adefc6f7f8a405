//! The runner's own files: `pipeline.lock` (the cache), `<artifacts>/.lock` (who holds the
//! artifacts folder) and a sweep's `sweep.json`. `docs/artifacts.md`, "The runner's files" and
//! "Sweeps", describes the same fields.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The cache file, beside `pipeline.toml`.
pub const PIPELINE_LOCK: &str = "pipeline.lock";
/// The artifacts folder's lock file, inside it.
pub const ARTIFACTS_LOCK: &str = ".lock";
/// Folder of all sweeps, under the artifacts folder.
pub const SWEEPS: &str = "sweeps";
/// A sweep's summary, in its folder.
pub const SWEEP_JSON: &str = "sweep.json";
/// A sweep's table, beside `sweep.json`.
pub const TABLE_MD: &str = "table.md";
/// The same table as CSV.
pub const TABLE_CSV: &str = "table.csv";

/// `pipeline.lock`: what each stage ran as, enough to tell whether it must run again.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PipelineLock {
    pub version: u32,
    pub stages: BTreeMap<String, LockedStage>,
}

/// One stage of `pipeline.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedStage {
    pub cmd: Vec<String>,
    pub params: BTreeMap<String, String>,
    /// Resolved program path → SHA-256.
    pub program: BTreeMap<String, String>,
    /// Inputs (declared deps, and files named on the command line) → SHA-256.
    pub deps: BTreeMap<String, String>,
    /// Outputs → SHA-256 when the stage finished.
    pub outs: BTreeMap<String, String>,
}

impl PipelineLock {
    /// The lock at `path`; an empty one (version 1) when there is none.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "parsing {} (delete it, or run with --force, to rebuild it)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                ..Default::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write it atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).context("serialising the lock")?;
        crate::write_atomic(path, &json)
    }
}

/// Who holds an artifacts folder: the content of `<artifacts>/.lock` while a run holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHolder {
    pub run_id: String,
    pub pid: u32,
    pub started_unix_ms: u128,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} (pid {})", self.run_id, self.pid)
    }
}

/// Mean and standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

/// The metrics of a sweep's table, in order: (key, heading).
pub const SWEEP_COLUMNS: [(&str, &str); 6] = [
    ("loss", "loss"),
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("macro_f1", "macro-F1"),
    ("rare_recall", "rare recall"),
];

/// One value's results in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    pub value: String,
    /// The run that made it (`artifacts/runs/<id>`).
    pub run_id: String,
    /// Stages that ran for this value (the others were cached).
    pub ran: Vec<String>,
    pub seeds: Vec<u64>,
    /// Mean synthetic images per rare class in the training set (from `composition.json`).
    pub synthetic_per_rare_class: Option<f64>,
    /// Mean total images per rare class in the training set.
    pub images_per_rare_class: Option<f64>,
    /// The keys of [`SWEEP_COLUMNS`], on the real test split.
    pub metrics: BTreeMap<String, Stat>,
    /// The same on the validation split (what `auto` chooses by).
    #[serde(default)]
    pub val: BTreeMap<String, Stat>,
}

impl SweepRow {
    /// `macro-F1 m ± s (k stage(s) ran: …)`, for the progress lines.
    pub fn summary(&self) -> String {
        format!(
            "macro-F1 {} ({} stage(s) ran: {})",
            self.metrics
                .get("macro_f1")
                .map(|s| format!("{:.4} ± {:.4}", s.mean, s.std))
                .unwrap_or_else(|| "—".into()),
            self.ran.len(),
            self.ran.join(", ")
        )
    }
}

/// What `auto` chose, and by what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub value: String,
    /// Always the validation split's macro-F1 (mean over seeds): the test split chooses nothing.
    pub by: String,
}

/// `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    pub name: String,
    pub entry: String,
    pub param: String,
    /// The other `-P` overrides.
    pub fixed: Vec<(String, String)>,
    pub rare_classes: Vec<String>,
    /// The classifier on the real training split alone, when the entry point trains it.
    pub baseline: Option<BTreeMap<String, Stat>>,
    pub rows: Vec<SweepRow>,
    /// Set by `-P <param>=auto`: the value chosen on validation macro-F1.
    #[serde(default)]
    pub choice: Option<Choice>,
}

impl SweepResult {
    /// Every sweep under `<artifacts>/sweeps`, by name.
    pub fn all(artifacts: &Path) -> Vec<(PathBuf, SweepResult)> {
        let mut out: Vec<(PathBuf, SweepResult)> = std::fs::read_dir(artifacts.join(SWEEPS))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                super::read_json::<SweepResult>(&dir.join(SWEEP_JSON))
                    .ok()
                    .map(|r| (dir, r))
            })
            .collect();
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        out
    }

    /// Headings and rows of the table (the baseline first, when there is one).
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut head = vec![
            self.param.clone(),
            "seeds".into(),
            "synthetic / rare class".into(),
            "images / rare class".into(),
        ];
        head.extend(SWEEP_COLUMNS.iter().map(|(_, h)| h.to_string()));
        head.push("val macro-F1".into());
        let mut rows = Vec::new();
        let n = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
        if let Some(b) = &self.baseline {
            let seeds = self.rows.first().map(|r| r.seeds.len()).unwrap_or(1);
            let mut r = vec![
                "real only (baseline)".into(),
                seeds.to_string(),
                "0".into(),
                "—".into(),
            ];
            r.extend(
                SWEEP_COLUMNS
                    .iter()
                    .map(|(k, _)| fmt_stat(b.get(*k), seeds)),
            );
            r.push("—".into());
            rows.push(r);
        }
        for row in &self.rows {
            let chosen = self.choice.as_ref().is_some_and(|c| c.value == row.value);
            let mut r = vec![
                if chosen {
                    format!("{} (chosen)", row.value)
                } else {
                    row.value.clone()
                },
                row.seeds.len().to_string(),
                n(row.synthetic_per_rare_class),
                n(row.images_per_rare_class),
            ];
            r.extend(
                SWEEP_COLUMNS
                    .iter()
                    .map(|(k, _)| fmt_stat(row.metrics.get(*k), row.seeds.len())),
            );
            r.push(fmt_stat(row.val.get("macro_f1"), row.seeds.len()));
            rows.push(r);
        }
        (head, rows)
    }

    /// The value with the best validation macro-F1 (mean over seeds); the first in order on
    /// a tie. The test split plays no part.
    pub fn best_on_validation(&self) -> Option<&SweepRow> {
        let f1 = |r: &SweepRow| {
            r.val
                .get("macro_f1")
                .map(|s| s.mean)
                .filter(|v| v.is_finite())
        };
        let mut best: Option<&SweepRow> = None;
        for r in &self.rows {
            if let Some(v) = f1(r) {
                if best.and_then(f1).is_none_or(|b| v > b) {
                    best = Some(r);
                }
            }
        }
        best
    }
}

fn fmt_stat(s: Option<&Stat>, seeds: usize) -> String {
    match s {
        Some(s) if seeds > 1 => format!("{:.4} ± {:.4}", s.mean, s.std),
        Some(s) => format!("{:.4}", s.mean),
        None => "—".into(),
    }
}
