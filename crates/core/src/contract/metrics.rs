//! Classification metrics from a confusion matrix (rows = true class, columns = predicted).
//!
//! Conventions (as scikit-learn with `zero_division=0`): precision of a class never predicted
//! is 0, recall of a class with no true examples is 0; balanced accuracy is the mean recall over
//! classes that occur in the truth; macro-F1 averages F1 over classes that occur in the truth
//! or in the predictions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// True examples of the class.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub macro_f1: f64,
    /// Mean cross-entropy (unweighted).
    #[serde(deserialize_with = "super::nan_if_null")]
    pub loss: f64,
    pub n: u64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// Confusion matrix of `k` classes from true and predicted labels.
pub fn confusion(truth: &[i64], pred: &[i64], k: usize) -> Vec<Vec<u64>> {
    let mut m = vec![vec![0u64; k]; k];
    for (&t, &p) in truth.iter().zip(pred) {
        m[t as usize][p as usize] += 1;
    }
    m
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Metrics {
    pub fn from_confusion(confusion: Vec<Vec<u64>>, classes: &[String], loss: f64) -> Self {
        let k = confusion.len();
        let n: u64 = confusion.iter().flatten().sum();
        let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
        let mut per_class = Vec::with_capacity(k);
        let (mut recall_sum, mut recall_n, mut f1_sum, mut f1_n) = (0.0, 0, 0.0, 0);
        for (c, row) in confusion.iter().enumerate() {
            let tp = row[c];
            let support: u64 = row.iter().sum();
            let predicted: u64 = (0..k).map(|r| confusion[r][c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            if support > 0 {
                recall_sum += recall;
                recall_n += 1;
            }
            if support > 0 || predicted > 0 {
                f1_sum += f1;
                f1_n += 1;
            }
            per_class.push(ClassMetrics {
                class: classes.get(c).cloned().unwrap_or_else(|| c.to_string()),
                precision,
                recall,
                f1,
                support,
            });
        }
        Self {
            accuracy: ratio(correct, n),
            balanced_accuracy: if recall_n > 0 {
                recall_sum / recall_n as f64
            } else {
                0.0
            },
            macro_f1: if f1_n > 0 { f1_sum / f1_n as f64 } else { 0.0 },
            loss,
            n,
            per_class,
            confusion,
        }
    }

    /// Flat named numbers, for means over seeds and comparison tables:
    /// `accuracy`, `balanced_accuracy`, `macro_f1`, `loss`, `recall/<class>`, `precision/<class>`, `f1/<class>`.
    pub fn scalars(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        m.insert("accuracy".to_string(), self.accuracy);
        m.insert("balanced_accuracy".to_string(), self.balanced_accuracy);
        m.insert("macro_f1".to_string(), self.macro_f1);
        m.insert("loss".to_string(), self.loss);
        for c in &self.per_class {
            m.insert(format!("recall/{}", c.class), c.recall);
            m.insert(format!("precision/{}", c.class), c.precision);
            m.insert(format!("f1/{}", c.class), c.f1);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn hand_computed_three_classes() {
        // truth: 4×c0, 3×c1, 3×c2
        // c0: 3 right, 1 called c1; c1: 2 right, 1 called c0; c2: 1 right, 2 called c1.
        let truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        let pred = [0, 0, 0, 1, 1, 1, 0, 2, 1, 1];
        let cm = confusion(&truth, &pred, 3);
        assert_eq!(cm, vec![vec![3, 1, 0], vec![1, 2, 0], vec![0, 2, 1]]);
        let m = Metrics::from_confusion(cm, &names(3), 0.5);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // precision: c0 3/4, c1 2/5, c2 1/1; recall: c0 3/4, c1 2/3, c2 1/3
        let p = [0.75, 0.4, 1.0];
        let r = [0.75, 2.0 / 3.0, 1.0 / 3.0];
        for c in 0..3 {
            assert!((m.per_class[c].precision - p[c]).abs() < 1e-12);
            assert!((m.per_class[c].recall - r[c]).abs() < 1e-12);
            let f1 = 2.0 * p[c] * r[c] / (p[c] + r[c]);
            assert!((m.per_class[c].f1 - f1).abs() < 1e-12);
        }
        assert!((m.balanced_accuracy - (0.75 + 2.0 / 3.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        // F1: 0.75, 0.4*0.6667*2/1.0667 = 0.5, 0.5
        assert!((m.macro_f1 - (0.75 + 0.5 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(m.n, 10);
        assert_eq!(m.per_class[2].support, 3);
    }

    #[test]
    fn class_never_predicted_counts_as_zero() {
        // c1 has 2 true examples and is never predicted.
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 0, 0, 2, 2, 2];
        let m = Metrics::from_confusion(confusion(&truth, &pred, 3), &names(3), 0.0);
        let c1 = &m.per_class[1];
        assert_eq!((c1.precision, c1.recall, c1.f1), (0.0, 0.0, 0.0));
        // c0: p 2/3 r 1 f1 0.8; c2: p 2/3 r 1 f1 0.8
        assert!((m.macro_f1 - (0.8 + 0.0 + 0.8) / 3.0).abs() < 1e-12);
        assert!((m.balanced_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn class_absent_from_truth_and_predictions_is_left_out_of_averages() {
        let truth = [0, 1];
        let pred = [0, 1];
        let m = Metrics::from_confusion(confusion(&truth, &pred, 3), &names(3), 0.0);
        assert_eq!(m.macro_f1, 1.0);
        assert_eq!(m.balanced_accuracy, 1.0);
        let s = m.scalars();
        assert_eq!(s["recall/c2"], 0.0);
        assert_eq!(s["accuracy"], 1.0);
    }
}
