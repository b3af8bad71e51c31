// CUDA bias_act and its first derivative: grid-stride loops over memory order.
//
// Same rule as the CPU kernel for any dense layout: memory element i takes bias
// b[(i / bias_stride) % bias_len]. The activation math is the shared act_forward /
// act_derivative / clamp_passes of bias_act.h, in float (double for double storage; see act_fwd
// for the one exception).
//
// Tensors below 2^31 elements (all practical ones) take kernels with 32-bit indices, the
// bias index divisions done by multiply-high (FastDiv) and the activation fixed at compile time.
// Larger ones take one general kernel per dtype with 64-bit indices and a runtime activation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../bias_act.h"
#include "launch.h"

namespace retina_fast {
namespace {

using cuda_detail::FastDiv;
using cuda_detail::store;
using cuda_detail::to_acc;

constexpr int kThreads = 256;
// Elements per thread per grid-stride step: all loads are issued before any math so each thread
// keeps several memory requests in flight.
constexpr int kUnroll = 4;
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // keeps the 32-bit grid stride below 2^31

template <typename acc_t>
struct ActArgs {
  acc_t alpha, gain, clamp;  // clamp < 0: no clamping
};

// The shared activations, with one exception for float: setup.py compiles with --use_fast_math,
// under which nvcc turns tanhf into the tanh.approx instruction (relative error ~2^-11, far
// coarser than float and than the CPU kernel). Double-precision math is not approximated, so
// float tanh is evaluated in double and rounded. The other float functions only get the
// exp/division intrinsics, accurate to a few ulp, and stay in float.
RF_HD float act_fwd(Act act, float z, float alpha) {
  if (act == Act::Tanh) return float(act_forward<double>(act, double(z), double(alpha)));
  return act_forward<float>(act, z, alpha);
}
RF_HD double act_fwd(Act act, double z, double alpha) { return act_forward<double>(act, z, alpha); }
RF_HD float act_grad(Act act, float z, float alpha) {
  if (act == Act::Tanh) return float(act_derivative<double>(act, double(z), double(alpha)));
  return act_derivative<float>(act, z, alpha);
}
RF_HD double act_grad(Act act, double z, double alpha) {
  return act_derivative<double>(act, z, alpha);
}

// y = clamp(act(z) * gain, -clamp, clamp), as the CPU loop writes it.
template <typename acc_t>
RF_HD acc_t forward_value(Act act, acc_t z, const ActArgs<acc_t>& a) {
  acc_t v = act_fwd(act, z, a.alpha) * a.gain;
  if (a.clamp >= acc_t(0)) v = v < -a.clamp ? -a.clamp : (v > a.clamp ? a.clamp : v);
  return v;
}

// dx = dy * act'(z) * gain, zero where the forward clamp cut the value off.
template <typename acc_t>
RF_HD acc_t grad_value(Act act, acc_t dy, acc_t z, const ActArgs<acc_t>& a) {
  acc_t g = act_grad(act, z, a.alpha) * a.gain;
  if (a.clamp >= acc_t(0) && !clamp_passes(act_fwd(act, z, a.alpha) * a.gain, a.clamp))
    g = acc_t(0);
  return dy * g;
}

// Kernel bodies are __host__ __device__ functions of explicit block/thread indices so that a
// host-side emulation of the grid can run this exact code (no GPU where the extension is built).

// kGrad: out = dx from (dy, x); otherwise out = y from x (dy unused).
template <typename scalar_t, typename acc_t, Act ACT, bool kGrad>
RF_HD void bias_act_body32(const scalar_t* dy, const scalar_t* x, const acc_t* b, scalar_t* out,
                           uint32_t numel, const FastDiv& div_stride, const FastDiv& div_len,
                           const ActArgs<acc_t>& args, uint32_t block, uint32_t grid,
                           uint32_t thread) {
  const uint32_t bias_len = div_len.divisor;  // 0: no bias
  const uint32_t step = grid * uint32_t(kThreads * kUnroll);
  for (uint32_t base = block * uint32_t(kThreads * kUnroll) + thread; base < numel; base += step) {
    acc_t z[kUnroll], g[kUnroll];
    RF_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = base + u * kThreads;
      z[u] = g[u] = acc_t(0);
      if (i < numel) {
        z[u] = to_acc(x[i]);
        if (kGrad) g[u] = to_acc(dy[i]);
        if (bias_len) {
          const uint32_t run = div_stride.div(i);
          z[u] += b[run - div_len.div(run) * bias_len];
        }
      }
    }
    RF_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = base + u * kThreads;
      if (i < numel)
        store(out + i, kGrad ? grad_value<acc_t>(ACT, g[u], z[u], args)
                             : forward_value<acc_t>(ACT, z[u], args));
    }
  }
}

template <typename scalar_t, typename acc_t, Act ACT, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    bias_act_kernel32(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                      const acc_t* __restrict__ b, scalar_t* __restrict__ out, uint32_t numel,
                      FastDiv div_stride, FastDiv div_len, ActArgs<acc_t> args) {
  bias_act_body32<scalar_t, acc_t, ACT, kGrad>(dy, x, b, out, numel, div_stride, div_len, args,
                                               blockIdx.x, gridDim.x, threadIdx.x);
}

