//! Image sets: one `.safetensors` file with `images` u8 `[N, C, H, W]`, `labels` i64 `[N]`
//! and the metadata key `classes` (a JSON list of class names, index = label).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

use crate::CONTRACT_VERSION;

/// Everything that can be wrong with an image set on disk or in memory.
#[derive(Debug, Error)]
pub enum ContractError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` is missing (an image set holds `images` and `labels`)")]
    MissingTensor { path: PathBuf, name: &'static str },
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    Dtype {
        path: PathBuf,
        name: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: {reason}")]
    Shape { path: PathBuf, reason: String },
    #[error("{path}: metadata `classes` {reason}")]
    Classes { path: PathBuf, reason: String },
    #[error("{path}: label {label} at index {index} is outside the {n_classes} classes")]
    Label {
        path: PathBuf,
        index: usize,
        label: i64,
        n_classes: usize,
    },
}

/// An in-memory image set. Pixels are u8, channel-first, images stored back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    pub classes: Vec<String>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Where each image came from ([`source`]'s kinds), when the set says: the optional
    /// `source` tensor (u8 `[N]`). Absent: every image is real.
    pub source: Option<Vec<u8>>,
}

/// The kinds of the `source` tensor.
pub mod source {
    /// A real image of the split.
    pub const REAL: u8 = 0;
    /// A copy of a real image (oversampling).
    pub const REPEATED: u8 = 1;
    /// A classical transform of a real (or synthetic) image.
    pub const CLASSICAL: u8 = 2;
    /// A generated image.
    pub const SYNTHETIC: u8 = 3;
    /// The names, by kind.
    pub const NAMES: [&str; 4] = ["real", "repeated", "classical", "synthetic"];
}

impl ImageSet {
    /// An empty set with the given geometry and classes.
    pub fn empty(classes: Vec<String>, channels: usize, height: usize, width: usize) -> Self {
        Self {
            images: Vec::new(),
            labels: Vec::new(),
            classes,
            channels,
            height,
            width,
            source: None,
        }
    }

    /// Bytes per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`, channel-first.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Append one image; its length must be C·H·W. A set that records sources records it as real.
    pub fn push(&mut self, pixels: &[u8], label: i64) {
        assert_eq!(pixels.len(), self.image_len(), "image length mismatch");
        self.images.extend_from_slice(pixels);
        self.labels.push(label);
        if let Some(s) = &mut self.source {
            s.push(source::REAL);
        }
    }

    /// Append one image of the given [`source`] kind (the set records sources from now on).
    pub fn push_from(&mut self, pixels: &[u8], label: i64, kind: u8) {
        let n = self.len();
        self.push(pixels, label);
        let s = self.source.get_or_insert_with(|| vec![source::REAL; n + 1]);
        s[n] = kind;
    }

    /// Where image `i` came from.
    pub fn source_of(&self, i: usize) -> u8 {
        self.source.as_ref().map_or(source::REAL, |s| s[i])
    }

    /// Images per class, indexed by label.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// Check the invariants that readers rely on.
    pub fn validate(&self, path: &Path) -> Result<(), ContractError> {
        let shape_err = |reason: String| ContractError::Shape {
            path: path.to_path_buf(),
            reason,
        };
        if self.channels != 1 && self.channels != 3 {
            return Err(shape_err(format!(
                "images have {} channels, expected 1 or 3",
                self.channels
            )));
        }
        if self.images.len() != self.labels.len() * self.image_len() {
            return Err(shape_err(format!(
                "{} pixel bytes do not make {} images of {}x{}x{}",
                self.images.len(),
                self.labels.len(),
                self.channels,
                self.height,
                self.width
            )));
        }
        if let Some(src) = &self.source {
            if src.len() != self.labels.len() {
                return Err(shape_err(format!(
                    "`source` has {} entries for {} images",
                    src.len(),
                    self.labels.len()
                )));
            }
            if let Some((i, k)) = src.iter().enumerate().find(|(_, &k)| k > source::SYNTHETIC) {
                return Err(shape_err(format!(
                    "`source`[{i}] is {k}; the kinds are 0 real, 1 repeated, 2 classical, 3 synthetic"
                )));
            }
        }
        if self.classes.is_empty() {
            return Err(ContractError::Classes {
                path: path.to_path_buf(),
                reason: "is empty".into(),
            });
        }
        for (index, &label) in self.labels.iter().enumerate() {
            if label < 0 || label as usize >= self.classes.len() {
                return Err(ContractError::Label {
                    path: path.to_path_buf(),
                    index,
                    label,
                    n_classes: self.classes.len(),
                });
            }
        }
        Ok(())
    }

    /// Serialise to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ContractError> {
        let path = Path::new("<memory>");
        self.validate(path)?;
        let labels: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        let fmt = |e: safetensors::SafeTensorError| ContractError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let images = safetensors::tensor::TensorView::new(
            Dtype::U8,
            vec![self.len(), self.channels, self.height, self.width],
            &self.images,
        )
        .map_err(fmt)?;
        let labels = safetensors::tensor::TensorView::new(Dtype::I64, vec![self.len()], &labels)
            .map_err(fmt)?;
        let mut meta = HashMap::new();
        meta.insert(
            "classes".to_string(),
            serde_json::to_string(&self.classes).expect("strings serialise"),
        );
        meta.insert("contract_version".to_string(), CONTRACT_VERSION.to_string());
        let mut tensors = vec![("images", images), ("labels", labels)];
        if let Some(src) = &self.source {
            tensors.push((
                "source",
                safetensors::tensor::TensorView::new(Dtype::U8, vec![src.len()], src)
                    .map_err(fmt)?,
            ));
        }
        let bytes = safetensors::serialize(tensors, Some(meta)).map_err(fmt)?;
        Ok(canonical_safetensors(bytes))
    }

    /// Write atomically to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_atomic(path, &self.to_bytes()?)
    }

    /// Read a stage input, saying which stage makes it when the file is missing.
    pub fn read_input(path: &Path, what: &str, hint: &str) -> anyhow::Result<Self> {
        if !path.exists() {
            anyhow::bail!("{}: no {what}; {hint}", path.display());
        }
        Ok(Self::read(path)?)
    }

    /// Refuse a training set (read from `path`) in which one of `classes` (indices) has no
    /// image; `remedy` says how the stage can leave the class out.
    pub fn ensure_classes_have_images(
        &self,
        path: &Path,
        classes: impl IntoIterator<Item = usize>,
        remedy: &str,
    ) -> anyhow::Result<()> {
        let counts = self.counts();
        let empty: Vec<&str> = classes
            .into_iter()
            .filter(|&c| counts.get(c) == Some(&0))
            .map(|c| self.classes[c].as_str())
            .collect();
        if !empty.is_empty() {
            anyhow::bail!(
                "{}: class{} `{}` {} no training image; {remedy}, or ingest the data again with \
                 --classes listing only the classes to keep",
                path.display(),
                if empty.len() > 1 { "es" } else { "" },
                empty.join("`, `"),
                if empty.len() > 1 { "have" } else { "has" },
            );
        }
        Ok(())
    }

    /// Refuse a set (read from `path`) whose classes or image shape differ from `reference`'s
    /// (read from `reference_path`).
    pub fn ensure_matches(
        &self,
        path: &Path,
        reference: &ImageSet,
        reference_path: &Path,
    ) -> anyhow::Result<()> {
        if self.classes != reference.classes {
            anyhow::bail!(
                "{}: classes [{}] differ from [{}] in {}",
                path.display(),
                self.classes.join(", "),
                reference.classes.join(", "),
                reference_path.display()
            );
        }
        let shape = |s: &ImageSet| format!("{}×{}×{}", s.channels, s.height, s.width);
        if shape(self) != shape(reference) {
            anyhow::bail!(
                "{}: images are {} (C×H×W) but {} has {}",
                path.display(),
                shape(self),
                reference_path.display(),
                shape(reference)
            );
        }
        Ok(())
    }

    /// Parse safetensors bytes; `path` is used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, ContractError> {
        let p = || path.to_path_buf();
        let st = SafeTensors::deserialize(bytes).map_err(|e| ContractError::Format {
            path: p(),
            reason: e.to_string(),
        })?;
        let classes = classes_of(bytes, path)?;
        let tensor = |name| {
            st.tensor(name)
                .map_err(|_| ContractError::MissingTensor { path: p(), name })
        };
        let (images, labels) = (tensor("images")?, tensor("labels")?);
        check_dtype(&images, "images", (Dtype::U8, "U8"), path)?;
        check_dtype(&labels, "labels", (Dtype::I64, "I64"), path)?;
        let &[n, c, h, w] = images.shape() else {
            return Err(ContractError::Shape {
                path: p(),
                reason: format!(
                    "`images` has shape {:?}, expected [N, C, H, W]",
                    images.shape()
                ),
            });
        };
        if labels.shape() != [n] {
            return Err(ContractError::Shape {
                path: p(),
                reason: format!(
                    "`labels` has shape {:?}, expected [{n}] to match `images`",
                    labels.shape()
                ),
            });
        }
        let source = match st.tensor("source") {
            Err(_) => None,
            Ok(t) => {
                check_dtype(&t, "source", (Dtype::U8, "U8"), path)?;
                Some(t.data().to_vec())
            }
        };
        let set = Self {
            source,
            images: images.data().to_vec(),
            labels: labels
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            classes,
            channels: c,
            height: h,
            width: w,
        };
        set.validate(path)?;
        Ok(set)
    }

    /// Read and validate an image set file.
    pub fn read(path: &Path) -> Result<Self, ContractError> {
        let bytes = std::fs::read(path).map_err(|source| ContractError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }
}

