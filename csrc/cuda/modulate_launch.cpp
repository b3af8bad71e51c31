// ATen side of the CUDA modulate: the CPU kernel's argument handling (modulate_common.h), then
// the raw-pointer launch in modulate_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../modulate_common.h"
#include "dtype_code.h"
#include "launch.h"

namespace retina_fast {
namespace {

at::Tensor modulate_cuda(const at::Tensor& x_in, const at::Tensor& s,
                         const std::optional<at::Tensor>& noise) {
  at::Tensor noise_e;
  ModulateParams p = make_modulate_params(x_in, s, noise, &noise_e);
  TORCH_CHECK(x_in.is_cuda(), "modulate: x must be a CUDA tensor here, got ", x_in.device());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulate_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor sc = s.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    // noise_e is the zero-stride expanded view, passed as its base pointer plus p's strides.
    const char* err = modulate_cuda_launch(
        p, x.data_ptr(), sc.data_ptr(), p.has_noise ? noise_e.data_ptr() : nullptr, y.data_ptr(),
        dtype_code<scalar_t>(), at::cuda::getCurrentCUDAStream(x.device().index()));
    TORCH_CHECK(err == nullptr, "modulate: CUDA kernel failed: ", err);
  });
  return y.contiguous(x_in.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CUDA, m) { m.impl("modulate", &modulate_cuda); }

}  // namespace retina_fast
