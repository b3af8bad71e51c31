// CPU modulate: one (n, c) plane per task; the inner loop is a scaled copy (+ noise row).
// modulate_backward: the same walk, reading x beside dy to sum dy * x per (n, c). An NCHW x to
// a channels_last y (and back for dx) runs in L1-sized tiles of pixels x channels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "alloc.h"

#include "../modulate_common.h"

namespace retina_fast {
namespace {

template <typename scalar_t>
void modulate_planes(const scalar_t* x, const at::opmath_type<scalar_t>* s, const scalar_t* noise,
                     scalar_t* y, const ModulateParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w;
  at::parallel_for(0, p.n * p.c, std::max<int64_t>(1, 65536 / std::max<int64_t>(hw, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const acc_t scale = s[plane];
      const scalar_t* xp = x + plane * hw;
      scalar_t* yp = y + plane * hw;
      if (!noise) {
        for (int64_t i = 0; i < hw; ++i) yp[i] = scalar_t(acc_t(xp[i]) * scale);
        continue;
      }
      const int64_t n = plane / p.c, c = plane % p.c;
      const scalar_t* np = noise + n * p.noise_sn + c * p.noise_sc;
      for (int64_t h = 0; h < p.h; ++h) {
        const scalar_t* nr = np + h * p.noise_sh;
        const scalar_t* xr = xp + h * p.w;
        scalar_t* yr = yp + h * p.w;
        if (p.noise_sw == 1) {
          for (int64_t w = 0; w < p.w; ++w) yr[w] = scalar_t(acc_t(xr[w]) * scale + acc_t(nr[w]));
        } else {
          for (int64_t w = 0; w < p.w; ++w)
            yr[w] = scalar_t(acc_t(xr[w]) * scale + acc_t(nr[w * p.noise_sw]));
        }
      }
    }
  });
}

// channels_last: per pixel, y[c] = x[c] * s[n, c] + noise[n, c, h, w] over contiguous channels.
template <typename scalar_t>
void modulate_nhwc(const scalar_t* x, const at::opmath_type<scalar_t>* s, const scalar_t* noise,
                   scalar_t* y, const ModulateParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w;
  at::parallel_for(0, p.n * hw, std::max<int64_t>(1, 16384 / std::max<int64_t>(p.c, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t pix = begin; pix < end;) {
      // Pixels of one sample share the scale vector; walk them without per-pixel divisions.
      const int64_t n = pix / hw, stop = std::min(end, (n + 1) * hw);
      const acc_t* __restrict__ sn = s + n * p.c;
      for (; pix < stop; ++pix) {
        const scalar_t* __restrict__ xp = x + pix * p.c;
        scalar_t* __restrict__ yp = y + pix * p.c;
        if (!noise) {
          for (int64_t c = 0; c < p.c; ++c) yp[c] = scalar_t(acc_t(xp[c]) * sn[c]);
          continue;
        }
        const int64_t h = (pix - n * hw) / p.w, w = (pix - n * hw) - h * p.w;
        const scalar_t* np = noise + n * p.noise_sn + h * p.noise_sh + w * p.noise_sw;
        if (p.noise_sc == 0) {
          const acc_t nv = acc_t(np[0]);
          for (int64_t c = 0; c < p.c; ++c) yp[c] = scalar_t(acc_t(xp[c]) * sn[c] + nv);
        } else {
          for (int64_t c = 0; c < p.c; ++c) yp[c] = scalar_t(acc_t(xp[c]) * sn[c] + acc_t(np[c * p.noise_sc]));
        }
      }
    }
  });
}

// Pixels per tile of the layout-changing kernels: a tile of all C channels (~256 KB) stays in L2,
// so the strided side of the transposition is served from cache, while the NCHW side reads runs
// of up to 4096 pixels per channel, long enough for the prefetcher (measured: 4x shorter tiles ran
// the backward 1.7x slower at C = 64).
int64_t tile_pixels(int64_t c) { return std::clamp<int64_t>(65536 / std::max<int64_t>(c, 1), 16, 4096); }

// NCHW x -> channels_last y, the layout change folded into the scaling pass.
template <typename scalar_t>
void modulate_nchw_to_nhwc(const scalar_t* x, const at::opmath_type<scalar_t>* s, const scalar_t* noise,
                           scalar_t* y, const ModulateParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w, c = p.c, tile = tile_pixels(c);
  const int64_t tiles = (hw + tile - 1) / tile;
  at::parallel_for(0, p.n * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles, pix0 = (task - n * tiles) * tile, pix1 = std::min(hw, pix0 + tile);
      for (int64_t ch = 0; ch < c; ++ch) {
        const acc_t scale = s[n * c + ch];
        const scalar_t* __restrict__ xr = x + (n * c + ch) * hw;
        scalar_t* __restrict__ yc = y + n * hw * c + ch;
        if (!noise) {
          for (int64_t pix = pix0; pix < pix1; ++pix) yc[pix * c] = scalar_t(acc_t(xr[pix]) * scale);
          continue;
        }
        const scalar_t* np = noise + n * p.noise_sn + ch * p.noise_sc;
        for (int64_t pix = pix0; pix < pix1; ++pix) {
          const int64_t h = pix / p.w, w = pix - h * p.w;
          yc[pix * c] = scalar_t(acc_t(xr[pix]) * scale + acc_t(np[h * p.noise_sh + w * p.noise_sw]));
        }
      }
    }
  });
}

