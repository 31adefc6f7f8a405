//! The dataset report: terminal summary, sample grid, class-count chart, manifest fields.

use std::path::Path;

use anyhow::Result;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use rebalance_core::chart::{grouped_bars_svg, BarSeries};
use rebalance_core::contract::dataset::{
    ClassCounts, DatasetInfo, DatasetMetrics, ImageShape, Skipped, SplitCounts,
};
use rebalance_core::contract::rare_classes;
use rebalance_core::{grid, ImageSet, Manifest};

use crate::prepare::Target;
use crate::sources::Problem;
use crate::split::Assignment;
use crate::Format;

/// Problems listed in the terminal summary; the manifest lists all of them.
const SHOWN_PROBLEMS: usize = 10;

pub struct Report {
    pub classes: Vec<String>,
    /// Images per class in train, val, test.
    pub counts: [Vec<usize>; 3],
    pub rare: Vec<bool>,
    /// Largest train class over smallest.
    pub imbalance_ratio: f64,
}

impl Report {
    pub fn new(classes: &[String], sets: &[ImageSet; 3], rare_below: f64) -> Self {
        let counts = [sets[0].counts(), sets[1].counts(), sets[2].counts()];
        let rare_names = rare_classes(&counts[0], classes, rare_below);
        let rare = classes.iter().map(|c| rare_names.contains(c)).collect();
        let mut sorted = counts[0].clone();
        sorted.sort_unstable();
        let max = sorted.last().copied().unwrap_or(0) as f64;
        let min = sorted.first().copied().unwrap_or(0) as f64;
        let imbalance_ratio = if min > 0.0 {
            ((max / min) * 100.0).round() / 100.0
        } else {
            f64::INFINITY
        };
        Self {
            classes: classes.to_vec(),
            counts,
            rare,
            imbalance_ratio,
        }
    }

    /// One row per class (in class order), up to 10 train images each (val/test if train is short).
    pub fn samples_png(&self, sets: &[ImageSet; 3]) -> Result<Vec<u8>> {
        let train = &sets[0];
        const PER_ROW: usize = 10;
        let mut rows: Vec<Vec<&[u8]>> = vec![Vec::new(); self.classes.len()];
        for set in sets.iter() {
            for i in 0..set.len() {
                let row = &mut rows[set.labels[i] as usize];
                if row.len() < PER_ROW {
                    row.push(set.image(i));
                }
            }
        }
        grid::grid_png(
            &rows,
            train.channels,
            train.height,
            train.width,
            grid::default_scale(train.height.max(train.width)),
        )
    }

    pub fn chart_svg(&self) -> Result<String> {
        let series: Vec<BarSeries> = ["train", "val", "test"]
            .iter()
            .zip(&self.counts)
            .map(|(name, c)| BarSeries {
                name,
                values: c.iter().map(|&v| v as f64).collect(),
            })
            .collect();
        grouped_bars_svg("Images per class", &self.classes, &series, "images")
    }

    /// The terminal summary: a classes × splits table with rare classes marked, then notes.
    pub fn summary_text(
        &self,
        problems: &[Problem],
        notes: &[String],
        out: &Path,
        format: Format,
    ) -> String {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(vec!["class", "train", "val", "test", ""]);
        for (c, name) in self.classes.iter().enumerate() {
            let mut row = vec![Cell::new(name)];
            for s in 0..3 {
                row.push(Cell::new(self.counts[s][c]).set_alignment(CellAlignment::Right));
            }
            row.push(Cell::new(if self.rare[c] { "rare" } else { "" }));
            table.add_row(row);
        }
        let totals: Vec<usize> = self.counts.iter().map(|c| c.iter().sum()).collect();
        table.add_row(vec![
            Cell::new("total"),
            Cell::new(totals[0]).set_alignment(CellAlignment::Right),
            Cell::new(totals[1]).set_alignment(CellAlignment::Right),
            Cell::new(totals[2]).set_alignment(CellAlignment::Right),
            Cell::new(""),
        ]);
        let rare: Vec<&str> = self
            .classes
            .iter()
            .zip(&self.rare)
            .filter(|(_, r)| **r)
            .map(|(c, _)| c.as_str())
            .collect();
        let mut s = format!(
            "Dataset ({format}): {} classes\n{table}\n",
            self.classes.len()
        );
        s += &format!(
            "imbalance ratio (largest / smallest train class): {}\n",
            self.imbalance_ratio
        );
        s += &format!(
            "rare classes (train count below half the median): {}\n",
            if rare.is_empty() {
                "none".to_string()
            } else {
                rare.join(", ")
            }
        );
        for n in notes {
            s += &format!("note: {n}\n");
        }
        if problems.is_empty() {
            s += "skipped: none\n";
        } else {
            s += &format!("skipped: {} (file: reason)\n", problems.len());
            for p in problems.iter().take(SHOWN_PROBLEMS) {
                s += &format!("  {}: {}\n", p.file, p.reason);
            }
            if problems.len() > SHOWN_PROBLEMS {
                s += &format!(
                    "  … {} more in manifest.json\n",
                    problems.len() - SHOWN_PROBLEMS
                );
            }
        }
        s += &format!("wrote {}\n", out.display());
        s
    }

    pub fn fill_manifest(
        &self,
        m: &mut Manifest,
        problems: &[Problem],
        assignment: &Assignment,
        format: Format,
        t: &Target,
        decode_s: f64,
    ) -> Result<()> {
        let per_split = |i: usize| -> ClassCounts {
            self.classes
                .iter()
                .cloned()
                .zip(self.counts[i].iter().copied())
                .collect()
        };
        let format = serde_json::to_value(format)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        m.set_extra(&DatasetInfo {
            format,
            classes: self.classes.clone(),
            counts: SplitCounts {
                train: per_split(0),
                val: per_split(1),
                test: per_split(2),
            },
            image_shape: ImageShape {
                channels: t.channels,
                height: t.height,
                width: t.width,
            },
            rare_classes: self
                .classes
                .iter()
                .zip(&self.rare)
                .filter(|(_, r)| **r)
                .map(|(c, _)| c.clone())
                .collect(),
            skipped: problems
                .iter()
                .map(|p| Skipped {
                    file: p.file.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
            notes: assignment.notes.clone(),
            carved_splits: assignment
                .carved
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
        })?;
        let total = |i: usize| self.counts[i].iter().sum::<usize>();
        m.set_metrics(&DatasetMetrics {
            imbalance_ratio: self
                .imbalance_ratio
                .is_finite()
                .then_some(self.imbalance_ratio),
            n_train: total(0),
            n_val: total(1),
            n_test: total(2),
            n_skipped: problems.len(),
            decode_s,
        })
    }
}
