//! Networks and tensors: the one place that turns `--device` into a `tch::Device`.

use anyhow::{bail, Result};
use rebalance_core::DeviceSpec;
use tch::Device;

/// Turn `--device` into a libtorch device, checking that a named CUDA device exists.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cuda(n) => {
            let count = tch::Cuda::device_count();
            if n as i64 >= count {
                bail!(
                    "--device cuda:{n} was asked for, but libtorch sees {count} CUDA device(s); \
                     use --device cpu or auto"
                );
            }
            Ok(Device::Cuda(n))
        }
    }
}

/// `cpu` or `cuda:N`, as recorded in manifests.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// Seed libtorch's generators (CPU and CUDA).
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_resolves_and_missing_cuda_is_refused() {
        assert_eq!(resolve_device(DeviceSpec::Cpu).unwrap(), Device::Cpu);
        let n = tch::Cuda::device_count() as usize;
        let err = resolve_device(DeviceSpec::Cuda(n)).unwrap_err().to_string();
        assert!(err.contains(&format!("cuda:{n}")), "{err}");
        let auto = resolve_device(DeviceSpec::Auto).unwrap();
        assert_eq!(auto == Device::Cpu, n == 0);
    }

    #[test]
    fn seeding_is_deterministic() {
        seed_everything(7);
        let a = tch::Tensor::randn([4], (tch::Kind::Float, Device::Cpu));
        seed_everything(7);
        let b = tch::Tensor::randn([4], (tch::Kind::Float, Device::Cpu));
        assert!(a.equal(&b));
    }
}