bool is_nhwc(const at::Tensor& t) {
  return t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

at::Tensor modulate_cpu(const at::Tensor& x_in, const at::Tensor& s,
                        const std::optional<at::Tensor>& noise, bool channels_last) {
  at::Tensor noise_e;
  ModulateParams p = make_modulate_params(x_in, s, noise, &noise_e);
  // channels_last stays channels_last (no conversion pass); other layouts run as NCHW, and are
  // transposed on the way when a channels_last y is asked for.
  const bool nhwc = is_nhwc(x_in);
  const bool transpose = channels_last && !nhwc;
  const at::Tensor x = nhwc ? x_in : x_in.contiguous();
  at::Tensor y = advise_hugepages(at::empty(
      x.sizes(), x.options(),
      nhwc || transpose ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulate_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor sc = s.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const scalar_t* noise_ptr = p.has_noise ? noise_e.const_data_ptr<scalar_t>() : nullptr;
    if (transpose) {
      modulate_nchw_to_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), sc.const_data_ptr<acc_t>(),
                                      noise_ptr, y.mutable_data_ptr<scalar_t>(), p);
    } else if (nhwc) {
      modulate_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), sc.const_data_ptr<acc_t>(), noise_ptr,
                              y.mutable_data_ptr<scalar_t>(), p);
    } else {
      modulate_planes<scalar_t>(x.const_data_ptr<scalar_t>(), sc.const_data_ptr<acc_t>(), noise_ptr,
                                y.mutable_data_ptr<scalar_t>(), p);
    }
  });
  return y.contiguous(channels_last ? at::MemoryFormat::ChannelsLast : x_in.suggest_memory_format());
}

// Lanes of independent double accumulators: without them the sum is one serial dependency chain
// (and the compiler may not reorder a floating-point reduction to vectorise it).
constexpr int64_t kLanes = 8;

// NCHW: one (n, c) plane per task, so each ds entry is one task's sum (deterministic, no merge).
template <typename scalar_t, bool kDx, bool kDs>
void modulate_backward_planes(const scalar_t* dy, const scalar_t* x, const at::opmath_type<scalar_t>* s,
                              scalar_t* dx, double* ds, const ModulateBackwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w;
  at::parallel_for(0, p.n * p.c, std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* __restrict__ dyp = dy + plane * hw;
      const scalar_t* __restrict__ xp = x + plane * hw;
      scalar_t* __restrict__ dxp = kDx ? dx + plane * hw : nullptr;
      const acc_t scale = kDx ? s[plane] : acc_t(0);
      double lane[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= hw; i += kLanes) {
        for (int64_t k = 0; k < kLanes; ++k) {
          if (kDs) lane[k] += double(dyp[i + k]) * double(xp[i + k]);
          if (kDx) dxp[i + k] = scalar_t(acc_t(dyp[i + k]) * scale);
        }
      }
      for (; i < hw; ++i) {
        if (kDs) lane[0] += double(dyp[i]) * double(xp[i]);
        if (kDx) dxp[i] = scalar_t(acc_t(dyp[i]) * scale);
      }
      if (kDs) {
        double sum = 0;
        for (int64_t k = 0; k < kLanes; ++k) sum += lane[k];
        ds[plane] = sum;
      }
    }
  });
}

