// ATen-side argument handling shared by the CPU kernel and the CUDA launcher of upfirdn2d.
#pragma once
#include <ATen/core/Tensor.h>

#include "upfirdn2d.h"

namespace retina_fast {

// Checks the arguments against x's shape and returns the kernel parameters (x's logical NCHW
// sizes; the caller decides the memory layout).
inline Upfirdn2dParams make_upfirdn2d_params(const at::Tensor& x, const at::Tensor& f, int64_t up_x,
                                             int64_t up_y, int64_t down_x, int64_t down_y,
                                             int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                                             int64_t pad_y1) {
  TORCH_CHECK_VALUE(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W], got ", x.dim(), "-D");
  TORCH_CHECK_VALUE(f.dim() == 2, "upfirdn2d: f must be 2-D [fh, fw] here, got ", f.dim(), "-D");
  TORCH_CHECK_VALUE(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
                    "upfirdn2d: up and down must be >= 1");
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "upfirdn2d: x must be floating point");
  Upfirdn2dParams p;
  p.planes = x.size(0) * x.size(1);
  p.in_h = x.size(2);
  p.in_w = x.size(3);
  p.fh = f.size(0);
  p.fw = f.size(1);
  p.up_x = up_x; p.up_y = up_y; p.down_x = down_x; p.down_y = down_y;
  p.pad_x0 = pad_x0; p.pad_y0 = pad_y0;
  p.out_w = upfirdn2d_out_size(p.in_w, up_x, down_x, pad_x0, pad_x1, p.fw);
  p.out_h = upfirdn2d_out_size(p.in_h, up_y, down_y, pad_y0, pad_y1, p.fh);
  TORCH_CHECK_VALUE(p.out_w >= 1 && p.out_h >= 1, "upfirdn2d: padding leaves an empty output (",
                    p.out_h, " x ", p.out_w, ")");
  return p;
}

// The correlation filter the kernels read: f in the accumulation type on x's device, flipped
// unless flip_filter, gain folded in.
inline at::Tensor correlation_filter(const at::Tensor& f, const at::Tensor& x, at::ScalarType acc,
                                     bool flip_filter, double gain) {
  at::Tensor fc = f.to(x.device(), acc).contiguous();
  if (!flip_filter) fc = fc.flip({0, 1});
  return fc.mul(gain).contiguous();
}

}  // namespace retina_fast
