// ATen ops that tch 0.24 exposes without all their arguments, or not at all. Called through
// ATen's dispatcher, so autograd records them like any other op and they run on any device.
//
// Each function returns nullptr / false on error, with the message in *err (the caller frees it
// with free()). Tensor arguments are tch's handles: pointers to at::Tensor, read and not kept.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstring>
#include <vector>

namespace {

std::vector<at::Tensor> list(const at::Tensor *const *ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; i++) out.push_back(*ts[i]);
  return out;
}

}  // namespace

extern "C" {

// at::leaky_relu with an explicit slope (tch's `leaky_relu` fixes it at 0.01).
at::Tensor *rebalance_leaky_relu(const at::Tensor *x, double slope, char **err) {
  try {
    return new at::Tensor(at::leaky_relu(*x, slope));
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return nullptr;
  }
}

// One Adam update of n parameters in one fused kernel (at::_fused_adam_, torch.optim.Adam's
// fused=True): exp_avg and exp_avg_sq are updated in place and the parameters moved, with the
// bias corrections of update number `step` (the caller counts). No weight decay, no AMSGrad.
bool rebalance_fused_adam(const at::Tensor *const *params, const at::Tensor *const *grads,
                          const at::Tensor *const *exp_avgs, const at::Tensor *const *exp_avg_sqs,
                          int64_t n, double step, double lr, double beta1, double beta2, double eps,
                          char **err) {
  try {
    if (n == 0) return true;
    auto p = list(params, n), g = list(grads, n), m = list(exp_avgs, n), v = list(exp_avg_sqs, n);
    // The kernel reads each parameter's step count from a float tensor on its device.
    auto t = at::full({}, step, params[0]->options().dtype(at::kFloat));
    std::vector<at::Tensor> steps(n, t);
    c10::NoGradGuard no_grad;
    at::_fused_adam_(p, g, m, v, {}, steps, lr, beta1, beta2, /*weight_decay=*/0.0, eps,
                     /*amsgrad=*/false, /*maximize=*/false);
    return true;
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return false;
  }
}

// targets[i] += weight * (sources[i] - targets[i]) for all i in one call (at::_foreach_lerp_),
// without recording gradients.
bool rebalance_foreach_lerp(const at::Tensor *const *targets, const at::Tensor *const *sources,
                            int64_t n, double weight, char **err) {
  try {
    if (n == 0) return true;
    auto a = list(targets, n), b = list(sources, n);
    c10::NoGradGuard no_grad;
    at::_foreach_lerp_(a, b, at::Scalar(weight));
    return true;
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return false;
  }
}
}
