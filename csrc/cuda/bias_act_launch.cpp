// ATen side of the CUDA bias_act and bias_act_grad: the CPU kernels' argument handling (shared
// through bias_act_common.h), then the raw-pointer launches in bias_act_kernel.cu.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../bias_act.h"
#include "../bias_act_common.h"
#include "dtype_code.h"
#include "launch.h"

namespace retina_fast {
namespace {

at::Tensor bias_act_cuda(const at::Tensor& x_in, const std::optional<at::Tensor>& b, int64_t dim,
                         c10::string_view act, double alpha, double gain, double clamp) {
  TORCH_CHECK(x_in.is_cuda(), "bias_act: x must be a CUDA tensor here, got ", x_in.device());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_or_contiguous(x_in);
  BiasActParams p = make_bias_act_params(x, b, dim, act, alpha, gain, clamp);
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bc = bias_in_acc_type<acc_t>(b);
    const char* err = bias_act_cuda_launch(
        p, x.data_ptr(), p.bias_len ? bc.data_ptr() : nullptr, y.data_ptr(),
        dtype_code<scalar_t>(), at::cuda::getCurrentCUDAStream(x.device().index()));
    TORCH_CHECK(err == nullptr, "bias_act: CUDA kernel failed: ", err);
  });
  return y;
}

at::Tensor bias_act_grad_cuda(const at::Tensor& dy_in, const at::Tensor& x_in,
                              const std::optional<at::Tensor>& b, int64_t dim,
                              c10::string_view act, double alpha, double gain, double clamp) {
  TORCH_CHECK(dy_in.sizes() == x_in.sizes(), "bias_act_grad: dy and x must have the same shape");
  TORCH_CHECK(x_in.is_cuda(), "bias_act_grad: x must be a CUDA tensor here, got ", x_in.device());
  // The CPU kernel gets these two checks from data_ptr<scalar_t>() and the dispatcher; here the
  // pointers are untyped, so they are spelled out.
  TORCH_CHECK(dy_in.device() == x_in.device(), "bias_act_grad: dy and x are on different devices");
  TORCH_CHECK(dy_in.scalar_type() == x_in.scalar_type(), "bias_act_grad: dy dtype ",
              dy_in.scalar_type(), " does not match x dtype ", x_in.scalar_type());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = dense_or_contiguous(x_in);
  const at::Tensor dy = dy_in.contiguous(x.suggest_memory_format());
  TORCH_CHECK(dy.strides() == x.strides(), "bias_act_grad: dy and x layouts differ");
  BiasActParams p = make_bias_act_params(x, b, dim, act, alpha, gain, clamp);
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_grad_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bc = bias_in_acc_type<acc_t>(b);
    const char* err = bias_act_grad_cuda_launch(
        p, dy.data_ptr(), x.data_ptr(), p.bias_len ? bc.data_ptr() : nullptr, dx.data_ptr(),
        dtype_code<scalar_t>(), at::cuda::getCurrentCUDAStream(x.device().index()));
    TORCH_CHECK(err == nullptr, "bias_act_grad: CUDA kernel failed: ", err);
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CUDA, m) {
  m.impl("bias_act", &bias_act_cuda);
  m.impl("bias_act_grad", &bias_act_grad_cuda);
}

}  // namespace retina_fast
