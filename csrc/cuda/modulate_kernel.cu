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

// modulate_backward over contiguous NCHW: the blocks of one grid row (blockIdx.y) share a plane,
// each striding over part of it; a block reduces its share of sum dy * x in shared memory and adds
// it to ds[plane] with one double atomicAdd. Rows walk further planes when there are more than the
// grid's 65535 rows.
template <typename scalar_t, typename acc_t, bool kDx, bool kDs>
__global__ void __launch_bounds__(kThreads)
    modulate_backward_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                             const acc_t* __restrict__ s, scalar_t* __restrict__ dx,
                             double* __restrict__ ds, int64_t planes, int64_t hw) {
  __shared__ double red[kThreads];
  const int64_t step = int64_t(gridDim.x) * kThreads;
  for (int64_t plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const int64_t base = plane * hw;
    const acc_t scale = kDx ? s[plane] : acc_t(0);
    double sum = 0;
    for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < hw; i += step) {
      const acc_t g = to_acc(dy[base + i]);
      if (kDs) sum += double(g) * double(to_acc(x[base + i]));
      if (kDx) store(dx + base + i, mul_rn(g, scale));
    }
    if (kDs) {  // uniform across the block, so every thread reaches the barriers
      red[threadIdx.x] = sum;
      __syncthreads();
      for (int width = kThreads / 2; width > 0; width >>= 1) {
        if (int(threadIdx.x) < width) red[threadIdx.x] += red[threadIdx.x + width];
        __syncthreads();
      }
      if (threadIdx.x == 0) atomicAdd(ds + plane, red[0]);
      __syncthreads();  // red is rewritten for the next plane
    }
  }
}

template <typename scalar_t, typename acc_t, bool kDx, bool kDs>
void launch_backward(const ModulateBackwardParams& p, const void* dy, const void* x, const void* s,
                     void* dx, double* ds, cudaStream_t stream) {
  const int64_t planes = p.n * p.c, hw = p.h * p.w;
  // About eight elements per thread; the cap bounds the atomics per plane.
  int64_t blocks_x = (hw + kThreads * 8 - 1) / (kThreads * 8);
  if (blocks_x > 1024) blocks_x = 1024;
  const int64_t blocks_y = planes < 65535 ? planes : 65535;
  const dim3 grid{unsigned(blocks_x), unsigned(blocks_y), 1u};
  modulate_backward_kernel<scalar_t, acc_t, kDx, kDs><<<grid, kThreads, 0, stream>>>(
      static_cast<const scalar_t*>(dy), static_cast<const scalar_t*>(x),
      static_cast<const acc_t*>(s), static_cast<scalar_t*>(dx), ds, planes, hw);
}

template <typename scalar_t, typename acc_t>
const char* launch_backward_typed(const ModulateBackwardParams& p, const void* dy, const void* x,
                                  const void* s, void* dx, double* ds, cudaStream_t stream) {
  if (p.n * p.c * p.h * p.w == 0 || (!p.need_dx && !p.need_ds)) return nullptr;
  if (p.need_dx && p.need_ds)
    launch_backward<scalar_t, acc_t, true, true>(p, dy, x, s, dx, ds, stream);
  else if (p.need_dx)
    launch_backward<scalar_t, acc_t, true, false>(p, dy, x, s, dx, ds, stream);
  else
    launch_backward<scalar_t, acc_t, false, true>(p, dy, x, s, dx, ds, stream);
  return cuda_detail::launch_error();
}

}  // namespace

const char* modulate_backward_cuda_launch(const ModulateBackwardParams& p, const void* dy,
                                          const void* x, const void* s, void* dx, double* ds,
                                          DtypeCode dtype, cudaStream_t stream) {
  switch (dtype) {
    case kF32: return launch_backward_typed<float, float>(p, dy, x, s, dx, ds, stream);
    case kF64: return launch_backward_typed<double, double>(p, dy, x, s, dx, ds, stream);
    case kF16: return launch_backward_typed<__half, float>(p, dy, x, s, dx, ds, stream);
    case kBF16: return launch_backward_typed<__nv_bfloat16, float>(p, dy, x, s, dx, ds, stream);
  }
  return "modulate_backward: unknown dtype code";
}

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
