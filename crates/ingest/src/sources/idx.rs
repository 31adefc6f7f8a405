//! MNIST IDX files, raw or gzipped: `<prefix>-images-idx3-ubyte[.gz]` paired with
//! `<prefix>-labels-idx1-ubyte[.gz]`. A `train` prefix gives the train split and `t10k` or
//! `test` the test split; any other prefix leaves the split to ingest.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Result};

use super::{read_input, source_files, ImageArray, Loaded, Split};

pub fn load(source: &Path) -> Result<Loaded> {
    let image_files = source_files(source, |p| file_name(p).contains("idx3-ubyte"))?;
    if image_files.is_empty() {
        bail!(
            "{}: no `*-images-idx3-ubyte[.gz]` file found",
            source.display()
        );
    }
    let mut loaded = Loaded::default();
    for images_path in &image_files {
        let name = file_name(images_path);
        let labels_name = name.replace("images", "labels").replace("idx3", "idx1");
        let labels_path = images_path.with_file_name(&labels_name);
        if !labels_path.is_file() {
            bail!(
                "{}: its labels file {} does not exist",
                images_path.display(),
                labels_path.display()
            );
        }
        let images = parse(read_input(images_path, &mut loaded.inputs)?, images_path, 3)?;
        let labels = parse(
            read_input(&labels_path, &mut loaded.inputs)?,
            &labels_path,
            1,
        )?;
        if images.0[0] != labels.0[0] {
            bail!(
                "{} holds {} images but {} holds {} labels",
                images_path.display(),
                images.0[0],
                labels_path.display(),
                labels.0[0]
            );
        }
        let lower = name.to_ascii_lowercase();
        let split = if lower.starts_with("train") {
            Some(Split::Train)
        } else if lower.starts_with("t10k") || lower.starts_with("test") {
            Some(Split::Test)
        } else {
            None
        };
        let labels: Vec<i64> = labels.1.iter().map(|&b| b as i64).collect();
        let shape = [images.0[0], images.0[1], images.0[2]];
        ImageArray::from_shape(&shape, images.1, &images_path.display().to_string())?.into_items(
            &labels,
            &images_path.display().to_string(),
            split,
            &mut loaded.items,
        )?;
    }
    Ok(loaded)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parse an IDX file of unsigned bytes with `ndims` dimensions: (dims, data). A gzipped file
/// is inflated only as far as its header says, so memory follows the declared size checked
/// against the bytes really there, and a header that overflows is refused.
pub fn parse(raw: Vec<u8>, path: &Path, ndims: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let gz = raw.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::GzDecoder::new(raw.as_slice()))
    } else {
        Box::new(raw.as_slice())
    };
    let corrupt = |e: std::io::Error| anyhow::anyhow!("{}: corrupt gzip data: {e}", path.display());
    let mut head = Vec::with_capacity(4 + 4 * ndims as usize);
    (&mut reader)
        .take(4)
        .read_to_end(&mut head)
        .map_err(corrupt)?;
    if head.len() < 4 || head[0] != 0 || head[1] != 0 {
        bail!("{}: not an IDX file (bad magic number)", path.display());
    }
    if head[2] != 0x08 {
        bail!(
            "{}: IDX data type 0x{:02x} is not unsigned bytes (0x08)",
            path.display(),
            head[2]
        );
    }
    if head[3] != ndims {
        bail!(
            "{}: IDX file has {} dimensions, expected {ndims} ({})",
            path.display(),
            head[3],
            if ndims == 3 {
                "an images file"
            } else {
                "a labels file"
            }
        );
    }
    let header = 4 + 4 * ndims as usize;
    (&mut reader)
        .take(header as u64 - 4)
        .read_to_end(&mut head)
        .map_err(corrupt)?;
    if head.len() < header {
        bail!("{}: IDX header is truncated", path.display());
    }
    let dims: Vec<usize> = (0..ndims as usize)
        .map(|i| u32::from_be_bytes(head[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let shown = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let Some(expected) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
        bail!("{}: IDX header dimensions {shown} overflow", path.display());
    };
    // The data, then the images made from it, are held at once.
    rebalance_core::memory::ensure_fits(
        &path.display().to_string(),
        &format!("IDX dimensions {shown}"),
        expected as u64,
        3,
    )?;
    let mut bytes = Vec::new();
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(corrupt)?;
    let found = bytes.len();
    if found != expected {
        bail!(
            "{}: IDX header says {shown} = {expected} bytes of data, the file holds {}",
            path.display(),
            if found > expected {
                format!("more than {expected}")
            } else {
                found.to_string()
            }
        );
    }
    Ok((dims, bytes))
}
