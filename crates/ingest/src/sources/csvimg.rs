//! A labels CSV plus an image folder, e.g. Diabetic Retinopathy's `trainLabels.csv`
//! (`image,level`) with `<image>.jpeg` files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use csv::StringRecord;

use super::csv_input::CsvInput;
use super::{Item, LabelRef, Loaded, Payload, Problem};
use crate::Args;

pub fn load(args: &Args) -> Result<Loaded> {
    // `--csv labels.csv` with the image folder as the source, or the labels CSV as the source
    // with its images beside it.
    let (csv_path, folder) = match &args.csv {
        Some(c) => (c, args.source.clone()),
        None if args.source.is_file() => (
            &args.source,
            args.source
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        ),
        None => bail!("--format csv needs --csv <labels.csv> (or the labels CSV as the source)"),
    };
    let mut loaded = Loaded::default();
    let csv = CsvInput::open(csv_path, b',', "reading the header row", &mut loaded.inputs)?;
    let col = |name: &str| {
        csv.column(name).with_context(|| {
            format!(
                "{}: no column `{name}`; the columns are {}",
                csv_path.display(),
                csv.columns(", ")
            )
        })
    };
    let cols = Columns {
        id: col(&args.id_col)?,
        label: col(&args.label_col)?,
    };
    for (origin, record) in csv.rows() {
        let item = record
            .map_err(|reason| Problem::new(&origin, reason))
            .and_then(|r| cols.item(&r, &folder, &args.suffix, &origin));
        match item {
            Ok(item) => loaded.items.push(item),
            Err(problem) => loaded.problems.push(problem),
        }
    }
    if loaded.items.is_empty() && loaded.problems.is_empty() {
        bail!("{}: the labels CSV has no rows", csv_path.display());
    }
    Ok(loaded)
}

/// Where the image id and the label are.
struct Columns {
    id: usize,
    label: usize,
}

impl Columns {
    /// One row (at `origin`) as the image file `<folder>/<id><suffix>` with its label, or the
    /// problem with it.
    fn item(
        &self,
        record: &StringRecord,
        folder: &Path,
        suffix: &str,
        origin: &str,
    ) -> Result<Item, Problem> {
        let (Some(id), Some(label)) = (record.get(self.id), record.get(self.label)) else {
            return Err(Problem::new(
                origin,
                format!(
                    "row has {} fields, expected at least {}",
                    record.len(),
                    self.id.max(self.label) + 1
                ),
            ));
        };
        if id.is_empty() || label.is_empty() {
            return Err(Problem::new(origin, "empty id or label field"));
        }
        let path = folder.join(format!("{id}{suffix}"));
        if !path.is_file() {
            return Err(Problem::new(
                path.display().to_string(),
                format!("listed at {origin} but no such file"),
            ));
        }
        Ok(Item {
            origin: path.display().to_string(),
            label: LabelRef::Name(label.to_string()),
            split: None,
            payload: Payload::File { path, roi: None },
        })
    }
}
