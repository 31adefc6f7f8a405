//! Pickled dicts as the traffic-sign study saved GTSRB (`train.p`, `valid.p`, `test.p`):
//! `{'features': uint8 N×32×32×3, 'labels': N}`. Read by [`crate::pickle`], which never runs
//! pickle code.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{read_input, source_files, ImageArray, Loaded, Split};
use crate::pickle::{self, Value};

pub fn load(source: &Path) -> Result<Loaded> {
    let files = source_files(source, |p| {
        let n = p.to_string_lossy();
        n.ends_with(".p") || n.ends_with(".pkl") || n.ends_with(".pickle")
    })?;
    let mut loaded = Loaded::default();
    for file in &files {
        let name = file.display().to_string();
        let bytes = read_input(file, &mut loaded.inputs)?;
        if bytes.is_empty() {
            bail!("{name}: empty file (0 bytes)");
        }
        let value = pickle::load(&bytes).with_context(|| format!("{name}: reading the pickle"))?;
        let features = array(&value, &["features", "x", "images"], &name)?;
        let labels = match find(&value, &["labels", "y"]) {
            Some(Value::Array(a)) => a.to_i64().with_context(|| format!("{name}: labels"))?,
            Some(Value::List(l)) => l
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    other => bail!("{name}: a label is {}, not an integer", other.kind()),
                })
                .collect::<Result<_>>()?,
            Some(other) => bail!(
                "{name}: `labels` is {}, expected an array or list",
                other.kind()
            ),
            None => bail!("{name}: the dict has no `labels` (or `y`) key"),
        };
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let split = if stem.contains("train") {
            Some(Split::Train)
        } else if stem.contains("val") {
            Some(Split::Val)
        } else if stem.contains("test") {
            Some(Split::Test)
        } else {
            None
        };
        let pixels = features
            .to_u8()
            .with_context(|| format!("{name}: features"))?;
        ImageArray::from_shape(&features.shape, pixels, &name)?.into_items(
            &labels,
            &name,
            split,
            &mut loaded.items,
        )?;
    }
    if files.is_empty() {
        bail!("{}: no .p / .pkl / .pickle files", source.display());
    }
    Ok(loaded)
}

fn find<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| v.get(k))
}

fn array<'a>(v: &'a Value, keys: &[&str], name: &str) -> Result<&'a pickle::NdArray> {
    if !matches!(v, Value::Dict(_)) {
        bail!(
            "{name}: the pickle holds {}, expected a dict with `features` and `labels`",
            v.kind()
        );
    }
    match find(v, keys) {
        Some(Value::Array(a)) if a.fortran && a.shape.len() > 1 => {
            bail!(
                "{name}: `{}` is a Fortran-ordered array; save it with np.ascontiguousarray",
                keys[0]
            )
        }
        Some(Value::Array(a)) => Ok(a),
        Some(other) => bail!(
            "{name}: `{}` is {}, expected a NumPy array",
            keys[0],
            other.kind()
        ),
        None => bail!("{name}: the dict has no `{}` key", keys[0]),
    }
}
