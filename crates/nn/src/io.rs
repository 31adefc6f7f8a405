//! Named tensors to and from `.safetensors` (with string metadata), for checkpoints and models.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Serialise f32/i64 tensors (moved to CPU) with metadata.
pub fn to_safetensors(
    tensors: &[(String, Tensor)],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let flat = t.view([-1]);
        let (dtype, bytes) = match t.kind() {
            Kind::Float => (
                Dtype::F32,
                Vec::<f32>::try_from(&flat)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            Kind::Int64 => (
                Dtype::I64,
                Vec::<i64>::try_from(&flat)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            k => bail!("tensor `{name}` has kind {k:?}; only f32 and i64 are saved"),
        };
        bufs.push((name.clone(), dtype, shape, bytes));
    }
    let views = bufs
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.as_str(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    Ok(rebalance_core::imageset::canonical_safetensors(
        safetensors::serialize(views, Some(meta))?,
    ))
}

/// Read every tensor and the metadata of a `.safetensors` file.
pub fn read_safetensors(
    path: &Path,
    device: Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let mut out = HashMap::new();
    for name in st.names() {
        let v = st.tensor(name)?;
        let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
        let t = match v.dtype() {
            Dtype::F32 => {
                let vals: Vec<f32> = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Tensor::from_slice(&vals)
            }
            Dtype::I64 => {
                let vals: Vec<i64> = v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                Tensor::from_slice(&vals)
            }
            d => bail!(
                "{}: tensor `{name}` has dtype {d:?}; expected F32 or I64",
                path.display()
            ),
        };
        out.insert(name.to_string(), t.reshape(&shape).to_device(device));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// The variables of a VarStore, named `<prefix><var>`, in name order.
pub fn named_vars(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copy `<prefix><var>` tensors into the VarStore; every variable must be present with its shape.
pub fn load_vars(
    vs: &VarStore,
    prefix: &str,
    tensors: &HashMap<String, Tensor>,
    what: &Path,
) -> Result<()> {
    for (name, mut var) in vs.variables() {
        let key = format!("{prefix}{name}");
        let src = tensors.get(&key).with_context(|| {
            format!(
                "{}: no tensor `{key}`: the checkpoint is of another architecture",
                what.display()
            )
        })?;
        if src.size() != var.size() {
            bail!(
                "{}: `{key}` has shape {:?} but this network needs {:?}: the checkpoint is of another architecture",
                what.display(),
                src.size(),
                var.size()
            );
        }
        tch::no_grad(|| var.copy_(src));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.0, 4.0]).reshape([2, 2]);
        let b = Tensor::from_slice(&[7i64]);
        let bytes = to_safetensors(
            &[("a".into(), a.shallow_clone()), ("b".into(), b)],
            HashMap::from([("k".into(), "v".into())]),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let (t, m) = read_safetensors(&p, Device::Cpu).unwrap();
        assert!(t["a"].equal(&a));
        assert_eq!(i64::try_from(&t["b"].view([])).unwrap(), 7);
        assert_eq!(m["k"], "v");
    }
}
