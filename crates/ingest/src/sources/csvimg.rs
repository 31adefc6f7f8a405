//! A labels CSV plus an image folder, e.g. Diabetic Retinopathy's `trainLabels.csv`
//! (`image,level`) with `<image>.jpeg` files.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{read_input, Item, LabelRef, Loaded, Payload, Problem};
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
    let bytes = read_input(csv_path, &mut loaded.inputs)?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let headers = reader
        .headers()
        .with_context(|| format!("{}: reading the header row", csv_path.display()))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column `{name}`; the columns are {}",
                csv_path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (id_col, label_col) = (col(&args.id_col)?, col(&args.label_col)?);
    let csv_name = csv_path.display().to_string();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let origin = format!("{csv_name}:{line}");
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                loaded
                    .problems
                    .push(Problem::new(origin, format!("malformed CSV row: {e}")));
                continue;
            }
        };
        let (Some(id), Some(label)) = (record.get(id_col), record.get(label_col)) else {
            loaded.problems.push(Problem::new(
                origin,
                format!(
                    "row has {} fields, expected at least {}",
                    record.len(),
                    id_col.max(label_col) + 1
                ),
            ));
            continue;
        };
        if id.is_empty() || label.is_empty() {
            loaded
                .problems
                .push(Problem::new(origin, "empty id or label field"));
            continue;
        }
        let path = folder.join(format!("{id}{}", args.suffix));
        if !path.is_file() {
            loaded.problems.push(Problem::new(
                path.display().to_string(),
                format!("listed at {origin} but no such file"),
            ));
            continue;
        }
        loaded.items.push(Item {
            origin: path.display().to_string(),
            label: LabelRef::Name(label.to_string()),
            split: None,
            payload: Payload::File { path, roi: None },
        });
    }
    if loaded.items.is_empty() && loaded.problems.is_empty() {
        bail!("{}: the labels CSV has no rows", csv_path.display());
    }
    Ok(loaded)
}
