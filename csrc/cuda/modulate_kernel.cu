// CUDA modulate: y = x * s[n, c] + noise[n, c, h, w], a grid-stride loop over contiguous NCHW x.
//
// The plane (n*C + c) of element i picks the style; noise, when given, is read through the element
// strides of its expanded view (often zero: one noise image shared by all channels). As in the
// bias_act kernels, tensors below 2^31 elements get 32-bit indices with multiply-high divisions.
// The product is rounded before the add, as on the CPU, so results match it bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../modulate.h"
#include "launch.h"

namespace retina_fast {
namespace {

using cuda_detail::FastDiv;
using cuda_detail::mul_rn;
using cuda_detail::store;
using cuda_detail::to_acc;

constexpr int kThreads = 256;
constexpr int kUnroll = 4;  // loads of several elements in flight per thread
constexpr int64_t kMaxBlocks = int64_t(1) << 20;  // keeps the 32-bit grid stride below 2^31

struct NoiseStrides {
  int64_t sn, sc, sh, sw;
  // h * sh + w * sw == (h * W + w) * sw: the spatial offset needs no division by W. True for
  // any noise laid out like x within a plane, the usual case.
  bool spatial_linear;
};

// Kernel bodies are __host__ __device__ functions of explicit block/thread indices so that a
// host-side emulation of the grid can run this exact code (no GPU where the extension is built).
template <typename scalar_t, typename acc_t, bool kNoise>
RF_HD void modulate_body32(const scalar_t* x, const acc_t* s, const scalar_t* noise, scalar_t* y,
                           uint32_t numel, const FastDiv& div_hw, const FastDiv& div_c,
                           const FastDiv& div_w, const NoiseStrides& ns, uint32_t block,
                           uint32_t grid, uint32_t thread) {
  const uint32_t step = grid * uint32_t(kThreads * kUnroll);
  for (uint32_t base = block * uint32_t(kThreads * kUnroll) + thread; base < numel; base += step) {
    acc_t v[kUnroll], nz[kUnroll];
    RF_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = base + u * kThreads;
      v[u] = nz[u] = acc_t(0);
      if (i < numel) {
        const uint32_t plane = div_hw.div(i);
        v[u] = mul_rn(to_acc(x[i]), s[plane]);
        if (kNoise) {
          const uint32_t j = i - plane * div_hw.divisor;  // h * W + w
          const uint32_t n = div_c.div(plane), c = plane - n * div_c.divisor;
          int64_t off = int64_t(n) * ns.sn + int64_t(c) * ns.sc;
          if (ns.spatial_linear) {
            off += int64_t(j) * ns.sw;
          } else {
            const uint32_t h = div_w.div(j), w = j - h * div_w.divisor;
            off += int64_t(h) * ns.sh + int64_t(w) * ns.sw;
          }
          nz[u] = to_acc(noise[off]);
        }
      }
    }
    RF_UNROLL
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t i = base + u * kThreads;
      if (i < numel) store(y + i, kNoise ? v[u] + nz[u] : v[u]);
    }
  }
}

template <typename scalar_t, typename acc_t, bool kNoise>
__global__ void __launch_bounds__(kThreads)
    modulate_kernel32(const scalar_t* __restrict__ x, const acc_t* __restrict__ s,
                      const scalar_t* __restrict__ noise, scalar_t* __restrict__ y, uint32_t numel,
                      FastDiv div_hw, FastDiv div_c, FastDiv div_w, NoiseStrides ns) {
  modulate_body32<scalar_t, acc_t, kNoise>(x, s, noise, y, numel, div_hw, div_c, div_w, ns,
                                           blockIdx.x, gridDim.x, threadIdx.x);
}

