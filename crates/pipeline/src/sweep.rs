//! `pipeline sweep`: an entry point run once per value of one parameter. The runner's cache
//! makes each value rerun only the stages the parameter touches; this module finds the swept
//! parameter among the `-P` overrides, summarises each value's classifier on the real test
//! split, and writes the table and plots to `<artifacts>/sweeps/<name>/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rebalance_core::chart::{grouped_bars_svg, lines_svg, BarSeries};
use rebalance_core::contract::augment::Composition;
use rebalance_core::contract::classify::{ClassifierMetrics, Metrics};
use rebalance_core::contract::layout::file;
use rebalance_core::contract::{read_json, write_json};
use rebalance_core::stats::mean_std;
use serde::{Deserialize, Serialize};

use crate::plan::Task;
use crate::spec::{Bindings, Param, ParamSpec, ParamType, Spec};

/// Folder of all sweeps, under the artifacts folder.
pub const SWEEPS: &str = "sweeps";
/// A sweep's summary, in its folder.
pub const SWEEP_JSON: &str = "sweep.json";

/// The metrics of the table, in order: (key, heading).
pub const COLUMNS: [(&str, &str); 6] = [
    ("loss", "loss"),
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("macro_f1", "macro-F1"),
    ("rare_recall", "rare recall"),
];

/// The parameter a sweep varies, with its values as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Swept {
    /// As given: `add` or `augment.add`.
    pub key: String,
    pub kind: ParamType,
    pub values: Vec<String>,
}

/// The declaration of `-P key=…` for `entry`, when it names one unambiguously.
pub fn declared(spec: &Spec, entry: &str, key: &str) -> Option<ParamSpec> {
    if let Some((owner, p)) = key.split_once('.') {
        return spec.entry_points.get(owner)?.parameters.get(p).cloned();
    }
    match spec.params_of(entry).ok()?.remove(key)? {
        Param::Shared(s) => Some(s),
        Param::Ambiguous(_) => None,
    }
}

/// Split the overrides into the fixed ones and the swept parameter: the one whose value holds
/// several values (comma-separated; semicolon-separated when a `;` is present, and always for a
/// list parameter, whose single value is itself comma-separated). Every value is checked against the parameter's type.
pub fn split(
    spec: &Spec,
    entry: &str,
    overrides: &[(String, String)],
) -> Result<(Vec<(String, String)>, Swept)> {
    let mut fixed = Vec::new();
    let mut swept: Vec<Swept> = Vec::new();
    for (key, raw) in overrides {
        let Some(decl) = declared(spec, entry, key) else {
            fixed.push((key.clone(), raw.clone()));
            continue;
        };
        // `;` separates values when present (a value may then hold commas, as `keep` does),
        // and always for a list parameter, whose single value is comma-separated.
        let sep = if decl.kind == ParamType::List || raw.contains(';') {
            ';'
        } else {
            ','
        };
        if !raw.contains(sep) {
            fixed.push((key.clone(), raw.clone()));
            continue;
        }
        let values: Vec<String> = raw
            .split(sep)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.len() < 2 {
            bail!("-P {key}={raw}: a sweep needs at least two values");
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                bail!("-P {key}={raw}: the value `{v}` is given twice");
            }
        }
        swept.push(Swept {
            key: key.clone(),
            kind: decl.kind,
            values,
        });
    }
    // Unknown or ambiguous keys get the runner's own error.
    Bindings::new(spec, entry, &fixed)?;
    let swept = match swept.len() {
        0 => bail!(
            "nothing to sweep: give one parameter several values, e.g. `pipeline sweep -P add=0,250,500,1000` \
             (values that hold commas are separated by `;`)"
        ),
        1 => swept.remove(0),
        _ => bail!(
            "a sweep varies one parameter; {} all have several values",
            swept
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    for v in &swept.values {
        let mut all = fixed.clone();
        all.push((swept.key.clone(), v.clone()));
        Bindings::new(spec, entry, &all)?;
    }
    Ok((fixed, swept))
}

/// A file or folder name for a value: `/` and other path-unfriendly characters become `_`.
pub fn slug(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        "_".into()
    } else {
        s
    }
}