// channels_last: each sample's pixels split into fixed blocks; a block sums its C channels into
// its own row of `partial`, and the rows are added up afterwards in block order. Fixed blocks
// (not per-thread ranges) keep ds identical whatever the thread count.
template <typename scalar_t, bool kDx, bool kDs>
void modulate_backward_nhwc(const scalar_t* dy, const scalar_t* x, const at::opmath_type<scalar_t>* s,
                            scalar_t* dx, double* ds, const ModulateBackwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w, c = p.c;
  const int64_t block_pix = std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1));
  const int64_t blocks = (hw + block_pix - 1) / block_pix;
  std::vector<double> partial(kDs ? size_t(p.n * blocks * c) : 0);
  at::parallel_for(0, p.n * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, b = task - n * blocks;
      const int64_t pix0 = n * hw + b * block_pix, pix1 = n * hw + std::min(hw, (b + 1) * block_pix);
      const acc_t* __restrict__ sn = s + n * c;
      double* __restrict__ acc = kDs ? partial.data() + task * c : nullptr;
      for (int64_t pix = pix0; pix < pix1; ++pix) {
        const scalar_t* __restrict__ dyp = dy + pix * c;
        const scalar_t* __restrict__ xp = x + pix * c;
        if (kDs)
          for (int64_t ch = 0; ch < c; ++ch) acc[ch] += double(dyp[ch]) * double(xp[ch]);
        if (kDx) {
          scalar_t* __restrict__ dxp = dx + pix * c;
          for (int64_t ch = 0; ch < c; ++ch) dxp[ch] = scalar_t(acc_t(dyp[ch]) * sn[ch]);
        }
      }
    }
  });
  if (!kDs) return;
  for (int64_t n = 0; n < p.n; ++n) {
    double* __restrict__ dsn = ds + n * c;
    for (int64_t ch = 0; ch < c; ++ch) dsn[ch] = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const double* __restrict__ row = partial.data() + (n * blocks + b) * c;
      for (int64_t ch = 0; ch < c; ++ch) dsn[ch] += row[ch];
    }
  }
}

// channels_last dy, NCHW x and dx: the backward of the transposing modulate. Tiled like it, with
// per-tile partial sums as in modulate_backward_nhwc; four lanes break the add chain of each sum.
template <typename scalar_t, bool kDx, bool kDs>
void modulate_backward_nhwc_to_nchw(const scalar_t* dy, const scalar_t* x,
                                    const at::opmath_type<scalar_t>* s, scalar_t* dx, double* ds,
                                    const ModulateBackwardParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t hw = p.h * p.w, c = p.c, tile = tile_pixels(c);
  const int64_t tiles = (hw + tile - 1) / tile;
  std::vector<double> partial(kDs ? size_t(p.n * tiles * c) : 0);
  at::parallel_for(0, p.n * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tiles, pix0 = (task - n * tiles) * tile, pix1 = std::min(hw, pix0 + tile);
      for (int64_t ch = 0; ch < c; ++ch) {
        const scalar_t* __restrict__ dyc = dy + n * hw * c + ch;
        const scalar_t* __restrict__ xr = kDs ? x + (n * c + ch) * hw : nullptr;
        scalar_t* __restrict__ dxr = kDx ? dx + (n * c + ch) * hw : nullptr;
        const acc_t scale = kDx ? s[n * c + ch] : acc_t(0);
        double lane[4] = {};
        int64_t pix = pix0;
        for (; pix + 4 <= pix1; pix += 4) {
          for (int64_t k = 0; k < 4; ++k) {
            const scalar_t g = dyc[(pix + k) * c];
            if (kDs) lane[k] += double(g) * double(xr[pix + k]);
            if (kDx) dxr[pix + k] = scalar_t(acc_t(g) * scale);
          }
        }
        for (; pix < pix1; ++pix) {
          const scalar_t g = dyc[pix * c];
          if (kDs) lane[0] += double(g) * double(xr[pix]);
          if (kDx) dxr[pix] = scalar_t(acc_t(g) * scale);
        }
        if (kDs) partial[task * c + ch] = (lane[0] + lane[1]) + (lane[2] + lane[3]);
      }
    }
  });
  if (!kDs) return;
  for (int64_t n = 0; n < p.n; ++n) {
    double* __restrict__ dsn = ds + n * c;
    for (int64_t ch = 0; ch < c; ++ch) dsn[ch] = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const double* __restrict__ row = partial.data() + (n * tiles + t) * c;
      for (int64_t ch = 0; ch < c; ++ch) dsn[ch] += row[ch];
    }
  }
}