// The >= 2^31-element fallback with plain 64-bit index arithmetic.
template <typename scalar_t, typename acc_t, bool kNoise>
RF_HD void modulate_body64(const scalar_t* x, const acc_t* s, const scalar_t* noise, scalar_t* y,
                           const ModulateParams& p, uint32_t block, uint32_t grid,
                           uint32_t thread) {
  const int64_t hw = p.h * p.w, numel = p.n * p.c * hw;
  const int64_t step = int64_t(grid) * kThreads;
  for (int64_t i = int64_t(block) * kThreads + thread; i < numel; i += step) {
    const int64_t plane = i / hw;
    acc_t v = mul_rn(to_acc(x[i]), s[plane]);
    if (kNoise) {
      const int64_t j = i - plane * hw, h = j / p.w, w = j - h * p.w;
      const int64_t n = plane / p.c, c = plane - n * p.c;
      v = v + to_acc(noise[n * p.noise_sn + c * p.noise_sc + h * p.noise_sh + w * p.noise_sw]);
    }
    store(y + i, v);
  }
}

template <typename scalar_t, typename acc_t, bool kNoise>
__global__ void __launch_bounds__(kThreads)
    modulate_kernel64(const scalar_t* __restrict__ x, const acc_t* __restrict__ s,
                      const scalar_t* __restrict__ noise, scalar_t* __restrict__ y, ModulateParams p) {
  modulate_body64<scalar_t, acc_t, kNoise>(x, s, noise, y, p, blockIdx.x, gridDim.x, threadIdx.x);
}

template <typename scalar_t, typename acc_t>
const char* launch_typed(const ModulateParams& p, const void* x_v, const void* s_v,
                         const void* noise_v, void* y_v, cudaStream_t stream) {
  const int64_t hw = p.h * p.w, numel = p.n * p.c * hw;
  if (numel == 0) return nullptr;
  const auto* x = static_cast<const scalar_t*>(x_v);
  const auto* s = static_cast<const acc_t*>(s_v);
  const auto* noise = static_cast<const scalar_t*>(noise_v);
  auto* y = static_cast<scalar_t*>(y_v);
  const bool has_noise = p.has_noise && noise;

  if (numel <= 2147483647) {
    int64_t blocks = (numel + kThreads * kUnroll - 1) / (kThreads * kUnroll);
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    // numel > 0 here, so hw, c and w are all >= 1 and valid divisors.
    const FastDiv div_hw{uint32_t(hw)}, div_c{uint32_t(p.c)}, div_w{uint32_t(p.w)};
    NoiseStrides ns{p.noise_sn, p.noise_sc, p.noise_sh, p.noise_sw,
                    p.h == 1 || p.noise_sh == p.w * p.noise_sw};
    if (has_noise)
      modulate_kernel32<scalar_t, acc_t, true><<<unsigned(blocks), kThreads, 0, stream>>>(
          x, s, noise, y, uint32_t(numel), div_hw, div_c, div_w, ns);
    else
      modulate_kernel32<scalar_t, acc_t, false><<<unsigned(blocks), kThreads, 0, stream>>>(
          x, s, nullptr, y, uint32_t(numel), div_hw, div_c, div_w, ns);
  } else {
    int64_t blocks = (numel + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    if (has_noise)
      modulate_kernel64<scalar_t, acc_t, true><<<unsigned(blocks), kThreads, 0, stream>>>(
          x, s, noise, y, p);
    else
      modulate_kernel64<scalar_t, acc_t, false><<<unsigned(blocks), kThreads, 0, stream>>>(
          x, s, nullptr, y, p);
  }
  return cuda_detail::launch_error();
}

}  // namespace

const char* modulate_cuda_launch(const ModulateParams& p, const void* x, const void* s,
                                 const void* noise, void* y, DtypeCode dtype, cudaStream_t stream) {
  switch (dtype) {
    case kF32: return launch_typed<float, float>(p, x, s, noise, y, stream);
    case kF64: return launch_typed<double, double>(p, x, s, noise, y, stream);
    case kF16: return launch_typed<__half, float>(p, x, s, noise, y, stream);
    case kBF16: return launch_typed<__nv_bfloat16, float>(p, x, s, noise, y, stream);
  }
  return "modulate: unknown dtype code";
}

}  // namespace retina_fast