/// Mean and standard deviation over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
}

/// One value's results.
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
    /// The keys of [`COLUMNS`], on the real test split.
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

fn copy(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    rebalance_core::write_atomic(to, &bytes)
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

fn fmt_stat(s: Option<&Stat>, seeds: usize) -> String {
    match s {
        Some(s) if seeds > 1 => format!("{:.4} ± {:.4}", s.mean, s.std),
        Some(s) => format!("{:.4}", s.mean),
        None => "—".into(),
    }
}

impl SweepResult {
    /// Headings and rows of the table (the baseline first, when there is one).
    pub fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut head = vec![
            self.param.clone(),
            "seeds".into(),
            "synthetic / rare class".into(),
            "images / rare class".into(),
        ];
        head.extend(COLUMNS.iter().map(|(_, h)| h.to_string()));
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
            r.extend(COLUMNS.iter().map(|(k, _)| fmt_stat(b.get(*k), seeds)));
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
                COLUMNS
                    .iter()
                    .map(|(k, _)| fmt_stat(row.metrics.get(*k), row.seeds.len())),
            );
            r.push(fmt_stat(row.val.get("macro_f1"), row.seeds.len()));
            rows.push(r);
        }
        (head, rows)
    }

    pub fn markdown(&self) -> String {
        let (head, rows) = self.table();
        let mut s = format!("| {} |\n|", head.join(" | "));
        for _ in &head {
            s.push_str("---|");
        }
        s.push('\n');
        for r in rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }

    /// One row per value and metric: value, metric, mean, std, seeds.
    pub fn csv(&self) -> Result<Vec<u8>> {
        let mut rows = vec![["value", "split", "metric", "mean", "std", "seeds"].map(String::from)];
        let mut put = |value: &str, split: &str, m: &BTreeMap<String, Stat>, seeds: usize| {
            for (k, _) in COLUMNS {
                if let Some(s) = m.get(k) {
                    rows.push([
                        value.to_string(),
                        split.to_string(),
                        k.to_string(),
                        s.mean.to_string(),
                        s.std.to_string(),
                        seeds.to_string(),
                    ]);
                }
            }
        };
        if let Some(b) = &self.baseline {
            put(
                "baseline",
                "test",
                b,
                self.rows.first().map(|r| r.seeds.len()).unwrap_or(1),
            );
        }
        for r in &self.rows {
            put(&r.value, "test", &r.metrics, r.seeds.len());
            put(&r.value, "val", &r.val, r.seeds.len());
        }
        rebalance_core::contract::csv_of_records(rows)
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

    /// The values as numbers, when every one is a number.
    fn numeric(&self) -> Option<Vec<f64>> {
        self.rows
            .iter()
            .map(|r| r.value.parse::<f64>().ok())
            .collect()
    }

    /// One SVG per metric against the swept value (lines for numbers, bars otherwise); the
    /// baseline is a flat line (or a bar) when present.
    pub fn plots(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (key, heading) in COLUMNS {
            if !self.rows.iter().any(|r| r.metrics.contains_key(key)) {
                continue;
            }
            let title = format!("{heading} against {} (real test split)", self.param);
            let get = |r: &SweepRow| r.metrics.get(key).map(|s| s.mean).unwrap_or(f64::NAN);
            let svg = match self.numeric() {
                Some(xs) => {
                    let mut series = vec![(
                        "mean over seeds",
                        xs.iter()
                            .zip(&self.rows)
                            .map(|(x, r)| (*x, get(r)))
                            .collect(),
                    )];
                    let band = |sign: f64| -> Vec<(f64, f64)> {
                        xs.iter()
                            .zip(&self.rows)
                            .filter_map(|(x, r)| {
                                r.metrics.get(key).map(|s| (*x, s.mean + sign * s.std))
                            })
                            .collect()
                    };
                    if self.rows.iter().any(|r| r.seeds.len() > 1) {
                        series.push(("mean − std", band(-1.0)));
                        series.push(("mean + std", band(1.0)));
                    }
                    if let Some(b) = self.baseline.as_ref().and_then(|b| b.get(key)) {
                        let (lo, hi) = xs
                            .iter()
                            .fold((f64::MAX, f64::MIN), |(a, z), x| (a.min(*x), z.max(*x)));
                        series.push(("real only (baseline)", vec![(lo, b.mean), (hi, b.mean)]));
                    }
                    lines_svg(&title, &series, &self.param, heading)?
                }
                None => {
                    let mut cats: Vec<String> = self.rows.iter().map(|r| r.value.clone()).collect();
                    let mut values: Vec<f64> = self.rows.iter().map(get).collect();
                    if let Some(b) = self.baseline.as_ref().and_then(|b| b.get(key)) {
                        cats.insert(0, "baseline".into());
                        values.insert(0, b.mean);
                    }
                    grouped_bars_svg(
                        &title,
                        &cats,
                        &[BarSeries {
                            name: "mean over seeds",
                            values,
                        }],
                        heading,
                    )?
                }
            };
            out.push((format!("{key}.svg"), svg));
        }
        Ok(out)
    }

    /// `sweep.json`, `table.md`, `table.csv` and the plots, in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json(&dir.join(SWEEP_JSON), self)?;
        rebalance_core::write_atomic(&dir.join("table.md"), self.markdown().as_bytes())?;
        rebalance_core::write_atomic(&dir.join("table.csv"), &self.csv()?)?;
        for (name, svg) in self.plots()? {
            rebalance_core::write_atomic(&dir.join(name), svg.as_bytes())?;
        }
        Ok(())
    }

    /// Every sweep under `<artifacts>/sweeps`, by name.
    pub fn all(artifacts: &Path) -> Vec<(PathBuf, SweepResult)> {
        let mut out: Vec<(PathBuf, SweepResult)> = std::fs::read_dir(artifacts.join(SWEEPS))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let dir = e.path();
                read_json::<SweepResult>(&dir.join(SWEEP_JSON))
                    .ok()
                    .map(|r| (dir, r))
            })
            .collect();
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        out
    }
}

