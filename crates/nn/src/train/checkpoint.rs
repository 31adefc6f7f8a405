//! A training checkpoint in one `.safetensors` file: variable groups (`<group>.<var>`), Adam
//! moments (`<opt>.m.<var>`, `<opt>.v.<var>`, with the step count `<opt>_t` in the metadata),
//! and string metadata. Written atomically, so a kill leaves the previous checkpoint intact.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tch::{nn::VarStore, Device};

use crate::adam::Adam;
use crate::io;

/// Write variable groups (`(name, store)`, saved as `<name>.<var>`) and optimizers (`(name,
/// adam)`, saved as `<name>.m.*`, `<name>.v.*` and metadata `<name>_t`) with `meta` to `path`,
/// atomically.
pub fn save(
    path: &Path,
    vars: &[(&str, &VarStore)],
    opts: &[(&str, &Adam)],
    mut meta: HashMap<String, String>,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, vs) in vars {
        tensors.extend(io::named_vars(vs, &format!("{name}.")));
    }
    for (name, opt) in opts {
        tensors.extend(opt.state(&format!("{name}.")));
        meta.insert(format!("{name}_t"), opt.t.to_string());
    }
    rebalance_core::write_atomic(path, &io::to_safetensors(&tensors, meta)?)
}

/// Load what [`save`] wrote into the same groups and optimizers; returns the metadata. Every
/// variable must be present with its shape, so a checkpoint of another architecture is refused
/// by name.
pub fn load(
    path: &Path,
    vars: &[(&str, &VarStore)],
    opts: &mut [(&str, &mut Adam)],
    device: Device,
) -> Result<HashMap<String, String>> {
    load_checked(path, vars, opts, device, |_| Ok(()))
}

/// [`load`], with `check` run on the metadata before any tensor is loaded (a caller's own
/// refusal, such as "a checkpoint of another architecture", comes before the generic one). The
/// file is read once.
pub fn load_checked(
    path: &Path,
    vars: &[(&str, &VarStore)],
    opts: &mut [(&str, &mut Adam)],
    device: Device,
    check: impl FnOnce(&HashMap<String, String>) -> Result<()>,
) -> Result<HashMap<String, String>> {
    let (t, meta) = io::read_safetensors(path, device)?;
    check(&meta)?;
    for (name, vs) in vars {
        io::load_vars(vs, &format!("{name}."), &t, path)?;
    }
    for (name, opt) in opts.iter_mut() {
        opt.load_state(&format!("{name}."), &t)
            .with_context(|| format!("{}", path.display()))?;
        opt.t = meta_value(&meta, &format!("{name}_t"), path)?;
    }
    Ok(meta)
}

/// Parse metadata `key` of the checkpoint at `path`.
pub fn meta_value<T: std::str::FromStr>(
    meta: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> Result<T> {
    meta.get(key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{}: no readable `{key}` metadata", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn trained(seed: i64) -> (VarStore, Adam) {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().randn("w", &[3], 0.0, 1.0);
        let mut opt = Adam::new(&vs, 0.1, 0.9, 0.999);
        for _ in 0..3 {
            opt.zero_grad();
            w.square().sum(Kind::Float).backward();
            opt.step();
        }
        (vs, opt)
    }

    #[test]
    fn round_trip_restores_weights_moments_and_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let (vs, opt) = trained(1);
        save(
            &path,
            &[("m", &vs)],
            &[("opt", &opt)],
            HashMap::from([("step".into(), "3".into())]),
        )
        .unwrap();
        let (vs2, mut opt2) = trained(2);
        let meta = load(
            &path,
            &[("m", &vs2)],
            &mut [("opt", &mut opt2)],
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(meta_value::<u64>(&meta, "step", &path).unwrap(), 3);
        assert_eq!(opt2.t, 3);
        assert!(vs.variables()["w"].equal(&vs2.variables()["w"]));
        for ((_, a), (_, b)) in opt.state("").iter().zip(opt2.state("")) {
            assert!(a.equal(&b));
        }
    }

    #[test]
    fn another_architecture_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let (vs, _) = trained(1);
        save(&path, &[("m", &vs)], &[], HashMap::new()).unwrap();
        let other = VarStore::new(Device::Cpu);
        let _ = other.root().zeros("w", &[4]);
        let err = load(&path, &[("m", &other)], &mut [], Device::Cpu).unwrap_err();
        assert!(
            format!("{err:#}").contains("`m.w` has shape [3]"),
            "{err:#}"
        );
    }
}
