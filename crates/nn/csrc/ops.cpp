// ATen ops that tch 0.24 exposes without all their arguments. Called through ATen's
// dispatcher, so autograd records them like any other op.
#include <ATen/ATen.h>

extern "C" {

// at::leaky_relu with an explicit slope (tch's `leaky_relu` fixes it at 0.01).
// Returns a new tensor handle, or nullptr on error (message in *err, caller frees with free()).
at::Tensor *rebalance_leaky_relu(const at::Tensor *x, double slope, char **err) {
  try {
    return new at::Tensor(at::leaky_relu(*x, slope));
  } catch (const std::exception &e) {
    *err = strdup(e.what());
    return nullptr;
  }
}
}