/// A folder that stands in for the project folder `root` while one value of a sweep runs in a
/// Slurm job (`pipeline sweep --executor slurm`): the manifest and `pipeline.lock` copied, the
/// artifacts folder a hard-linked copy without its run records and sweeps (stages replace
/// their outputs by rename, so nothing is written through a link), every other entry a
/// symlink. The value's run then finds cached every stage that its parameter does not touch,
/// and runs the others beside the other values' jobs. Built afresh each time.
pub fn mirror(
    root: &Path,
    manifest: &Path,
    lock: &Path,
    artifacts: &Path,
    dest: &Path,
) -> Result<()> {
    if artifacts.is_absolute()
        || artifacts
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        bail!(
            "a sweep on Slurm needs the artifacts folder inside the project folder, as a plain relative path (not {})",
            artifacts.display()
        );
    }
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
    }
    let rest: Vec<std::ffi::OsString> = artifacts
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let manifest_name = manifest.file_name().unwrap_or_default();
    mirror_level(root, dest, &rest, &|name| name == manifest_name)?;
    copy(manifest, &dest.join(manifest_name))?;
    if lock.is_file() {
        copy(lock, &dest.join("pipeline.lock"))?;
    }
    Ok(())
}

fn mirror_level(
    src: &Path,
    dst: &Path,
    rest: &[std::ffi::OsString],
    skip: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let name = entry?.file_name();
        if skip(&name) || name == "pipeline.lock" {
            continue;
        }
        let (from, to) = (src.join(&name), dst.join(&name));
        if Some(&name) == rest.first() {
            if rest.len() == 1 {
                link_tree(&from, &to, true)?;
            } else {
                mirror_level(&from, &to, &rest[1..], &|_| false)?;
            }
        } else {
            std::os::unix::fs::symlink(&from, &to)
                .with_context(|| format!("linking {} to {}", to.display(), from.display()))?;
        }
    }
    Ok(())
}

