//! Safe wrappers over the C++ shim in `csrc/ops.cpp`.

use std::ffi::{c_char, c_void, CStr};

use tch::Tensor;

extern "C" {
    fn rebalance_leaky_relu(x: *const c_void, slope: f64, err: *mut *mut c_char) -> *mut c_void;
}

/// LeakyReLU with slope `slope` for x < 0 (ATen's fused kernel; tch's own fixes 0.01).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: tch's C tensor handle is a pointer to an at::Tensor, which the shim reads and
    // does not keep; a non-null result is a fresh at::Tensor* that the new Tensor owns.
    unsafe {
        let out = rebalance_leaky_relu(x.as_ptr() as *const c_void, slope, &mut err);
        if out.is_null() {
            let msg = CStr::from_ptr(err).to_string_lossy().into_owned();
            libc::free(err as *mut libc::c_void);
            panic!("at::leaky_relu failed: {msg}");
        }
        Tensor::from_ptr(out as *mut _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_the_definition_and_has_gradients() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 3.0]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2);
        assert_eq!(
            Vec::<f32>::try_from(&y).unwrap(),
            vec![-0.4, -0.1, 0.0, 3.0]
        );
        y.sum(Kind::Float).backward();
        assert_eq!(
            Vec::<f32>::try_from(&x.grad()).unwrap(),
            vec![0.2, 0.2, 0.2, 1.0]
        );
        let big = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let want = big.maximum(&(&big * 0.2));
        assert!(leaky_relu(&big, 0.2).allclose(&want, 1e-6, 1e-6, false));
    }
}
