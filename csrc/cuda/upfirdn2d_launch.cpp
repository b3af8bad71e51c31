// ATen side of the CUDA upfirdn2d: the CPU kernel's argument handling, then the raw-pointer launch
// in upfirdn2d_kernel.cu (kept free of ATen so it compiles quickly).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../upfirdn2d_common.h"
#include "dtype_code.h"
#include "launch.h"

namespace retina_fast {
namespace {

at::Tensor upfirdn2d_cuda(const at::Tensor& x_in, const at::Tensor& f, int64_t up_x, int64_t up_y,
                          int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                          int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain) {
  Upfirdn2dParams p = make_upfirdn2d_params(x_in, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1,
                                            pad_y0, pad_y1);
  // The dispatcher picks this kernel when any argument is on CUDA; x is the one that must be.
  TORCH_CHECK(x_in.is_cuda(), "upfirdn2d: x must be a CUDA tensor here, got ", x_in.device());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();

  at::Tensor y = at::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor fc = correlation_filter(f, x, at::CppTypeToScalarType<acc_t>::value, flip_filter, gain);
    const char* err = upfirdn2d_cuda_launch(p, x.data_ptr(), fc.data_ptr(), y.data_ptr(),
                                            dtype_code<scalar_t>(),
                                            at::cuda::getCurrentCUDAStream(x.device().index()));
    TORCH_CHECK(err == nullptr, "upfirdn2d: CUDA kernel failed: ", err);
  });
  return y.contiguous(x_in.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CUDA, m) { m.impl("upfirdn2d", &upfirdn2d_cuda); }

}  // namespace retina_fast
