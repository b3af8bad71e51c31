// CPU bias_act and its first derivative, over memory order.
//
// Works on any dense layout (contiguous or channels_last) without a copy: the bias index of
// memory element i is (i / stride[dim]) % C, so runs of bias_stride elements share one bias
// value (NCHW) or the bias vector repeats every C elements (channels_last, stride 1).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "alloc.h"

#include "../bias_act.h"
#include "../bias_act_common.h"

namespace retina_fast {
namespace {

// Calls fn(i_begin, i_end, bias_value) for each run of elements in [begin, end) sharing a bias.
template <typename acc_t, typename Fn>
inline void for_each_bias_run(const BiasActParams& p, const acc_t* b, int64_t begin, int64_t end,
                              Fn&& fn) {
  if (p.bias_len == 0) {
    fn(begin, end, acc_t(0));
    return;
  }
  int64_t i = begin;
  while (i < end) {
    const int64_t run = i / p.bias_stride;
    const int64_t run_end = std::min(end, (run + 1) * p.bias_stride);
    fn(i, run_end, b[run % p.bias_len]);
    i = run_end;
  }
}

// The inner loops over one bias run. Parameters by value and __restrict pointers: with the
// activation parameters captured by reference, the compiler had to assume the stores to y could
// change them, reloaded them per element and left the loop scalar and branchy (lrelu ran 15x
// slower than torch's). Clamping is a template flag so the common unclamped loop has no test.
template <typename scalar_t, typename acc_t, Act ACT, bool CLAMP>
inline void forward_run(const scalar_t* __restrict x, scalar_t* __restrict y, int64_t n, acc_t bias,
                        acc_t alpha, acc_t gain, acc_t clamp) {
  for (int64_t i = 0; i < n; ++i) {
    acc_t v = act_forward<acc_t>(ACT, acc_t(x[i]) + bias, alpha) * gain;
    if constexpr (CLAMP) v = v < -clamp ? -clamp : (v > clamp ? clamp : v);
    y[i] = scalar_t(v);
  }
}

template <typename scalar_t, typename acc_t, Act ACT, bool CLAMP>
inline void grad_run(const scalar_t* __restrict dy, const scalar_t* __restrict x,
                     scalar_t* __restrict dx, int64_t n, acc_t bias, acc_t alpha, acc_t gain,
                     acc_t clamp) {
  for (int64_t i = 0; i < n; ++i) {
    const acc_t z = acc_t(x[i]) + bias;
    acc_t g = act_derivative<acc_t>(ACT, z, alpha) * gain;
    if constexpr (CLAMP) {
      if (!clamp_passes(act_forward<acc_t>(ACT, z, alpha) * gain, clamp)) g = acc_t(0);
    }
    dx[i] = scalar_t(acc_t(dy[i]) * g);
  }
}

template <typename scalar_t, Act ACT, bool CLAMP>
void bias_act_forward_loop(const scalar_t* x, const at::opmath_type<scalar_t>* b, scalar_t* y,
                           const BiasActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), clamp = acc_t(p.clamp);
  at::parallel_for(0, p.numel, 16384, [&](int64_t begin, int64_t end) {
    for_each_bias_run<acc_t>(p, b, begin, end, [&](int64_t i0, int64_t i1, acc_t bias) {
      forward_run<scalar_t, acc_t, ACT, CLAMP>(x + i0, y + i0, i1 - i0, bias, alpha, gain, clamp);
    });
  });
}

template <typename scalar_t, Act ACT, bool CLAMP>
void bias_act_grad_loop(const scalar_t* dy, const scalar_t* x, const at::opmath_type<scalar_t>* b,
                        scalar_t* dx, const BiasActParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t alpha = acc_t(p.alpha), gain = acc_t(p.gain), clamp = acc_t(p.clamp);
  at::parallel_for(0, p.numel, 16384, [&](int64_t begin, int64_t end) {
    for_each_bias_run<acc_t>(p, b, begin, end, [&](int64_t i0, int64_t i1, acc_t bias) {
      grad_run<scalar_t, acc_t, ACT, CLAMP>(dy + i0, x + i0, dx + i0, i1 - i0, bias, alpha, gain,
                                            clamp);
    });
  });
}

// Turns the runtime activation into a template argument so each inner loop is branch-free.
template <typename Fn>
void dispatch_act(Act act, Fn&& fn) {
  switch (act) {
#define RF_CASE(A) case Act::A: fn(std::integral_constant<Act, Act::A>{}); break;
    RF_CASE(Linear) RF_CASE(Relu) RF_CASE(Lrelu) RF_CASE(Tanh) RF_CASE(Sigmoid) RF_CASE(Elu)
    RF_CASE(Selu) RF_CASE(Softplus) RF_CASE(Swish)
#undef RF_CASE
  }
}

at::Tensor bias_act_cpu(const at::Tensor& x_in, const std::optional<at::Tensor>& b, int64_t dim,
                        c10::string_view act, double alpha, double gain, double clamp) {
  const at::Tensor x = dense_or_contiguous(x_in);
  BiasActParams p = make_bias_act_params(x, b, dim, act, alpha, gain, clamp);
  at::Tensor y = empty_large_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bc = bias_in_acc_type<acc_t>(b);
    const acc_t* bp = p.bias_len ? bc.const_data_ptr<acc_t>() : nullptr;
    dispatch_act(p.act, [&](auto A) {
      constexpr Act kAct = decltype(A)::value;
      if (p.clamp >= 0)
        bias_act_forward_loop<scalar_t, kAct, true>(x.const_data_ptr<scalar_t>(), bp,
                                                    y.mutable_data_ptr<scalar_t>(), p);
      else
        bias_act_forward_loop<scalar_t, kAct, false>(x.const_data_ptr<scalar_t>(), bp,
                                                     y.mutable_data_ptr<scalar_t>(), p);
    });
  });
  return y;
}

at::Tensor bias_act_grad_cpu(const at::Tensor& dy_in, const at::Tensor& x_in,
                             const std::optional<at::Tensor>& b, int64_t dim, c10::string_view act,
                             double alpha, double gain, double clamp) {
  TORCH_CHECK(dy_in.sizes() == x_in.sizes(), "bias_act_grad: dy and x must have the same shape");
  const at::Tensor x = dense_or_contiguous(x_in);
  const at::Tensor dy = dy_in.contiguous(x.suggest_memory_format());
  TORCH_CHECK(dy.strides() == x.strides(), "bias_act_grad: dy and x layouts differ");
  BiasActParams p = make_bias_act_params(x, b, dim, act, alpha, gain, clamp);
  at::Tensor dx = empty_large_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor bc = bias_in_acc_type<acc_t>(b);
    const acc_t* bp = p.bias_len ? bc.const_data_ptr<acc_t>() : nullptr;
    dispatch_act(p.act, [&](auto A) {
      constexpr Act kAct = decltype(A)::value;
      if (p.clamp >= 0)
        bias_act_grad_loop<scalar_t, kAct, true>(dy.const_data_ptr<scalar_t>(),
                                                 x.const_data_ptr<scalar_t>(), bp,
                                                 dx.mutable_data_ptr<scalar_t>(), p);
      else
        bias_act_grad_loop<scalar_t, kAct, false>(dy.const_data_ptr<scalar_t>(),
                                                  x.const_data_ptr<scalar_t>(), bp,
                                                  dx.mutable_data_ptr<scalar_t>(), p);
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_grad", &bias_act_grad_cpu);
}

}  // namespace retina_fast
