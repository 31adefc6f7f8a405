//! The artifact contract as types: every file one stage writes and another stage, the runner or
//! the report reads, as a serde struct. `docs/artifacts.md` describes the same files in prose; a
//! test holds the two together (every documented column and field exists here, and the reverse).
//!
//! - [`layout`] — where each stage's outputs live under `artifacts/`;
//! - [`dataset`] — `ingest`'s manifest fields (classes, counts per split, rare classes);
//! - [`gan`] — `gan-train`'s `config.json`, `losses.csv` and manifest fields;
//! - [`classify`] — classifier configs, metrics, `metrics.json` and `curves.csv`;
//! - [`filter`] — `scores.csv` and `acceptance.csv`;
//! - [`augment`] — `composition.json`;
//! - [`runs`] — the runner's `run.json`;
//! - [`runner`] — the runner's `pipeline.lock`, `<artifacts>/.lock` and a sweep's `sweep.json`.

pub mod augment;
pub mod classify;
pub mod dataset;
pub mod filter;
pub mod gan;
pub mod layout;
pub mod metrics;
pub mod runner;
pub mod runs;

use std::path::Path;

use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};

/// The classes whose train count is below `below` × the median train count (the median of an
/// even number of classes is the mean of the middle pair). `ingest --rare-below` sets `below`
/// (0.5 by default) and records the result in its manifest; every other stage reads that.
pub fn rare_classes(counts: &[usize], classes: &[String], below: f64) -> Vec<String> {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2] as f64,
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    };
    classes
        .iter()
        .zip(counts)
        .filter(|(_, &c)| (c as f64) < below * median)
        .map(|(name, _)| name.clone())
        .collect()
}

/// The index of class `name` in a dataset's class list, or an error listing the classes.
pub fn class_index(classes: &[String], name: &str) -> Result<usize> {
    classes.iter().position(|c| c == name).with_context(|| {
        format!(
            "class `{name}` is not in the dataset; its classes are {}",
            classes.join(", ")
        )
    })
}

/// Read a JSON contract file as its type, naming the file on failure.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Write a JSON contract file (pretty, atomically).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).context("serialising JSON")?;
    crate::write_atomic(path, &json)
}

/// Read the typed rows of a CSV contract file; a missing file has none. Cells written by
/// [`csv_cell`] read back as they were.
pub fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = r
        .headers()
        .with_context(|| format!("reading {}", path.display()))?
        .clone();
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.with_context(|| format!("parsing {}", path.display()))?;
        let plain: csv::StringRecord = rec.iter().map(csv_uncell).collect();
        rows.push(
            plain
                .deserialize(Some(&headers))
                .with_context(|| format!("parsing {}", path.display()))?,
        );
    }
    Ok(rows)
}

/// A cell as a spreadsheet will not evaluate it (OWASP's CSV injection): text that begins
/// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, unless it is a
/// number (`-0.25` stays a number). A cell that begins with `'` gets one more, so
/// [`csv_uncell`] gives back exactly what was written.
pub fn csv_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err();
    if risky || cell.starts_with('\'') {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The text [`csv_cell`] was given.
pub fn csv_uncell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['\'', '=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// CSV text from rows of cells, each made safe by [`csv_cell`].
pub fn csv_of_records<I, R, S>(rows: I) -> Result<Vec<u8>>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(row.into_iter().map(|c| csv_cell(c.as_ref()).into_owned()))?;
    }
    Ok(w.into_inner()?)
}

/// The CSV text of typed rows (the header comes from the row type), every cell made safe by
/// [`csv_cell`].
pub fn csv_bytes<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    let raw = w.into_inner()?;
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(raw.as_slice());
    let records: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>()?;
    csv_of_records(records.iter().map(|r| r.iter()))
}

/// Write typed rows as a CSV contract file, atomically.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    crate::write_atomic(path, &csv_bytes(rows)?)
}

/// For fields written as JSON numbers that may be NaN: serde_json writes NaN as `null`, which
/// reads back as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_quoted_and_read_back_as_written() {
        for (cell, written) in [
            ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
            ("+1+1", "'+1+1"),
            ("-cmd", "'-cmd"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("'quoted", "''quoted"),
            ("-0.25", "-0.25"),
            ("+3", "+3"),
            ("a,b\"c", "a,b\"c"),
            ("plain", "plain"),
        ] {
            assert_eq!(csv_cell(cell), written, "{cell}");
            assert_eq!(csv_uncell(written), cell, "{written}");
        }
        #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Row {
            class: String,
            x: f64,
        }
        let rows = vec![
            Row {
                class: "=cmd|calc".into(),
                x: -1.5,
            },
            Row {
                class: "a,b\"c".into(),
                x: 2.0,
            },
        ];
        let bytes = csv_bytes(&rows).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("'=cmd|calc,-1.5"), "{text}");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r.csv");
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(read_csv::<Row>(&p).unwrap(), rows);
    }

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| i.to_string()).collect()
    }

    #[test]
    fn rare_is_below_the_fraction_of_the_true_median() {
        assert_eq!(
            rare_classes(&[300, 10, 300, 70, 151], &names(5), 0.5),
            ["1", "3"]
        );
        // Even count: the median is the mean of the middle pair, (100 + 300) / 2 = 200, so 100
        // is not rare (the upper middle value, 300, would have made it so).
        assert_eq!(rare_classes(&[100, 300, 300, 10], &names(4), 0.5), ["3"]);
        assert!(rare_classes(&[], &[], 0.5).is_empty());
    }
}
