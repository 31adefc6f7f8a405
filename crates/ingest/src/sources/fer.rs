//! FER2013-style CSV: `emotion,pixels,Usage` with space-separated grey pixels of a square image.

use std::path::Path;

use anyhow::{bail, Result};

use super::csv_input::CsvInput;
use super::{image_from_hwc, Item, LabelRef, Loaded, Payload, Problem, Split};

/// FER2013's seven emotions, label 0 to 6.
pub const FER_CLASSES: [&str; 7] = [
    "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
];

pub fn load(path: &Path) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let csv = CsvInput::open(path, b',', "reading the header row", &mut loaded.inputs)?;
    let find = |name: &str| {
        csv.headers()
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
    };
    let (Some(label_col), Some(pix_col)) = (find("emotion").or(find("label")), find("pixels"))
    else {
        bail!(
            "{}: a FER2013 CSV needs `emotion` (or `label`) and `pixels` columns; found {}",
            path.display(),
            csv.columns(", ")
        );
    };
    let cols = Columns {
        label: label_col,
        pixels: pix_col,
        usage: find("usage"),
    };
    let mut side = None;
    for (origin, record) in csv.rows() {
        let record = match record {
            Ok(r) => r,
            Err(reason) => {
                loaded.problems.push(Problem::new(origin, reason));
                continue;
            }
        };
        match parse_row(&record, cols, &origin) {
            Ok(item) => {
                let (w, h) = match &item.payload {
                    Payload::Image(img) => (img.width(), img.height()),
                    Payload::File { .. } => unreachable!(),
                };
                match side {
                    None => side = Some((w, h)),
                    Some(s) if s != (w, h) => {
                        loaded.problems.push(Problem::new(
                            origin,
                            format!("{w}x{h} pixels, the earlier rows are {}x{}", s.0, s.1),
                        ));
                        continue;
                    }
                    _ => {}
                }
                loaded.items.push(item)
            }
            Err(reason) => loaded.problems.push(Problem::new(origin, reason)),
        }
    }
    loaded.classes = Some(FER_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok(loaded)
}

/// Where the label, pixels and (optional) usage columns are.
#[derive(Clone, Copy)]
struct Columns {
    label: usize,
    pixels: usize,
    usage: Option<usize>,
}

/// One row as an item: an integer label, a square of grey pixels, the split from `Usage`.
fn parse_row(record: &csv::StringRecord, cols: Columns, origin: &str) -> Result<Item, String> {
    let label = record
        .get(cols.label)
        .ok_or_else(|| format!("row has {} fields, no label", record.len()))?;
    let label: i64 = label
        .parse()
        .map_err(|_| format!("label `{label}` is not an integer"))?;
    let pixels: Vec<u8> = record
        .get(cols.pixels)
        .ok_or_else(|| format!("row has {} fields, no pixels", record.len()))?
        .split_ascii_whitespace()
        .map(|v| {
            v.parse::<u8>()
                .map_err(|_| format!("pixel `{v}` is not 0..255"))
        })
        .collect::<Result<_, _>>()?;
    let s = (pixels.len() as f64).sqrt() as usize;
    if s == 0 || s * s != pixels.len() {
        return Err(format!(
            "{} pixels do not make a square image",
            pixels.len()
        ));
    }
    let split = match record.get(cols.usage.unwrap_or(usize::MAX)) {
        None => None,
        Some("Training") => Some(Split::Train),
        Some("PublicTest") => Some(Split::Val),
        Some("PrivateTest") => Some(Split::Test),
        Some(other) => {
            return Err(format!(
                "Usage `{other}` is not Training, PublicTest or PrivateTest"
            ))
        }
    };
    Ok(Item {
        origin: origin.to_string(),
        label: LabelRef::Index(label),
        split,
        payload: Payload::Image(image_from_hwc(s, s, 1, pixels).map_err(|e| e.to_string())?),
    })
}
