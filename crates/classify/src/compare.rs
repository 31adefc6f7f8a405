//! `classify compare`: one table of several classify outputs (mean ± std over seeds), with the
//! paired difference against a baseline and a paired t-test over the shared seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use rebalance_core::cli::StageCommand;
use rebalance_core::write_atomic;
use serde::Serialize;
use serde_json::{json, Value};

use rebalance_core::contract::classify::ClassifierMetrics;
use rebalance_core::stats::{mean_std, paired};

#[derive(Debug, Clone, Args, Serialize)]
pub struct CompareArgs {
    /// classify output folders, as NAME=DIR or DIR (named after the folder). A NAME given
    /// more than once pools the seeds of its folders (one folder per GAN seed, say).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<String>,
    /// The run the others are compared with [default: the first].
    #[arg(long)]
    pub baseline: Option<String>,
    /// Classes whose recall gets its own row [default: the baseline's rare classes].
    #[arg(long, value_delimiter = ',')]
    pub rare: Vec<String>,
    /// Folder for comparison.md, comparison.csv and comparison.json [default: <artifacts>/comparison].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder that holds the stage outputs.
    #[arg(long, default_value = "artifacts", env = "REBALANCE_ARTIFACTS")]
    pub artifacts: PathBuf,
    /// Significance level of the paired test.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Only print warnings and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One classify output, reduced to per-seed scalars.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub name: String,
    pub dir: PathBuf,
    pub classes: Vec<String>,
    pub rare: Vec<String>,
    /// seed -> metric -> value (test split).
    pub per_seed: BTreeMap<u64, BTreeMap<String, f64>>,
}

impl RunSummary {
    pub fn load(name: &str, dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.json");
        if !path.is_file() {
            bail!(
                "{}: no metrics.json (is {} a classify output?)",
                path.display(),
                dir.display()
            );
        }
        let m: ClassifierMetrics = rebalance_core::contract::read_json(&path)?;
        let per_seed = m.runs.iter().map(|r| (r.seed, r.test.scalars())).collect();
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            classes: m.classes,
            rare: m.rare_classes,
            per_seed,
        })
    }

    /// Per-seed values of a metric; `rare_recall` is the mean recall of `rare`.
    /// Pool the seeds of another folder of the same run; a seed in both is refused.
    fn merge(&mut self, other: RunSummary) -> Result<()> {
        if other.classes != self.classes {
            bail!(
                "{} and {} are both `{}` but have other classes",
                self.dir.display(),
                other.dir.display(),
                self.name
            );
        }
        for (seed, m) in other.per_seed {
            if self.per_seed.insert(seed, m).is_some() {
                bail!(
                    "`{}`: seed {seed} is in {} and in another of its folders; give each folder its own seeds",
                    self.name,
                    other.dir.display()
                );
            }
        }
        Ok(())
    }

    pub fn values(&self, metric: &str, rare: &[String]) -> BTreeMap<u64, f64> {
        self.per_seed
            .iter()
            .map(|(&s, m)| {
                let v = if metric == "rare_recall" {
                    rare.iter()
                        .map(|c| m.get(&format!("recall/{c}")).copied().unwrap_or(f64::NAN))
                        .sum::<f64>()
                        / rare.len().max(1) as f64
                } else {
                    m.get(metric).copied().unwrap_or(f64::NAN)
                };
                (s, v)
            })
            .collect()
    }
}

fn fmt_pm(vals: &BTreeMap<u64, f64>) -> String {
    let v: Vec<f64> = vals.values().copied().collect();
    let (m, s) = mean_std(&v);
    if v.len() > 1 {
        format!("{m:.3} ± {s:.3}")
    } else {
        format!("{m:.3}")
    }
}

/// The runs to compare, the baseline's index and the rare classes, checked against each other.
struct Plan {
    runs: Vec<RunSummary>,
    base: usize,
    rare: Vec<String>,
}

