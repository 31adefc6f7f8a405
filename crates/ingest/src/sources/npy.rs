//! NumPy arrays as people save them from `keras.datasets`: an `.npz` with `x`/`y` (or
//! `x_train`, `y_train`, `x_test`, `y_test`, and optionally `x_val`/`y_val`), or a folder of
//! `.npy` files with the same names.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::ReadNpyExt;
use rebalance_core::FileRecord;

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

/// Read an array whose bytes [`read_npy_bounded`] has checked, in whichever element type it has.
fn parse_any(npy: &[u8], what: &str) -> Result<Any> {
    Ok(read_any!(what, T => ArrayD::<T>::read_npy(npy)))
}

/// numpy writes headers of a few hundred bytes; anything past this is refused.
const MAX_HEADER: usize = 1 << 20;

/// Read one `.npy` stream (a file's bytes or an npz member) whole, after checking that its
/// header's `shape` and `descr` ask for exactly the data bytes present. Memory grows with the
/// bytes actually read, never with what the header declares, so a crafted header cannot make
/// the reader allocate more than the input holds.
fn read_npy_bounded(mut r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 10];
    r.read_exact(&mut buf)
        .with_context(|| format!("{what}: shorter than an .npy header"))?;
    if &buf[..6] != b"\x93NUMPY" {
        bail!("{what}: not an .npy array (the magic string is missing)");
    }
    let header_len = match buf[6] {
        1 => u16::from_le_bytes([buf[8], buf[9]]) as usize,
        2 | 3 => {
            let mut more = [0u8; 2];
            r.read_exact(&mut more)
                .with_context(|| format!("{what}: header truncated"))?;
            buf.extend_from_slice(&more);
            u32::from_le_bytes([buf[8], buf[9], more[0], more[1]]) as usize
        }
        v => bail!(
            "{what}: field `version` is {v}.{}; numpy writes 1, 2 or 3",
            buf[7]
        ),
    };
    if header_len > MAX_HEADER {
        bail!("{what}: field `header_len` is {header_len} bytes; more than the 1 MiB allowed");
    }
    let start = buf.len();
    (&mut r)
        .take(header_len as u64)
        .read_to_end(&mut buf)
        .with_context(|| format!("{what}: reading the header"))?;
    if buf.len() - start != header_len {
        bail!(
            "{what}: field `header_len` says {header_len} bytes, the file has {}",
            buf.len() - start
        );
    }
    let header = Header::from_reader(&mut &buf[..])
        .map_err(|e| anyhow!("{what}: the header does not parse: {e}"))?;
    let descr = header.type_descriptor.to_string();
    let item = item_size(&descr)
        .ok_or_else(|| anyhow!("{what}: field `descr` is {descr}; not a plain numeric type"))?;
    let need = header
        .shape
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| anyhow!("{what}: field `shape` {:?} overflows", header.shape))?;
    // The bytes, the parsed array and the pixels are held at once.
    rebalance_core::memory::ensure_fits(
        what,
        &format!("field `shape` {:?} of {descr}", header.shape),
        need as u64,
        3,
    )?;
    let start = buf.len();
    (&mut r)
        .take(need as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("{what}: reading the data"))?;
    let got = buf.len() - start;
    if got != need {
        bail!(
            "{what}: field `shape` {:?} of {descr} needs {need} bytes of data; the file has {}",
            header.shape,
            if got > need {
                format!("more than {need}")
            } else {
                got.to_string()
            }
        );
    }
    Ok(buf)
}

/// Bytes per element of a numeric dtype string such as `'<f8'` or `'|u1'`.
fn item_size(descr: &str) -> Option<usize> {
    let d = descr.trim_matches(|c| c == '\'' || c == '"');
    let d = d.strip_prefix(['<', '>', '|', '=']).unwrap_or(d);
    let mut chars = d.chars();
    if !matches!(chars.next()?, 'b' | 'i' | 'u' | 'f') {
        return None;
    }
    chars
        .as_str()
        .parse()
        .ok()
        .filter(|&n| [1, 2, 4, 8].contains(&n))
}

const SPLITS: [(&str, Option<Split>); 4] = [
    ("", None),
    ("_train", Some(Split::Train)),
    ("_val", Some(Split::Val)),
    ("_test", Some(Split::Test)),
];

/// An images array, its labels array, where the images are, and the split the names give.
type Pair = (Any, Any, String, Option<Split>);

pub fn load(source: &Path) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let is_npz = source.is_file() && source.extension().is_some_and(|e| e == "npz");
    let pairs = if is_npz {
        npz_pairs(source, &mut loaded.inputs)?
    } else {
        npy_pairs(source, &mut loaded.inputs)?
    };
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

/// The `x`/`y` pairs of an `.npz` file.
fn npz_pairs(source: &Path, inputs: &mut Vec<FileRecord>) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    let name = source.display().to_string();
    let bytes = read_input(source, inputs)?;
    let mut npz = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .with_context(|| format!("{name}: not a valid .npz (zip)"))?;
    let names: Vec<String> = npz.file_names().map(str::to_string).collect();
    for (suffix, split) in SPLITS {
        let (xn, yn) = (format!("x{suffix}"), format!("y{suffix}"));
        let key = |n: &str| {
            names
                .iter()
                .find(|m| *m == n || **m == format!("{n}.npy"))
                .cloned()
        };
        let Some(xk) = key(&xn) else { continue };
        let Some(yk) = key(&yn) else {
            bail!("{name}: has `{xn}` but no `{yn}`");
        };
        let mut member = |k: &str| -> Result<Any> {
            let what = format!("{name}:{k}");
            let file = npz
                .by_name(k)
                .with_context(|| format!("{what}: cannot open the member"))?;
            parse_any(&read_npy_bounded(file, &what)?, &what)
        };
        let (x, y) = (member(&xk)?, member(&yk)?);
        pairs.push((x, y, format!("{name}:{xn}"), split));
    }
    if pairs.is_empty() {
        bail!(
            "{name}: no `x`/`y` or `x_train`/`y_train` arrays (found {})",
            names.join(", ")
        );
    }
    Ok(pairs)
}

/// The `x*.npy`/`y*.npy` pairs of the source folder (or of the folder of the `.npy` given).
fn npy_pairs(source: &Path, inputs: &mut Vec<FileRecord>) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
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
            let bytes = read_input(p, inputs)?;
            let what = p.display().to_string();
            parse_any(&read_npy_bounded(&bytes[..], &what)?, &what)
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
    Ok(pairs)
}