/// The metadata `classes` of a safetensors file: a JSON list of class names.
fn classes_of(bytes: &[u8], path: &Path) -> Result<Vec<String>, ContractError> {
    let p = || path.to_path_buf();
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| ContractError::Format {
        path: p(),
        reason: e.to_string(),
    })?;
    let classes_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("classes"))
        .ok_or_else(|| ContractError::Classes {
            path: p(),
            reason: "is missing".into(),
        })?;
    serde_json::from_str(classes_json).map_err(|e| ContractError::Classes {
        path: p(),
        reason: format!("is not a JSON list of strings: {e}"),
    })
}

/// Refuse tensor `name` unless its dtype is `want` (the dtype, and its name in the message).
fn check_dtype(
    t: &TensorView<'_>,
    name: &'static str,
    want: (Dtype, &'static str),
    path: &Path,
) -> Result<(), ContractError> {
    if t.dtype() == want.0 {
        return Ok(());
    }
    Err(ContractError::Dtype {
        path: path.to_path_buf(),
        name,
        found: format!("{:?}", t.dtype()),
        expected: want.1,
    })
}

/// Rewrite a safetensors file's JSON header with sorted keys, so that the same tensors and
/// metadata always give the same bytes (safetensors keeps metadata in a `HashMap`, whose order
/// changes from run to run; hashes of outputs must not). The data section is unchanged.
pub fn canonical_safetensors(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    // serde_json's map is a BTreeMap (no `preserve_order`), so this prints keys sorted.
    let mut json = serde_json::to_vec(&value).expect("JSON value serialises");
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageSet {
        let mut s = ImageSet::empty(vec!["a".into(), "b".into()], 1, 2, 2);
        s.push(&[0, 1, 2, 3], 0);
        s.push(&[4, 5, 6, 7], 1);
        s.push(&[8, 9, 10, 11], 1);
        s
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = s.to_bytes().unwrap();
        let back = ImageSet::from_bytes(&bytes, Path::new("x")).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.counts(), vec![1, 2]);
        assert_eq!(back.image(2), &[8, 9, 10, 11]);
    }

    #[test]
    fn bad_label_is_named() {
        let mut s = sample();
        s.labels[1] = 7;
        let err = s.to_bytes().unwrap_err().to_string();
        assert!(err.contains("label 7 at index 1"), "{err}");
    }

    #[test]
    fn garbage_and_missing_classes_are_refused() {
        let err = ImageSet::from_bytes(b"not a file", Path::new("g.safetensors")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("g.safetensors: not a safetensors"),
            "{err}"
        );
        // Valid safetensors without the `classes` metadata.
        let data = [1u8; 4];
        let v = safetensors::tensor::TensorView::new(Dtype::U8, vec![1, 1, 2, 2], &data).unwrap();
        let l = 0i64.to_le_bytes();
        let lv = safetensors::tensor::TensorView::new(Dtype::I64, vec![1], &l).unwrap();
        let bytes = safetensors::serialize([("images", v), ("labels", lv)], None).unwrap();
        let err = ImageSet::from_bytes(&bytes, Path::new("m")).unwrap_err();
        assert!(err.to_string().contains("`classes` is missing"), "{err}");
    }

    #[test]
    fn bytes_are_the_same_every_time() {
        let mut set = ImageSet::empty(vec!["a".into(), "b".into()], 1, 2, 2);
        set.push(&[1, 2, 3, 4], 1);
        let first = set.to_bytes().unwrap();
        for _ in 0..20 {
            assert_eq!(set.to_bytes().unwrap(), first);
        }
        let back = ImageSet::from_bytes(&first, Path::new("x")).unwrap();
        assert_eq!(back.labels, vec![1]);
        assert_eq!(back.classes, set.classes);
    }
}
