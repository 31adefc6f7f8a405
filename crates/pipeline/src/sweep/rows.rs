//! A sweep's rows: each value's classifier summarised over seeds (test and validation splits),
//! with the rare classes' share of synthetic images, read from the value's stage outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rebalance_core::contract::augment::Composition;
use rebalance_core::contract::classify::{ClassifierMetrics, Metrics};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::read_json;
use rebalance_core::contract::runner::{Stat, SweepRow, SWEEP_COLUMNS as COLUMNS};
use rebalance_core::stats::mean_std;

use crate::plan::Task;
use crate::util::copy_file as copy;

/// Per-seed values of the table's metrics: macro precision and recall average the classes
/// with test images; rare recall averages the rare classes.
fn seed_values(m: &Metrics, rare: &[String]) -> BTreeMap<String, f64> {
    let present: Vec<_> = m.per_class.iter().filter(|c| c.support > 0).collect();
    let avg = |f: &dyn Fn(&rebalance_core::contract::classify::ClassMetrics) -> f64| {
        if present.is_empty() {
            f64::NAN
        } else {
            present.iter().map(|c| f(c)).sum::<f64>() / present.len() as f64
        }
    };
    let mut out = BTreeMap::new();
    out.insert("loss".into(), m.loss);
    out.insert("accuracy".into(), m.accuracy);
    out.insert("precision".into(), avg(&|c| c.precision));
    out.insert("recall".into(), avg(&|c| c.recall));
    out.insert("macro_f1".into(), m.macro_f1);
    let rare: Vec<f64> = m
        .per_class
        .iter()
        .filter(|c| rare.contains(&c.class))
        .map(|c| c.recall)
        .collect();
    if !rare.is_empty() {
        out.insert(
            "rare_recall".into(),
            rare.iter().sum::<f64>() / rare.len() as f64,
        );
    }
    out
}

/// The table's metrics over a classifier's seeds (test split).
pub fn summarize(m: &ClassifierMetrics, rare: &[String]) -> BTreeMap<String, Stat> {
    summarize_split(m, rare, false)
}

/// The same on the validation split (`val`) or the test split.
pub fn summarize_split(
    m: &ClassifierMetrics,
    rare: &[String],
    val: bool,
) -> BTreeMap<String, Stat> {
    let per_seed: Vec<BTreeMap<String, f64>> = m
        .runs
        .iter()
        .map(|r| seed_values(if val { &r.val } else { &r.test }, rare))
        .collect();
    let mut out = BTreeMap::new();
    for (key, _) in COLUMNS {
        let vals: Vec<f64> = per_seed
            .iter()
            .filter_map(|s| s.get(key).copied())
            .collect();
        if vals.is_empty() {
            continue;
        }
        let (mean, std) = mean_std(&vals);
        out.insert(key.to_string(), Stat { mean, std });
    }
    out
}

/// (synthetic, total) images per rare class, averaged over the rare classes.
pub fn rare_composition(c: &Composition, rare: &[String]) -> Option<(f64, f64)> {
    let rows: Vec<_> = c
        .classes
        .iter()
        .filter(|(name, _)| rare.contains(name))
        .map(|(_, v)| v)
        .collect();
    if rows.is_empty() {
        return None;
    }
    let n = rows.len() as f64;
    Some((
        rows.iter().map(|r| r.synthetic as f64).sum::<f64>() / n,
        rows.iter().map(|r| r.total() as f64).sum::<f64>() / n,
    ))
}

/// The tasks whose outputs the table reads: the last round's classify and augment, and the
/// real-only baseline: the `baseline` stage's metrics, else the judge's `real` candidate's.
pub struct ResultTasks<'a> {
    pub classify: &'a Task,
    pub augment: Option<&'a Task>,
    pub baseline: Option<(&'a Task, &'static str)>,
}

/// The judge's `real` candidate (`classify --candidates`): the real split alone.
pub const REAL_CANDIDATE_METRICS: &str = "recipes/real/metrics.json";

pub fn result_tasks(tasks: &[Task]) -> Result<ResultTasks<'_>> {
    let classify = tasks
        .iter()
        .rev()
        .find(|t| t.entry == "classify")
        .ok_or_else(|| {
            anyhow!("the entry point runs no `classify` stage, so a sweep has no result to table")
        })?;
    Ok(ResultTasks {
        classify,
        augment: tasks
            .iter()
            .rev()
            .find(|t| t.entry == "augment" && t.round == classify.round),
        baseline: tasks
            .iter()
            .find(|t| t.entry == "baseline")
            .map(|t| (t, file::METRICS))
            .or_else(|| {
                tasks
                    .iter()
                    .find(|t| t.entry == "judge")
                    .map(|t| (t, REAL_CANDIDATE_METRICS))
            }),
    })
}

/// The first folder of `task`'s outputs that holds `name`.
pub fn output_file(task: &Task, root: &Path, name: &str) -> Option<PathBuf> {
    task.outs
        .iter()
        .map(|o| root.join(o).join(name))
        .find(|p| p.is_file())
}

/// Read one value's results and keep a copy of its metrics and composition in `dir`.
pub fn collect_row(
    value: &str,
    run_id: &str,
    ran: Vec<String>,
    tasks: &ResultTasks,
    root: &Path,
    rare: &[String],
    dir: &Path,
) -> Result<SweepRow> {
    let metrics_path = output_file(tasks.classify, root, file::METRICS).ok_or_else(|| {
        anyhow!(
            "value {value}: stage {} left no {}",
            tasks.classify.key,
            file::METRICS
        )
    })?;
    let metrics: ClassifierMetrics = read_json(&metrics_path)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy(&metrics_path, &dir.join(file::METRICS))?;
    let composition = tasks
        .augment
        .and_then(|t| output_file(t, root, file::COMPOSITION));
    let mut rare_counts = None;
    if let Some(p) = composition {
        copy(&p, &dir.join(file::COMPOSITION))?;
        let c: Composition = read_json(&p)?;
        rare_counts = rare_composition(&c, rare);
    }
    Ok(SweepRow {
        value: value.to_string(),
        run_id: run_id.to_string(),
        ran,
        seeds: metrics.seeds.clone(),
        synthetic_per_rare_class: rare_counts.map(|r| r.0),
        images_per_rare_class: rare_counts.map(|r| r.1),
        metrics: summarize(&metrics, rare),
        val: summarize_split(&metrics, rare, true),
    })
}
