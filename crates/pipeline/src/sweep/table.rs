//! A sweep's table (Markdown and CSV) and plots, written beside its `sweep.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use rebalance_core::chart::{grouped_bars_svg, lines_svg, BarSeries};
use rebalance_core::contract::runner::{
    Stat, SweepResult, SweepRow, SWEEP_COLUMNS as COLUMNS, SWEEP_JSON, TABLE_CSV, TABLE_MD,
};
use rebalance_core::contract::write_json;

/// A sweep's table and plots, as text.
pub trait Tables {
    fn markdown(&self) -> String;
    /// One row per value, split and metric: value, split, metric, mean, std, seeds.
    fn csv(&self) -> Result<Vec<u8>>;
    /// One SVG per metric against the swept value: (file name, SVG).
    fn plots(&self) -> Result<Vec<(String, String)>>;
    /// `sweep.json`, `table.md`, `table.csv` and the plots, in `dir`.
    fn write(&self, dir: &Path) -> Result<()>;
}

/// The values as numbers, when every one is a number.
fn numeric(r: &SweepResult) -> Option<Vec<f64>> {
    r.rows.iter().map(|r| r.value.parse::<f64>().ok()).collect()
}

impl Tables for SweepResult {
    /// Headings and rows of the table (the baseline first, when there is one).
    fn markdown(&self) -> String {
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
    fn csv(&self) -> Result<Vec<u8>> {
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

    /// One SVG per metric against the swept value (lines for numbers, bars otherwise); the
    /// baseline is a flat line (or a bar) when present.
    fn plots(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (key, heading) in COLUMNS {
            if !self.rows.iter().any(|r| r.metrics.contains_key(key)) {
                continue;
            }
            let title = format!("{heading} against {} (real test split)", self.param);
            let get = |r: &SweepRow| r.metrics.get(key).map(|s| s.mean).unwrap_or(f64::NAN);
            let svg = match numeric(self) {
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
    fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_json(&dir.join(SWEEP_JSON), self)?;
        rebalance_core::write_atomic(&dir.join(TABLE_MD), self.markdown().as_bytes())?;
        rebalance_core::write_atomic(&dir.join(TABLE_CSV), &self.csv()?)?;
        for (name, svg) in self.plots()? {
            rebalance_core::write_atomic(&dir.join(name), svg.as_bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sweep::rows::summarize;
    use rebalance_core::contract::classify::{
        ClassMetrics, ClassifierKind, ClassifierMetrics, MeanStd, Metrics, SeedRun,
    };
    use rebalance_core::contract::runner::Choice;

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

    /// Two seeds of a two-class classifier, `b` rare.
    fn two_seeds() -> ClassifierMetrics {
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
        ClassifierMetrics {
            classes: vec!["a".into(), "b".into()],
            model: ClassifierKind::Lenet5,
            train: String::new(),
            train_counts: BTreeMap::new(),
            rare_classes: vec!["b".into()],
            seeds: vec![1, 2],
            test: MeanStd::default(),
            runs,
            recipe: None,
        }
    }

    fn row(value: &str, synthetic: f64, s: &BTreeMap<String, Stat>, val_f1: f64) -> SweepRow {
        SweepRow {
            value: value.into(),
            run_id: format!("r{value}"),
            ran: vec![],
            seeds: vec![1, 2],
            synthetic_per_rare_class: Some(synthetic),
            images_per_rare_class: Some(300.0),
            metrics: s.clone(),
            val: BTreeMap::from([(
                "macro_f1".into(),
                Stat {
                    mean: val_f1,
                    std: 0.0,
                },
            )]),
        }
    }

    fn result() -> SweepResult {
        let s = summarize(&two_seeds(), &["b".to_string()]);
        SweepResult {
            name: "add".into(),
            entry: "main".into(),
            param: "add".into(),
            fixed: vec![],
            rare_classes: vec!["b".into()],
            baseline: Some(s.clone()),
            rows: vec![row("0", 0.0, &s, 0.7), row("250", 250.0, &s, 0.6)],
            choice: None,
        }
    }

    #[test]
    fn the_table_averages_over_seeds() {
        let s = summarize(&two_seeds(), &["b".to_string()]);
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
        let r = result();
        let md = r.markdown();
        assert!(
            md.contains("| 250 | 2 | 250 | 300 | 1.0000 ± 0.0000 |"),
            "{md}"
        );
        assert!(md.contains("real only (baseline)"));
        let plots = r.plots().unwrap();
        assert_eq!(plots.len(), COLUMNS.len());
        assert!(plots[4].1.contains("macro-F1 against add"));
    }

    #[test]
    fn auto_chooses_by_validation_macro_f1_alone() {
        // The choice goes by validation macro-F1 alone: 0 (0.7) over 250 (0.6), although the
        // test numbers are equal.
        let mut r = result();
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
