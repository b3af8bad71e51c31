// ATen-side argument handling shared by the CPU kernel and the CUDA launcher of modulate.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

#include "modulate.h"

namespace retina_fast {

// Checks shapes and returns the params; *noise_out receives noise expanded to x's shape
// (zero strides, no copy) or an undefined tensor.
inline ModulateParams make_modulate_params(const at::Tensor& x, const at::Tensor& s,
                                           const std::optional<at::Tensor>& noise,
                                           at::Tensor* noise_out) {
  TORCH_CHECK_VALUE(x.dim() == 4, "modulate: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(s.dim() == 2 && s.size(0) == x.size(0) && s.size(1) == x.size(1),
                    "modulate: s must be [N, C] = [", x.size(0), ", ", x.size(1), "], got ", s.sizes());
  TORCH_CHECK(s.device() == x.device(), "modulate: s and x are on different devices");
  ModulateParams p;
  p.n = x.size(0); p.c = x.size(1); p.h = x.size(2); p.w = x.size(3);
  p.has_noise = noise.has_value() && noise->defined();
  p.noise_sn = p.noise_sc = p.noise_sh = p.noise_sw = 0;
  if (p.has_noise) {
    TORCH_CHECK(noise->device() == x.device(), "modulate: noise and x are on different devices");
    TORCH_CHECK(noise->scalar_type() == x.scalar_type(), "modulate: noise dtype must match x");
    at::Tensor e = noise->expand(x.sizes());
    p.noise_sn = e.stride(0); p.noise_sc = e.stride(1); p.noise_sh = e.stride(2); p.noise_sw = e.stride(3);
    *noise_out = e;
  }
  return p;
}

inline ModulateBackwardParams make_modulate_backward_params(const at::Tensor& dy, const at::Tensor& x,
                                                            const at::Tensor& s, bool need_dx,
                                                            bool need_ds) {
  TORCH_CHECK_VALUE(x.dim() == 4, "modulate_backward: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(dy.sizes() == x.sizes(), "modulate_backward: dy must have x's shape ", x.sizes(),
                    ", got ", dy.sizes());
  TORCH_CHECK_VALUE(s.dim() == 2 && s.size(0) == x.size(0) && s.size(1) == x.size(1),
                    "modulate_backward: s must be [N, C] = [", x.size(0), ", ", x.size(1), "], got ",
                    s.sizes());
  TORCH_CHECK(dy.device() == x.device() && s.device() == x.device(),
              "modulate_backward: dy, x and s must be on one device");
  TORCH_CHECK(dy.scalar_type() == x.scalar_type(), "modulate_backward: dy dtype must match x");
  TORCH_CHECK(at::isFloatingType(s.scalar_type()), "modulate_backward: s must be floating point");
  ModulateBackwardParams p;
  p.n = x.size(0); p.c = x.size(1); p.h = x.size(2); p.w = x.size(3);
  p.need_dx = need_dx;
  p.need_ds = need_ds;
  return p;
}

}  // namespace retina_fast