impl Plan {
    fn resolve(args: &CompareArgs) -> Result<Self> {
        // A name given more than once is one run spread over folders (say one per GAN seed):
        // their seeds are pooled.
        let mut runs: Vec<RunSummary> = Vec::new();
        for spec in &args.runs {
            let (name, dir) = match spec.split_once('=') {
                Some((n, d)) => (n.to_string(), PathBuf::from(d)),
                None => {
                    let d = PathBuf::from(spec);
                    let n = d
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_else(|| spec.clone());
                    (n, d)
                }
            };
            let r = RunSummary::load(&name, &dir)?;
            match runs.iter_mut().find(|x| x.name == name) {
                Some(first) => first.merge(r)?,
                None => runs.push(r),
            }
        }
        let base_name = args
            .baseline
            .clone()
            .unwrap_or_else(|| runs[0].name.clone());
        let names = || {
            runs.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let base = runs
            .iter()
            .position(|r| r.name == base_name)
            .with_context(|| {
                format!(
                    "--baseline `{base_name}` is not one of the runs ({})",
                    names()
                )
            })?;
        let b = &runs[base];
        for r in &runs {
            if r.classes != b.classes {
                bail!(
                    "{} has classes [{}], the baseline {} has [{}]: not the same test set",
                    r.dir.display(),
                    r.classes.join(", "),
                    b.dir.display(),
                    b.classes.join(", ")
                );
            }
        }
        let rare = if args.rare.is_empty() {
            b.rare.clone()
        } else {
            args.rare.clone()
        };
        if let Some(c) = rare.iter().find(|c| !b.classes.contains(c)) {
            bail!(
                "--rare: class `{c}` is not one of [{}]",
                b.classes.join(", ")
            );
        }
        Ok(Self { runs, base, rare })
    }

    fn base_name(&self) -> &str {
        &self.runs[self.base].name
    }
}

/// The comparison: one row per metric (mean ± std per run), then the paired Δ rows.
struct Table {
    rows: Vec<Vec<String>>,
    json_rows: Vec<Value>,
    diffs: Vec<Value>,
}

fn metric_rows(plan: &Plan) -> Table {
    let rare = &plan.rare;
    let mut keys: Vec<(String, String)> = vec![
        ("accuracy".into(), "accuracy".into()),
        ("balanced accuracy".into(), "balanced_accuracy".into()),
        ("macro-F1".into(), "macro_f1".into()),
        ("test loss".into(), "loss".into()),
    ];
    keys.extend(
        rare.iter()
            .map(|c| (format!("recall of {c}"), format!("recall/{c}"))),
    );
    if !rare.is_empty() {
        keys.push((
            format!("mean recall of rare ({})", rare.join(", ")),
            "rare_recall".into(),
        ));
    }
    let mut t = Table {
        rows: Vec::new(),
        json_rows: Vec::new(),
        diffs: Vec::new(),
    };
    for (label, key) in &keys {
        let mut cells = vec![label.clone()];
        let mut jr = serde_json::Map::new();
        for r in &plan.runs {
            let vals = r.values(key, rare);
            cells.push(fmt_pm(&vals));
            let v: Vec<f64> = vals.values().copied().collect();
            let (m, s) = mean_std(&v);
            jr.insert(
                r.name.clone(),
                json!({ "mean": m, "std": s, "per_seed": vals }),
            );
        }
        t.rows.push(cells);
        t.json_rows
            .push(json!({ "metric": key, "label": label, "runs": jr }));
    }
    t
}

/// Paired differences against the baseline: macro-F1, and rare recall when there are rare
/// classes.
fn diff_rows(plan: &Plan, alpha: f64, t: &mut Table) {
    let rare = &plan.rare;
    let base_name = plan.base_name();
    let diff_keys: Vec<(&str, &str)> = std::iter::once(("macro-F1", "macro_f1"))
        .chain((!rare.is_empty()).then_some(("rare recall", "rare_recall")))
        .collect();
    for (label, key) in diff_keys {
        let mut cells = vec![format!("Δ {label} vs {base_name} (paired; p)")];
        let base = plan.runs[plan.base].values(key, rare);
        for (i, r) in plan.runs.iter().enumerate() {
            if i == plan.base {
                cells.push("—".into());
                continue;
            }
            let (m, s, n, p) = paired(&base, &r.values(key, rare));
            let verdict = match p {
                Some(p) if p < alpha && m > 0.0 => "better",
                Some(p) if p < alpha => "worse",
                Some(_) => "no significant difference",
                None => "too few shared seeds to test",
            };
            let pstr = p
                .map(|p| format!("p={p:.3}"))
                .unwrap_or_else(|| "p=n/a".into());
            cells.push(format!("{m:+.3} ± {s:.3}; {pstr}"));
            t.diffs.push(json!({ "metric": key, "run": r.name, "baseline": base_name, "mean": m, "std": s, "n_seeds": n, "p": p, "verdict": verdict }));
        }
        t.rows.push(cells);
    }
}

impl StageCommand for CompareArgs {
    const NAME: &'static str = "compare";
    const ABOUT: &'static str = "One table of several classify outputs: mean ± std over seeds, paired differences against a baseline";
    fn label(&self) -> (&'static str, bool) {
        ("classify compare", self.quiet)
    }
    fn run(&self) -> Result<()> {
        run(self)
    }
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let plan = Plan::resolve(args)?;
    let mut table = metric_rows(&plan);
    diff_rows(&plan, args.alpha, &mut table);
    let out = args.out.clone().unwrap_or_else(|| {
        args.artifacts
            .join(rebalance_core::contract::layout::COMPARISON)
    });
    let md = write_outputs(args, &plan, &table, &out)?;
    println!("{md}");
    println!(
        "classify compare: table in {}",
        out.join("comparison.md").display()
    );
    Ok(())
}

/// comparison.md, .csv and .json; the markdown.
fn write_outputs(args: &CompareArgs, plan: &Plan, table: &Table, out: &Path) -> Result<String> {
    let names: Vec<String> = plan.runs.iter().map(|r| r.name.clone()).collect();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    let mut header = vec!["metric (real test split)".to_string()];
    header.extend(names.iter().cloned());
    t.set_header(header.clone());
    for row in &table.rows {
        t.add_row(row.clone());
    }
    let seeds: Vec<String> = plan
        .runs
        .iter()
        .map(|r| format!("{}: {}", r.name, r.per_seed.len()))
        .collect();
    let md = format!(
        "{t}\n\nmean ± std over seeds ({}); Δ rows: paired difference over the seeds both runs share, two-sided paired t-test, α = {}.\n",
        seeds.join(", "),
        args.alpha
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(&out.join("comparison.md"), md.as_bytes())?;
    let csv = rebalance_core::contract::csv_of_records(
        std::iter::once(header.clone()).chain(table.rows.iter().cloned()),
    )?;
    write_atomic(&out.join("comparison.csv"), &csv)?;
    let runs_json: Vec<Value> = plan.runs.iter().map(|r| json!({ "name": r.name, "dir": r.dir.display().to_string(), "seeds": r.per_seed.keys().collect::<Vec<_>>() })).collect();
    let j = json!({ "baseline": plan.base_name(), "rare_classes": plan.rare, "alpha": args.alpha, "runs": runs_json, "rows": table.json_rows, "differences": table.diffs });
    write_atomic(
        &out.join("comparison.json"),
        &serde_json::to_vec_pretty(&j)?,
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_test_matches_a_hand_computation() {
        let a = BTreeMap::from([(1, 0.80), (2, 0.82), (3, 0.78)]);
        let b = BTreeMap::from([(1, 0.85), (2, 0.88), (3, 0.84), (4, 0.99)]);
        let (m, s, n, p) = paired(&a, &b);
        // diffs 0.05, 0.06, 0.06: mean 0.056667, sd 0.005774, t = 17.0, df 2 -> p ≈ 0.00344
        assert_eq!(n, 3);
        assert!((m - 0.0566667).abs() < 1e-6);
        assert!((s - 0.0057735).abs() < 1e-6);
        assert!((p.unwrap() - 0.003443).abs() < 1e-4, "{p:?}");
        // Noisy differences are not significant.
        let c = BTreeMap::from([(1, 0.90), (2, 0.70), (3, 0.80)]);
        assert!(paired(&a, &c).3.unwrap() > 0.5);
        // One shared seed cannot be tested.
        assert_eq!(paired(&a, &BTreeMap::from([(1, 0.9)])).3, None);
    }
}
