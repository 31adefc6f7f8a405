//! Statistics over seeds: mean and sample standard deviation, and the paired t-test that
//! compares two runs over the seeds both have. Used by `classify --compare`, the sweep tables
//! and the report's verdict.

use std::collections::BTreeMap;

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and sample standard deviation (n − 1; 0 for a single value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Paired difference `b - a` over the seeds both have: (mean, std, n, two-sided p of a paired
/// t-test; None below 2 pairs).
pub fn paired(a: &BTreeMap<u64, f64>, b: &BTreeMap<u64, f64>) -> (f64, f64, usize, Option<f64>) {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|(s, va)| b.get(s).map(|vb| vb - va))
        .collect();
    let (mean, std) = mean_std(&d);
    let n = d.len();
    let p = if n < 2 {
        None
    } else if std == 0.0 {
        Some(if mean == 0.0 { 1.0 } else { 0.0 })
    } else {
        let t = mean / (std / (n as f64).sqrt());
        let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).expect("valid t distribution");
        Some(2.0 * (1.0 - dist.cdf(t.abs())))
    };
    (mean, std, n, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[5.0]), (5.0, 0.0));
    }
}
