//! Networks and tensors: the one place that turns `--device` into a `tch::Device`.

pub mod adam;
pub mod io;
pub mod models;
pub mod ops;
pub mod quality;
pub mod train;
pub mod transforms;

use anyhow::{bail, Result};
use rebalance_core::DeviceSpec;
use rebalance_core::ImageSet;
use tch::Device;

/// Turn `--device` into a libtorch device, checking that a named CUDA device exists. Every
/// stage that trains or runs a network comes through here, so this is also where the process's
/// allocator is set up for libtorch ([`keep_freed_memory`]).
pub fn resolve_device(spec: DeviceSpec) -> Result<Device> {
    keep_freed_memory();
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

/// Images of a set as a u8 tensor `[N, C, H, W]` and labels as i64 `[N]`, on `device`.
pub fn imageset_tensors(set: &ImageSet, device: Device) -> (tch::Tensor, tch::Tensor) {
    let n = set.len() as i64;
    let images = tch::Tensor::from_slice(&set.images)
        .reshape([n, set.channels as i64, set.height as i64, set.width as i64])
        .to_device(device);
    let labels = tch::Tensor::from_slice(&set.labels).to_device(device);
    (images, labels)
}

/// u8 pixels to floats in [-1, 1] (the tanh range GANs train in).
pub fn to_unit_range(images_u8: &tch::Tensor) -> tch::Tensor {
    images_u8.to_kind(tch::Kind::Float) / 127.5 - 1.0
}

/// Floats in [-1, 1] back to u8 pixels (clamped, rounded), on the CPU.
pub fn to_u8_pixels(images: &tch::Tensor) -> Vec<u8> {
    let t = ((images.detach().to_device(Device::Cpu) + 1.0) * 127.5)
        .clamp(0.0, 255.0)
        .round()
        .to_kind(tch::Kind::Uint8)
        .contiguous()
        .view([-1]);
    Vec::<u8>::try_from(&t).expect("u8 tensor")
}

/// Let glibc's malloc keep the memory libtorch frees, so the next training step reuses it.
///
/// libtorch's CPU tensors come from `malloc`. By default glibc serves blocks over its (adaptive)
/// mmap threshold with a fresh `mmap` and returns freed heap tops to the system, so each step's
/// activations and gradients are faulted in and zeroed by the kernel again: 4–6% of a cgan
/// step's samples were `exc_page_fault` and `clear_page`. Raising the mmap threshold to its
/// 64-bit maximum (32 MiB) and the trim threshold to 1 GiB keeps those pages in the heap, so
/// the process's resident size stays near its peak instead of shrinking between steps (not
/// measured). Called once per process; no effect outside glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes malloc's parameters, under malloc's own lock. A
            // refused value (return 0) leaves glibc's default.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        });
    }
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