// The >= 2^31-element fallback: plain 64-bit index arithmetic, activation chosen at run time.
template <typename scalar_t, typename acc_t, bool kGrad>
RF_HD void bias_act_body64(const scalar_t* dy, const scalar_t* x, const acc_t* b, scalar_t* out,
                           int64_t numel, int64_t bias_stride, int64_t bias_len, Act act,
                           const ActArgs<acc_t>& args, uint32_t block, uint32_t grid,
                           uint32_t thread) {
  const int64_t step = int64_t(grid) * kThreads;
  for (int64_t i = int64_t(block) * kThreads + thread; i < numel; i += step) {
    acc_t z = to_acc(x[i]);
    if (bias_len) z += b[(i / bias_stride) % bias_len];
    store(out + i, kGrad ? grad_value<acc_t>(act, to_acc(dy[i]), z, args)
                         : forward_value<acc_t>(act, z, args));
  }
}

template <typename scalar_t, typename acc_t, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    bias_act_kernel64(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                      const acc_t* __restrict__ b, scalar_t* __restrict__ out, int64_t numel,
                      int64_t bias_stride, int64_t bias_len, Act act, ActArgs<acc_t> args) {
  bias_act_body64<scalar_t, acc_t, kGrad>(dy, x, b, out, numel, bias_stride, bias_len, act, args,
                                          blockIdx.x, gridDim.x, threadIdx.x);
}

template <typename scalar_t, typename acc_t, bool kGrad>
const char* launch_typed(const BiasActParams& p, const void* dy_v, const void* x_v,
                         const void* b_v, void* out_v, cudaStream_t stream) {
  if (p.numel == 0) return nullptr;
  const auto* dy = static_cast<const scalar_t*>(dy_v);
  const auto* x = static_cast<const scalar_t*>(x_v);
  const auto* b = static_cast<const acc_t*>(b_v);
  auto* out = static_cast<scalar_t*>(out_v);
  ActArgs<acc_t> args{acc_t(p.alpha), acc_t(p.gain), acc_t(p.clamp)};
  const int64_t bias_len = b ? p.bias_len : 0;

  const int64_t kIntMax = 2147483647;
  if (p.numel <= kIntMax && p.bias_stride <= kIntMax && bias_len <= kIntMax) {
    int64_t blocks = (p.numel + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    const FastDiv div_stride{uint32_t(p.bias_stride > 0 ? p.bias_stride : 1)};
    // Without a bias the kernel only reads div_len.divisor, as 0 ("no bias"); FastDiv(0)
    // itself would be meaningless.
    FastDiv div_len{uint32_t(bias_len > 0 ? bias_len : 1)};
    if (bias_len == 0) div_len.divisor = 0;
    switch (p.act) {
#define RF_CASE(A)                                                                       \
  case Act::A:                                                                           \
    bias_act_kernel32<scalar_t, acc_t, Act::A, kGrad><<<unsigned(blocks), kThreads, 0, stream>>>( \
        dy, x, b, out, uint32_t(p.numel), div_stride, div_len, args);                    \
    break;
      RF_CASE(Linear) RF_CASE(Relu) RF_CASE(Lrelu) RF_CASE(Tanh) RF_CASE(Sigmoid) RF_CASE(Elu)
      RF_CASE(Selu) RF_CASE(Softplus) RF_CASE(Swish)
#undef RF_CASE
      default: return "bias_act: unknown activation";
    }
  } else {
    int64_t blocks = (p.numel + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    bias_act_kernel64<scalar_t, acc_t, kGrad><<<unsigned(blocks), kThreads, 0, stream>>>(
        dy, x, b, out, p.numel, p.bias_stride > 0 ? p.bias_stride : 1, bias_len, p.act, args);
  }
  return cuda_detail::launch_error();
}

template <bool kGrad>
const char* launch(const BiasActParams& p, const void* dy, const void* x, const void* b, void* out,
                   DtypeCode dtype, cudaStream_t stream) {
  switch (dtype) {
    case kF32: return launch_typed<float, float, kGrad>(p, dy, x, b, out, stream);
    case kF64: return launch_typed<double, double, kGrad>(p, dy, x, b, out, stream);
    case kF16: return launch_typed<__half, float, kGrad>(p, dy, x, b, out, stream);
    case kBF16: return launch_typed<__nv_bfloat16, float, kGrad>(p, dy, x, b, out, stream);
  }
  return "bias_act: unknown dtype code";
}

}  // namespace

const char* bias_act_cuda_launch(const BiasActParams& p, const void* x, const void* b, void* y,
                                 DtypeCode dtype, cudaStream_t stream) {
  return launch<false>(p, nullptr, x, b, y, dtype, stream);
}

const char* bias_act_grad_cuda_launch(const BiasActParams& p, const void* dy, const void* x,
                                      const void* b, void* dx, DtypeCode dtype,
                                      cudaStream_t stream) {
  return launch<true>(p, dy, x, b, dx, dtype, stream);
}

}  // namespace retina_fast
