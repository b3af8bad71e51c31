// ATen-side helpers shared by the CPU kernel and the CUDA launcher of bias_act (not for .cu files).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "bias_act.h"

namespace retina_fast {

inline Act parse_act(c10::string_view name) {
  static const char* names[] = {"linear", "relu", "lrelu", "tanh", "sigmoid",
                                "elu", "selu", "softplus", "swish"};
  for (int i = 0; i < 9; ++i)
    if (name == names[i]) return static_cast<Act>(i);
  TORCH_CHECK_VALUE(false, "bias_act: unknown act '", std::string(name), "'");
}

// Dense layouts (contiguous, channels_last, ...) are processed in memory order as they are.
inline at::Tensor dense_or_contiguous(const at::Tensor& x) {
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

inline BiasActParams make_bias_act_params(const at::Tensor& x, const std::optional<at::Tensor>& b,
                                          int64_t dim, c10::string_view act, double alpha,
                                          double gain, double clamp) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "bias_act: x must be floating point");
  BiasActParams p;
  p.numel = x.numel();
  p.act = parse_act(act);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  p.bias_len = 0;
  p.bias_stride = 1;
  if (b.has_value() && b->defined()) {
    TORCH_CHECK_VALUE(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for ",
                      x.dim(), "-D x");
    TORCH_CHECK_VALUE(b->dim() == 1 && b->size(0) == x.size(dim), "bias_act: b must be 1-D of length x.shape[",
                      dim, "] = ", x.size(dim), ", got shape ", b->sizes());
    TORCH_CHECK(b->device() == x.device(), "bias_act: b and x are on different devices");
    p.bias_len = b->size(0);
    p.bias_stride = x.size(dim) == 1 ? x.numel() : x.stride(dim);
    if (p.bias_stride == 0) p.bias_stride = 1;
  }
  return p;
}

template <typename acc_t>
at::Tensor bias_in_acc_type(const std::optional<at::Tensor>& b) {
  if (!b.has_value() || !b->defined()) return at::Tensor();
  return b->to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
}

}  // namespace retina_fast
