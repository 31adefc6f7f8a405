//! NumPy arrays as people save them from `keras.datasets`: an `.npz` with `x`/`y` (or
//! `x_train`, `y_train`, `x_test`, `y_test`, and optionally `x_val`/`y_val`), or a folder of
//! `.npy` files with the same names.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyExt};

use super::{read_input, ImageArray, Loaded, Split};
use crate::pickle::pixels_from_values;

/// One named array read from an npz or npy file, in the few dtypes that occur.
enum Any {
    U8(ArrayD<u8>),
    Int(ArrayD<i64>),
    Float(ArrayD<f64>),
}

impl Any {
    fn shape(&self) -> Vec<usize> {
        match self {
            Any::U8(a) => a.shape().to_vec(),
            Any::Int(a) => a.shape().to_vec(),
            Any::Float(a) => a.shape().to_vec(),
        }
    }
    fn pixels(self, what: &str) -> Result<Vec<u8>> {
        let to_vec = |v: Vec<f64>, f: bool| {
            pixels_from_values(&v, f).map_err(|e| anyhow::anyhow!("{what}: {e}"))
        };
        match self {
            Any::U8(a) => Ok(a.as_standard_layout().iter().copied().collect()),
            Any::Int(a) => to_vec(
                a.as_standard_layout().iter().map(|&v| v as f64).collect(),
                false,
            ),
            Any::Float(a) => to_vec(a.as_standard_layout().iter().copied().collect(), true),
        }
    }
    fn labels(self, what: &str) -> Result<Vec<i64>> {
        match self {
            Any::U8(a) => Ok(a.iter().map(|&v| v as i64).collect()),
            Any::Int(a) => Ok(a.iter().copied().collect()),
            Any::Float(a) => a
                .iter()
                .map(|&v| {
                    if v.fract() == 0.0 {
                        Ok(v as i64)
                    } else {
                        bail!("{what}: label {v} is not an integer")
                    }
                })
                .collect(),
        }
    }
}

/// Try the element types in turn: ndarray-npy reads only the type it is asked for.
/// `$T` names the element type inside `$e`.
macro_rules! read_any {
    ($what:expr, $T:ident => $e:expr) => {{
        #[allow(clippy::redundant_closure_call, unused_mut)]
        let mut attempt = || -> Option<Any> {
            {
                type $T = u8;
                if let Ok(a) = $e {
                    return Some(Any::U8(a));
                }
            }
            macro_rules! int {
                ($ty:ty) => {{
                    type $T = $ty;
                    if let Ok(a) = $e {
                        return Some(Any::Int(a.mapv(|v| v as i64)));
                    }
                }};
            }
            int!(i64);
            int!(i32);
            int!(u16);
            int!(i16);
            int!(u32);
            int!(i8);
            int!(u64);
            {
                type $T = f32;
                if let Ok(a) = $e {
                    return Some(Any::Float(a.mapv(|v| v as f64)));
                }
            }
            {
                type $T = f64;
                if let Ok(a) = $e {
                    return Some(Any::Float(a));
                }
            }
            None
        };
        match attempt() {
            Some(a) => a,
            None => bail!("{}: not an array of u8, integers or floats", $what),
        }
    }};
}

const SPLITS: [(&str, Option<Split>); 4] = [
    ("", None),
    ("_train", Some(Split::Train)),
    ("_val", Some(Split::Val)),
    ("_test", Some(Split::Test)),
];

pub fn load(source: &Path) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut pairs: Vec<(Any, Any, String, Option<Split>)> = Vec::new();
    let name = source.display().to_string();
    let is_npz = source.is_file() && source.extension().is_some_and(|e| e == "npz");
    if is_npz {
        let bytes = read_input(source, &mut loaded.inputs)?;
        let mut npz = NpzReader::new(std::io::Cursor::new(bytes))
            .with_context(|| format!("{name}: not a valid .npz"))?;
        let names = npz
            .names()
            .with_context(|| format!("{name}: listing arrays"))?;
        for (suffix, split) in SPLITS {
            let (xn, yn) = (format!("x{suffix}"), format!("y{suffix}"));
            let has = |n: &str| names.iter().any(|m| m == n || m == &format!("{n}.npy"));
            if !has(&xn) {
                continue;
            }
            if !has(&yn) {
                bail!("{name}: has `{xn}` but no `{yn}`");
            }
            let key = |n: &str| {
                names
                    .iter()
                    .find(|m| *m == n || **m == format!("{n}.npy"))
                    .unwrap()
                    .clone()
            };
            let (xk, yk) = (key(&xn), key(&yn));
            let x = read_any!(format!("{name}:{xk}"), T => npz.by_name::<OwnedRepr<T>, IxDyn>(&xk));
            let y = read_any!(format!("{name}:{yk}"), T => npz.by_name::<OwnedRepr<T>, IxDyn>(&yk));
            pairs.push((x, y, format!("{name}:{xn}"), split));
        }
        if pairs.is_empty() {
            bail!(
                "{name}: no `x`/`y` or `x_train`/`y_train` arrays (found {})",
                names.join(", ")
            );
        }
    } else {
        let dir = if source.is_file() {
            source.parent().unwrap_or(Path::new("."))
        } else {
            source
        };
        for (suffix, split) in SPLITS {
            let (xp, yp) = (
                dir.join(format!("x{suffix}.npy")),
                dir.join(format!("y{suffix}.npy")),
            );
            if !xp.is_file() {
                continue;
            }
            if !yp.is_file() {
                bail!("{}: no matching {}", xp.display(), yp.display());
            }
            let mut read = |p: &Path| -> Result<Any> {
                let bytes = read_input(p, &mut loaded.inputs)?;
                Ok(read_any!(p.display(), T => ArrayD::<T>::read_npy(std::io::Cursor::new(&bytes))))
            };
            let (x, y) = (read(&xp)?, read(&yp)?);
            pairs.push((x, y, xp.display().to_string(), split));
        }
        if pairs.is_empty() {
            bail!(
                "{}: no x.npy / y.npy (or x_train.npy / y_train.npy) found",
                dir.display()
            );
        }
    }
    for (x, y, origin, split) in pairs {
        let shape = x.shape();
        let labels = y.labels(&origin)?;
        let pixels = x.pixels(&origin)?;
        ImageArray::from_shape(&shape, pixels, &origin)?.into_items(
            &labels,
            &origin,
            split,
            &mut loaded.items,
        )?;
    }
    Ok(loaded)
}
