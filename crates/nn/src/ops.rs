//! Safe wrappers over the C++ shim in `csrc/ops.cpp`.

use std::ffi::{c_char, c_void, CStr};

use tch::Tensor;

extern "C" {
    fn rebalance_leaky_relu(x: *const c_void, slope: f64, err: *mut *mut c_char) -> *mut c_void;
    fn rebalance_fused_adam(
        params: *const *const c_void,
        grads: *const *const c_void,
        exp_avgs: *const *const c_void,
        exp_avg_sqs: *const *const c_void,
        n: i64,
        step: f64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        err: *mut *mut c_char,
    ) -> bool;
    fn rebalance_foreach_lerp(
        targets: *const *const c_void,
        sources: *const *const c_void,
        n: i64,
        weight: f64,
        err: *mut *mut c_char,
    ) -> bool;
}

/// The shim's message for a failed call, freed.
///
/// # Safety
/// `err` was set by the shim (a `strdup` result).
unsafe fn take_error(err: *mut c_char) -> String {
    let msg = CStr::from_ptr(err).to_string_lossy().into_owned();
    libc::free(err as *mut libc::c_void);
    msg
}

/// The C handles of `ts`, for the shim's list arguments.
fn handles(ts: &[Tensor]) -> Vec<*const c_void> {
    ts.iter().map(|t| t.as_ptr() as *const c_void).collect()
}

/// LeakyReLU with slope `slope` for x < 0 (ATen's fused kernel; tch's own fixes 0.01).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: tch's C tensor handle is a pointer to an at::Tensor, which the shim reads and
    // does not keep; a non-null result is a fresh at::Tensor* that the new Tensor owns.
    unsafe {
        let out = rebalance_leaky_relu(x.as_ptr() as *const c_void, slope, &mut err);
        if out.is_null() {
            panic!("at::leaky_relu failed: {}", take_error(err));
        }
        Tensor::from_ptr(out as *mut _)
    }
}

/// The hyper-parameters of one Adam update ([`fused_adam`]).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Update number, from 1 (for the bias corrections).
    pub t: i64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// One Adam update of `params` from `grads` in ATen's fused kernel (`at::_fused_adam_`, as
/// `torch.optim.Adam(fused=True)`): each tensor is read and written once instead of once per
/// elementwise op. `exp_avgs` and `exp_avg_sqs` are updated in place. The four lists are
/// parallel; every gradient must be defined.
pub fn fused_adam(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    h: AdamStep,
) {
    let n = params.len();
    assert!(
        grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n,
        "fused_adam: {n} parameters but {} gradients, {} first and {} second moments",
        grads.len(),
        exp_avgs.len(),
        exp_avg_sqs.len()
    );
    let (p, g, m, v) = (
        handles(params),
        handles(grads),
        handles(exp_avgs),
        handles(exp_avg_sqs),
    );
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: four arrays of n live tensor handles, read during the call and not kept.
    unsafe {
        let ok = rebalance_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n as i64,
            h.t as f64,
            h.lr,
            h.beta1,
            h.beta2,
            h.eps,
            &mut err,
        );
        if !ok {
            panic!("at::_fused_adam_ failed: {}", take_error(err));
        }
    }
}

/// `targets[i] += weight * (sources[i] - targets[i])` for every i in one call
/// (`at::_foreach_lerp_`), without recording gradients.
pub fn foreach_lerp(targets: &[Tensor], sources: &[Tensor], weight: f64) {
    assert_eq!(targets.len(), sources.len(), "foreach_lerp: list lengths");
    let (a, b) = (handles(targets), handles(sources));
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: two arrays of live tensor handles, read during the call and not kept.
    unsafe {
        if !rebalance_foreach_lerp(a.as_ptr(), b.as_ptr(), a.len() as i64, weight, &mut err) {
            panic!("at::_foreach_lerp_ failed: {}", take_error(err));
        }
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

    #[test]
    fn foreach_lerp_moves_every_target_towards_its_source() {
        let targets = [
            Tensor::zeros([3], (Kind::Float, Device::Cpu)),
            Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        ];
        let sources = [
            Tensor::ones([3], (Kind::Float, Device::Cpu)),
            Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        ];
        foreach_lerp(&targets, &sources, 0.25);
        assert_eq!(Vec::<f32>::try_from(&targets[0]).unwrap(), vec![0.25; 3]);
        assert_eq!(
            Vec::<f32>::try_from(&targets[1].flatten(0, -1)).unwrap(),
            vec![0.75; 4]
        );
        assert_eq!(Vec::<f32>::try_from(&sources[0]).unwrap(), vec![1.0; 3]);
    }
}