/// A copy of the folder `src` whose files are hard links (copies where a link fails); at the
/// top, without `runs/`, `sweeps/` and hidden entries (the lock, work folders).
fn link_tree(src: &Path, dst: &Path, top: bool) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if top && (n == "runs" || n == SWEEPS || n.starts_with('.')) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        if entry.file_type()?.is_dir() {
            link_tree(&from, &to, false)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rebalance_core::contract::classify::{ClassMetrics, ClassifierKind, MeanStd, SeedRun};

    const TOML: &str = r#"
name = "t"
[entry_points.a]
command = ["a", "{add}", "{keep}", "{seeds}"]
[entry_points.a.parameters]
add = { type = "int", default = 0 }
keep = { type = "list", items = "string", default = ["x"] }
seeds = { type = "int", default = 1 }
strategy = { type = "string", default = "s", choices = ["s", "t"] }
tag = { type = "string", default = "" }
"#;

    fn spec() -> Spec {
        Spec::parse(TOML).unwrap()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn the_parameter_with_several_values_is_swept() {
        let (fixed, s) = split(&spec(), "a", &[p("add", "0, 250,500"), p("seeds", "3")]).unwrap();
        assert_eq!(fixed, vec![p("seeds", "3")]);
        assert_eq!(s.key, "add");
        assert_eq!(s.values, ["0", "250", "500"]);
        // A list parameter's values are separated by `;`; a comma stays inside a value.
        let (_, s) = split(&spec(), "a", &[p("keep", "2=10,5=10;2=5")]).unwrap();
        assert_eq!(s.values, ["2=10,5=10", "2=5"]);
        let (_, s) = split(&spec(), "a", &[p("a.add", "1,2")]).unwrap();
        assert_eq!(s.key, "a.add");
        // A string whose values hold commas: `;` separates them.
        let (_, s) = split(&spec(), "a", &[p("tag", "x=1,y=2;x=3")]).unwrap();
        assert_eq!(s.values, ["x=1,y=2", "x=3"]);
    }

    #[test]
    fn bad_sweeps_are_refused_with_the_reason() {
        let err = |o: &[(String, String)]| format!("{:#}", split(&spec(), "a", o).unwrap_err());
        assert!(err(&[p("add", "1")]).contains("nothing to sweep"));
        assert!(err(&[p("add", "1,2"), p("seeds", "1,3")]).contains("add, seeds"));
        assert!(err(&[p("add", "1,x")]).contains("`x` is not an int"));
        assert!(err(&[p("add", "1,1")]).contains("given twice"));
        assert!(err(&[p("add", "1,")]).contains("at least two values"));
        assert!(err(&[p("strategy", "s,u")]).contains("`u` is not one of s, t"));
        assert!(err(&[p("add", "1,2"), p("nope", "1")]).contains("unknown parameter `nope`"));
    }

    #[test]
    fn slugs_are_safe_folder_names() {
        assert_eq!(slug("250"), "250");
        assert_eq!(slug("synthetic+classical"), "synthetic+classical");
        assert_eq!(slug("../x/y"), ".._x_y");
        assert_eq!(slug(".."), "_");
    }

    fn metrics(seed: u64, recalls: [f64; 2], precisions: [f64; 2]) -> Metrics {
        Metrics {
            accuracy: 0.5,
            balanced_accuracy: (recalls[0] + recalls[1]) / 2.0,
            macro_f1: 0.4 + seed as f64 * 0.1,
            loss: 1.0,
            n: 20,
            per_class: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, c)| ClassMetrics {
                    class: c.to_string(),
                    precision: precisions[i],
                    recall: recalls[i],
                    f1: 0.0,
                    support: 10,
                })
                .collect(),
            confusion: vec![],
        }
    }

    #[test]
    fn the_table_averages_over_seeds() {
        let runs: Vec<SeedRun> = [(1, [1.0, 0.2], [0.6, 0.8]), (2, [1.0, 0.4], [0.8, 1.0])]
            .iter()
            .map(|(s, r, p)| SeedRun {
                seed: *s,
                best_epoch: 1,
                epochs_run: 1,
                train_s: 0.0,
                val: metrics(*s, *r, *p),
                test: metrics(*s, *r, *p),
            })
            .collect();
        let m = ClassifierMetrics {
            classes: vec!["a".into(), "b".into()],
            model: ClassifierKind::Lenet5,
            train: String::new(),
            train_counts: BTreeMap::new(),
            rare_classes: vec!["b".into()],
            seeds: vec![1, 2],
            test: MeanStd::default(),
            runs,
            recipe: None,
        };
        let s = summarize(&m, &["b".to_string()]);
        let close = |k: &str, mean: f64, std: f64| {
            let v = s[k];
            assert!(
                (v.mean - mean).abs() < 1e-12 && (v.std - std).abs() < 1e-12,
                "{k}: {v:?}"
            );
        };
        close("rare_recall", 0.3, 0.02f64.sqrt());
        close("recall", 0.65, 0.1f64 / 2f64.sqrt());
        close("precision", 0.8, 0.2 / 2f64.sqrt());
        close("macro_f1", 0.55, 0.1 / 2f64.sqrt());
        let r = SweepResult {
            name: "add".into(),
            entry: "main".into(),
            param: "add".into(),
            fixed: vec![],
            rare_classes: vec!["b".into()],
            baseline: Some(s.clone()),
            rows: vec![
                SweepRow {
                    value: "0".into(),
                    run_id: "r0".into(),
                    ran: vec![],
                    seeds: vec![1, 2],
                    synthetic_per_rare_class: Some(0.0),
                    images_per_rare_class: Some(300.0),
                    metrics: s.clone(),
                    val: BTreeMap::from([(
                        "macro_f1".into(),
                        Stat {
                            mean: 0.7,
                            std: 0.0,
                        },
                    )]),
                },
                SweepRow {
                    value: "250".into(),
                    run_id: "r1".into(),
                    ran: vec![],
                    seeds: vec![1, 2],
                    synthetic_per_rare_class: Some(250.0),
                    images_per_rare_class: Some(300.0),
                    metrics: s,
                    val: BTreeMap::from([(
                        "macro_f1".into(),
                        Stat {
                            mean: 0.6,
                            std: 0.0,
                        },
                    )]),
                },
            ],
            choice: None,
        };
        let md = r.markdown();
        assert!(
            md.contains("| 250 | 2 | 250 | 300 | 1.0000 ± 0.0000 |"),
            "{md}"
        );
        assert!(md.contains("real only (baseline)"));
        let plots = r.plots().unwrap();
        assert_eq!(plots.len(), COLUMNS.len());
        assert!(plots[4].1.contains("macro-F1 against add"));
        // The choice goes by validation macro-F1 alone: 0 (0.7) over 250 (0.6), although the
        // test numbers are equal.
        let mut r = r;
        assert_eq!(r.best_on_validation().unwrap().value, "0");
        r.rows[1].val.insert(
            "macro_f1".into(),
            Stat {
                mean: 0.7,
                std: 0.0,
            },
        );
        assert_eq!(
            r.best_on_validation().unwrap().value,
            "0",
            "a tie goes to the first"
        );
        r.rows[1].val.insert(
            "macro_f1".into(),
            Stat {
                mean: 0.71,
                std: 0.0,
            },
        );
        assert_eq!(r.best_on_validation().unwrap().value, "250");
        r.choice = Some(Choice {
            value: "250".into(),
            by: "val macro_f1".into(),
        });
        assert!(r.markdown().contains("| 250 (chosen) |"));
    }
}
