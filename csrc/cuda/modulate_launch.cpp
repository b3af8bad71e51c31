// ATen side of the CUDA modulate and modulate_backward: the CPU kernels' argument handling
// (modulate_common.h), then the raw-pointer launches in modulate_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "../modulate_common.h"
#include "dtype_code.h"
#include "launch.h"

namespace retina_fast {
namespace {

at::Tensor modulate_cuda(const at::Tensor& x_in, const at::Tensor& s,
                         const std::optional<at::Tensor>& noise, bool channels_last) {
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
  return y.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : x_in.suggest_memory_format());
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> modulate_backward_cuda(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& s, bool need_dx, bool need_ds) {
  const ModulateBackwardParams p = make_modulate_backward_params(dy_in, x_in, s, need_dx, need_ds);
  if (!need_dx && !need_ds) return {std::nullopt, std::nullopt};
  TORCH_CHECK(dy_in.is_cuda(), "modulate_backward: dy must be a CUDA tensor here, got ", dy_in.device());
  const c10::cuda::CUDAGuard guard(dy_in.device());
  // The kernel reads NCHW; other layouts pay a conversion, as in modulate_cuda.
  const at::Tensor dy = dy_in.contiguous();
  const at::Tensor x = need_ds ? x_in.contiguous() : at::Tensor();
  at::Tensor dx = need_dx ? at::empty(dy.sizes(), dy.options()) : at::Tensor();
  at::Tensor ds64 = need_ds ? at::zeros({p.n, p.c}, dy.options().dtype(at::kDouble)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "modulate_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor sc = need_dx ? s.to(c10::CppTypeToScalarType<acc_t>::value).contiguous() : at::Tensor();
    const char* err = modulate_backward_cuda_launch(
        p, dy.data_ptr(), need_ds ? x.data_ptr() : nullptr, need_dx ? sc.data_ptr() : nullptr,
        need_dx ? dx.data_ptr() : nullptr, need_ds ? ds64.data_ptr<double>() : nullptr,
        dtype_code<scalar_t>(), at::cuda::getCurrentCUDAStream(dy.device().index()));
    TORCH_CHECK(err == nullptr, "modulate_backward: CUDA kernel failed: ", err);
  });
  std::optional<at::Tensor> dx_out, ds_out;
  if (need_dx) dx_out = dx.contiguous(x_in.suggest_memory_format());
  if (need_ds) ds_out = ds64.to(s.scalar_type());
  return {dx_out, ds_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CUDA, m) {
  m.impl("modulate", &modulate_cuda);
  m.impl("modulate_backward", &modulate_backward_cuda);
}

}  // namespace retina_fast
