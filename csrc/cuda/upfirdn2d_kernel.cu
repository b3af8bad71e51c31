// CUDA upfirdn2d: one thread per output pixel, polyphase (only taps that meet real input samples).
//
// A block covers a tile of output columns x rows (and, for tiny images, several planes). Which
// filter taps and input samples an output row or column uses depends on its index alone, so each
// block works that out once per tile column and tile row into shared memory instead of once per
// output; the filter goes to shared memory too. Every thread then only multiplies and adds.
//
// Summation order (filter rows ascending, then columns ascending, zero weights skipped) and the
// unfused multiply-add are those of the CPU kernel, so float results match it bit for bit.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../upfirdn2d.h"
#include "launch.h"

namespace retina_fast {
namespace {

using cuda_detail::mul_rn;
using cuda_detail::store;
using cuda_detail::to_acc;

constexpr int kThreads = 256;          // threads per block
constexpr int kMaxTileW = 32;          // output columns per tile (one warp: coalesced stores)
constexpr int kMaxTileH = 256;         // output rows per tile (blockDim.y * rows)
constexpr int kMaxRowsPerThread = 16;  // amortises the per-tile setup (H100: 16 beat 4 and 8)
constexpr int64_t kSmemFilterMax = 4096;  // larger filters are read from global memory

// The taps along one axis for one output index: tap k (klo <= k < khi) reads the input at element
// offset off + k * stride and weighs it with the filter element at offset fo + k * up * fstride
// (stride, fstride: 1 for columns; in_w, fw for rows). [klo, khi) already excludes padding
// (input out of range) and taps past the filter end, so the inner loops need no bounds checks.
// Offsets are precomputed here, once per tile row or column, so that per output the addressing is
// two adds. Tap counts are ints (the launcher checks the sizes).
struct AxisTaps {
  int64_t off;
  int fo, klo, khi;
};

RF_HD AxisTaps upfirdn2d_axis_taps(int64_t o, int64_t up, int64_t down, int64_t pad0, int64_t taps,
                                   int64_t in, int64_t stride, int64_t fstride) {
  int64_t t0, i0;
  upfirdn2d_first_tap(o, up, down, pad0, &t0, &i0);
  const int64_t n = t0 < taps ? (taps - t0 + up - 1) / up : 0;  // taps t0, t0 + up, ... < taps
  const int64_t lo = i0 < 0 ? -i0 : 0;
  int64_t hi = in - i0 < n ? in - i0 : n;
  if (hi < lo) hi = lo;
  AxisTaps a;
  a.off = i0 * stride;
  a.fo = int(t0 * fstride);
  a.klo = int(lo < n ? lo : n);  // keeps klo small even when the whole tap range is padding
  a.khi = int(hi < n ? hi : n);
  if (a.khi < a.klo) a.khi = a.klo;
  return a;
}

// One output value from the plane xp. UP > 0 fixes the tap stride (up) of both axes at compile
// time; MAXK > 0 bounds the taps per axis so both loops unroll fully.
template <int UP, int MAXK, typename scalar_t, typename acc_t>
RF_HD acc_t upfirdn2d_output(const scalar_t* xp, int in_w, const acc_t* f, int fw, int up_x,
                             int up_y, const AxisTaps& ay, const AxisTaps& ax,
                             bool filter_has_zero) {
  const int sx = UP > 0 ? UP : up_x;
  const int sy = UP > 0 ? UP : up_y;
  const int64_t x0 = ay.off + ax.off;  // input offset of tap (0, 0), maybe in the padding
  const acc_t* f0 = f + (ay.fo + ax.fo);
  acc_t acc = acc_t(0);
  if constexpr (MAXK > 0) {
    // Away from the borders every output has all MAXK x MAXK taps, and StyleGAN's filters have
    // no zero weights: then there is nothing to check per tap. Warps are uniform here except at
    // image edges, so the branch is cheap, and the straight-line loop avoids a branch per tap.
    if (!filter_has_zero && ax.klo == 0 && ax.khi == MAXK && ay.klo == 0 && ay.khi == MAXK) {
      RF_UNROLL
      for (int ky = 0; ky < MAXK; ++ky) {
        RF_UNROLL
        for (int kx = 0; kx < MAXK; ++kx)
          acc += mul_rn(f0[ky * sy * fw + kx * sx], to_acc(xp[x0 + int64_t(ky) * in_w + kx]));
      }
      return acc;
    }
    RF_UNROLL
    for (int ky = 0; ky < MAXK; ++ky) {
      if (ky < ay.klo || ky >= ay.khi) continue;
      RF_UNROLL
      for (int kx = 0; kx < MAXK; ++kx) {
        if (kx < ax.klo || kx >= ax.khi) continue;
        const acc_t w = f0[ky * sy * fw + kx * sx];
        // Skipping zero weights (as the CPU kernel does) keeps inf/nan in the input from
        // leaking through taps that carry no weight.
        if (w != acc_t(0)) acc += mul_rn(w, to_acc(xp[x0 + int64_t(ky) * in_w + kx]));
      }
    }
  } else {
    for (int ky = ay.klo; ky < ay.khi; ++ky) {
      const scalar_t* xr = xp + (x0 + int64_t(ky) * in_w);
      const acc_t* fr = f0 + ky * sy * fw;
      for (int kx = ax.klo; kx < ax.khi; ++kx) {
        const acc_t w = fr[kx * sx];
        if (w != acc_t(0)) acc += mul_rn(w, to_acc(xr[kx]));
      }
    }
  }
  return acc;
}

// The kernel body in two phases around its one barrier, written as __host__ __device__ functions
// of explicit block/thread indices so that a host-side emulation of the grid can run this exact
// code (the extension is built on machines without a GPU).
//
// Grid: x = output tiles (column tiles fastest), y = groups of blockDim.z planes (looped when
// there are more than 65535 groups). Each thread computes `rows` outputs of one column, spaced
// blockDim.y apart.

// Phase 1, all threads of a block: tap tables of the tile's columns and rows, filter to shared.
// Returns whether this thread saw a zero filter weight (the kernel ORs that over the block).
template <int UP, typename acc_t>
RF_HD bool upfirdn2d_tile_setup(const Upfirdn2dParams& p, const acc_t* fc, bool filter_in_smem,
                                int tiles_x, int rows, uint3 block, dim3 bdim, uint3 thread,
                                AxisTaps* col_taps, AxisTaps* row_taps, acc_t* f_smem) {
  const int tid = thread.x + bdim.x * (thread.y + bdim.y * thread.z);
  const int nthreads = bdim.x * bdim.y * bdim.z;
  const int tile_w = bdim.x, tile_h = bdim.y * rows;
  const int64_t ox0 = int64_t(block.x % unsigned(tiles_x)) * tile_w;
  const int64_t oy0 = int64_t(block.x / unsigned(tiles_x)) * tile_h;
  // A compile-time up turns the divisions in upfirdn2d_first_tap into shifts.
  const int64_t up_x = UP > 0 ? UP : p.up_x, up_y = UP > 0 ? UP : p.up_y;
  for (int j = tid; j < tile_w + tile_h; j += nthreads) {
    if (j < tile_w)
      col_taps[j] = upfirdn2d_axis_taps(ox0 + j, up_x, p.down_x, p.pad_x0, p.fw, p.in_w, 1, 1);
    else
      row_taps[j - tile_w] = upfirdn2d_axis_taps(oy0 + j - tile_w, up_y, p.down_y, p.pad_y0, p.fh,
                                                 p.in_h, p.in_w, p.fw);
  }
  bool has_zero = false;
  for (int j = tid; j < p.fh * p.fw; j += nthreads) {
    const acc_t w = fc[j];
    if (filter_in_smem) f_smem[j] = w;
    has_zero |= w == acc_t(0);
  }
  return has_zero;
}

// Phase 2, one thread: its outputs, from the tables and filter of phase 1.
template <int UP, int MAXK, typename scalar_t, typename acc_t>
RF_HD void upfirdn2d_tile_compute(const Upfirdn2dParams& p, const scalar_t* x, const acc_t* f,
                                  scalar_t* y, int tiles_x, int rows, uint3 block, dim3 bdim,
                                  dim3 grid, uint3 thread, const AxisTaps* col_taps,
                                  const AxisTaps* row_taps, bool filter_has_zero) {
  // Per-axis positions and sizes are ints (the launcher checks they fit); plane offsets are not.
  const int in_w = int(p.in_w), out_h = int(p.out_h), fw = int(p.fw);
  const int ox = int(block.x % unsigned(tiles_x)) * int(bdim.x) + int(thread.x);
  const int oy0 = int(block.x / unsigned(tiles_x)) * int(bdim.y * rows) + int(thread.y);
  if (ox >= p.out_w) return;
  const AxisTaps ax = col_taps[thread.x];
  const int64_t in_plane = p.in_h * p.in_w, out_plane = p.out_h * p.out_w;
  const int64_t y_step = int64_t(bdim.y) * p.out_w;  // between this thread's output rows
  for (int64_t plane = int64_t(block.y) * bdim.z + thread.z; plane < p.planes;
       plane += int64_t(grid.y) * bdim.z) {
    const scalar_t* xp = x + plane * in_plane;
    int64_t yo = plane * out_plane + int64_t(oy0) * p.out_w + ox;
    for (int r = 0, oy = oy0; r < rows && oy < out_h; ++r, oy += int(bdim.y), yo += y_step) {
      const acc_t v = upfirdn2d_output<UP, MAXK>(xp, in_w, f, fw, int(p.up_x), int(p.up_y),
                                                 row_taps[thread.y + r * bdim.y], ax,
                                                 filter_has_zero);
      store(y + yo, v);
    }
  }
}

template <typename scalar_t, typename acc_t, int UP, int MAXK>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_kernel(Upfirdn2dParams p, const scalar_t* __restrict__ x,
                     const acc_t* __restrict__ fc, scalar_t* __restrict__ y, int tiles_x, int rows,
                     bool filter_in_smem) {
  __shared__ AxisTaps col_taps[kMaxTileW];
  __shared__ AxisTaps row_taps[kMaxTileH];
  // One untyped buffer: an `extern __shared__ acc_t[]` would clash between the float and double
  // instantiations.
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* f_smem = reinterpret_cast<acc_t*>(smem_raw);
  // The unrolled variants are only launched for filters of at most 4x4, always in shared memory;
  // saying so at compile time lets them use shared-memory loads.
  const bool in_smem = MAXK > 0 || filter_in_smem;
  const bool has_zero = upfirdn2d_tile_setup<UP>(p, fc, in_smem, tiles_x, rows, blockIdx, blockDim,
                                                 threadIdx, col_taps, row_taps, f_smem);
  const bool filter_has_zero = __syncthreads_or(has_zero);  // also the barrier between phases
  upfirdn2d_tile_compute<UP, MAXK>(p, x, in_smem ? f_smem : fc, y, tiles_x, rows, blockIdx,
                                   blockDim, gridDim, threadIdx, col_taps, row_taps,
                                   filter_has_zero);
}

// Smallest power of two >= v, at most cap (cap a power of two).
int64_t pow2_at_least(int64_t v, int64_t cap) {
  int64_t r = 1;
  while (r < v && r < cap) r *= 2;
  return r;
}

struct LaunchShape {
  dim3 block, grid;
  int tiles_x, rows;
  bool filter_in_smem;
  size_t smem;
  int up, maxk;  // kernel variant: upfirdn2d_kernel<.., up, maxk>
  const char* error;  // non-null: the sizes do not fit the kernel
};

template <typename acc_t>
LaunchShape upfirdn2d_shape(const Upfirdn2dParams& p) {
  LaunchShape s{};
  // Per-axis indices and filter offsets are ints inside the kernel (with a tile of slack for
  // indices stepping past the end).
  const int64_t kIntMax = 2147483647;
  auto axis_fits = [&](int64_t out, int64_t down, int64_t pad0, int64_t up, int64_t taps,
                       int64_t in) {
    const int64_t apad = pad0 < 0 ? -pad0 : pad0;
    return out <= kIntMax / down - apad - 2 * up - 2 * kMaxTileH && in < kIntMax &&
           taps < kIntMax;
  };
  if (!axis_fits(p.out_w, p.down_x, p.pad_x0, p.up_x, p.fw, p.in_w) ||
      !axis_fits(p.out_h, p.down_y, p.pad_y0, p.up_y, p.fh, p.in_h) || p.fh * p.fw > kIntMax) {
    s.error = "upfirdn2d: image, padding or filter too large for the CUDA kernel's 32-bit axis indices";
    return s;
  }
  // Block shape: a warp across output columns for coalesced stores; for small images the
  // leftover threads take more rows or more planes instead of idling.
  const int64_t bx = pow2_at_least(p.out_w, kMaxTileW);
  const int64_t by = pow2_at_least(p.out_h, kThreads / bx);
  const int64_t bz = pow2_at_least(p.planes, kThreads / (bx * by));
  int64_t rows = 1;
  if (p.out_h > by) {
    rows = (p.out_h + by - 1) / by;
    if (rows > kMaxRowsPerThread) rows = kMaxRowsPerThread;
    if (rows > kMaxTileH / by) rows = kMaxTileH / by;
  }
  const int64_t tiles_x = (p.out_w + bx - 1) / bx;
  const int64_t tiles_y = (p.out_h + by * rows - 1) / (by * rows);
  if (tiles_x * tiles_y > kIntMax) {
    s.error = "upfirdn2d: output too large for the CUDA kernel's grid";
    return s;
  }
  int64_t plane_groups = (p.planes + bz - 1) / bz;
  if (plane_groups > 65535) plane_groups = 65535;  // the kernel loops over the rest

  s.block = dim3{unsigned(bx), unsigned(by), unsigned(bz)};
  s.grid = dim3{unsigned(tiles_x * tiles_y), unsigned(plane_groups), 1};
  s.tiles_x = int(tiles_x);
  s.rows = int(rows);
  s.filter_in_smem = p.fh * p.fw <= kSmemFilterMax;
  s.smem = s.filter_in_smem ? size_t(p.fh * p.fw) * sizeof(acc_t) : 0;
  // Unrolled variants for StyleGAN's resampling (filters up to 4x4 at up 1 or 2, any down);
  // anything else takes the general loops.
  s.up = s.maxk = 0;
  if (p.fh <= 4 && p.fw <= 4 && p.up_x == 2 && p.up_y == 2) s.up = 2, s.maxk = 2;
  if (p.fh <= 4 && p.fw <= 4 && p.up_x == 1 && p.up_y == 1) s.up = 1, s.maxk = 4;
  return s;
}

template <typename scalar_t, typename acc_t>
const char* launch_typed(const Upfirdn2dParams& p, const void* x, const void* fc, void* y,
                         cudaStream_t stream) {
  if (p.planes == 0) return nullptr;
  const LaunchShape s = upfirdn2d_shape<acc_t>(p);
  if (s.error) return s.error;
  auto kernel = upfirdn2d_kernel<scalar_t, acc_t, 0, 0>;
  if (s.up == 2) kernel = upfirdn2d_kernel<scalar_t, acc_t, 2, 2>;
  if (s.up == 1) kernel = upfirdn2d_kernel<scalar_t, acc_t, 1, 4>;
  kernel<<<s.grid, s.block, s.smem, stream>>>(p, static_cast<const scalar_t*>(x),
                                              static_cast<const acc_t*>(fc),
                                              static_cast<scalar_t*>(y), s.tiles_x, s.rows,
                                              s.filter_in_smem);
  return cuda_detail::launch_error();
}

}  // namespace

const char* upfirdn2d_cuda_launch(const Upfirdn2dParams& p, const void* x, const void* fc, void* y,
                                  DtypeCode dtype, cudaStream_t stream) {
  switch (dtype) {
    case kF32: return launch_typed<float, float>(p, x, fc, y, stream);
    case kF64: return launch_typed<double, double>(p, x, fc, y, stream);
    case kF16: return launch_typed<__half, float>(p, x, fc, y, stream);
    case kBF16: return launch_typed<__nv_bfloat16, float>(p, x, fc, y, stream);
  }
  return "upfirdn2d: unknown dtype code";
}

}  // namespace retina_fast