enum class BackwardLayout { kPlanes, kNhwc, kNhwcToNchw };

template <typename scalar_t, bool kDx, bool kDs>
void modulate_backward_typed(BackwardLayout layout, const scalar_t* dy, const scalar_t* x,
                             const at::opmath_type<scalar_t>* s, scalar_t* dx, double* ds,
                             const ModulateBackwardParams& p) {
  switch (layout) {
    case BackwardLayout::kPlanes: return modulate_backward_planes<scalar_t, kDx, kDs>(dy, x, s, dx, ds, p);
    case BackwardLayout::kNhwc: return modulate_backward_nhwc<scalar_t, kDx, kDs>(dy, x, s, dx, ds, p);
    case BackwardLayout::kNhwcToNchw:
      return modulate_backward_nhwc_to_nchw<scalar_t, kDx, kDs>(dy, x, s, dx, ds, p);
  }
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> modulate_backward_cpu(
    const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& s, bool need_dx, bool need_ds) {
  const ModulateBackwardParams p = make_modulate_backward_params(dy_in, x_in, s, need_dx, need_ds);
  if (!need_dx && !need_ds) return {std::nullopt, std::nullopt};
  // dx follows x's layout. dy comes in the forward output's layout: x's, or channels_last after
  // a transposing modulate of an NCHW x, which has its own kernel; other mixes convert dy.
  const bool x_nhwc = is_nhwc(x_in);
  const BackwardLayout layout = x_nhwc ? BackwardLayout::kNhwc
                                : is_nhwc(dy_in) ? BackwardLayout::kNhwcToNchw
                                                 : BackwardLayout::kPlanes;
  const at::Tensor dy = layout == BackwardLayout::kNhwc ? dy_in.contiguous(at::MemoryFormat::ChannelsLast)
                        : layout == BackwardLayout::kNhwcToNchw ? dy_in
                                                                : dy_in.contiguous();
  const at::Tensor x = need_ds ? (x_nhwc ? x_in : x_in.contiguous()) : at::Tensor();
  at::Tensor dx = !need_dx ? at::Tensor() : x_nhwc ? empty_large_like(dy) : empty_large(dy.sizes(), dy.options());
  at::Tensor ds64 = need_ds ? at::empty({p.n, p.c}, s.options().dtype(at::kDouble)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "modulate_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor sc = need_dx ? s.to(c10::CppTypeToScalarType<acc_t>::value).contiguous() : at::Tensor();
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* xp = need_ds ? x.const_data_ptr<scalar_t>() : nullptr;
    const acc_t* sp = need_dx ? sc.const_data_ptr<acc_t>() : nullptr;
    scalar_t* dxp = need_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr;
    double* dsp = need_ds ? ds64.mutable_data_ptr<double>() : nullptr;
    if (need_dx && need_ds)
      modulate_backward_typed<scalar_t, true, true>(layout, dyp, xp, sp, dxp, dsp, p);
    else if (need_dx)
      modulate_backward_typed<scalar_t, true, false>(layout, dyp, xp, sp, dxp, dsp, p);
    else
      modulate_backward_typed<scalar_t, false, true>(layout, dyp, xp, sp, dxp, dsp, p);
  });
  std::optional<at::Tensor> dx_out, ds_out;
  if (need_dx) dx_out = dx.contiguous(x_in.suggest_memory_format());
  if (need_ds) ds_out = ds64.to(s.scalar_type());
  return {dx_out, ds_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CPU, m) {
  m.impl("modulate", &modulate_cpu);
  m.impl("modulate_backward", &modulate_backward_cpu);
}

}  // namespace retina_fast
