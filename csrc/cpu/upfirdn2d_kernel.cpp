// CPU upfirdn2d: polyphase, row at a time.
//
// Along x, outputs ox = r + q*S (S = up_x / gcd(up_x, down_x)) share one tap pattern per phase r,
// and consecutive q step the input by D = down_x / gcd. So each (output row, input row, phase,
// tap) is one axpy over q into a per-phase row buffer; the axpys vectorise, the edge handling is
// just each tap's valid q-range, and the buffer stays in L1. Rows are spread over threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "alloc.h"

#include <numeric>
#include <type_traits>
#include <vector>

#include "../upfirdn2d_common.h"

namespace retina_fast {
namespace {

// The hot loops: acc[q] += w * x[q * stride]. Built twice (AVX2+FMA and baseline x86-64) and
// picked at load time, so the extension stays portable yet uses 8-wide FMAs where they exist.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RF_MULTIVERSION __attribute__((target_clones("arch=haswell", "default")))
#else
#define RF_MULTIVERSION
#endif

template <typename acc_t, typename scalar_t>
inline void axpy_strided(acc_t* acc, const scalar_t* x, acc_t w, int64_t n, int64_t stride) {
  if (stride == 1) {
    for (int64_t q = 0; q < n; ++q) acc[q] += w * acc_t(x[q]);
  } else {
    for (int64_t q = 0; q < n; ++q) acc[q] += w * acc_t(x[q * stride]);
  }
}
RF_MULTIVERSION void axpy_f32(float* acc, const float* x, float w, int64_t n, int64_t stride) {
  axpy_strided(acc, x, w, n, stride);
}
RF_MULTIVERSION void axpy_f64(double* acc, const double* x, double w, int64_t n, int64_t stride) {
  axpy_strided(acc, x, w, n, stride);
}
// Interleave two phase buffers into one output row: y[2q] = a[q], y[2q+1] = b[q] (up=2 case).
template <typename acc_t, typename scalar_t>
inline void interleave2_generic(scalar_t* y, const acc_t* a, const acc_t* b, int64_t n) {
  for (int64_t q = 0; q < n; ++q) {
    y[2 * q] = scalar_t(a[q]);
    y[2 * q + 1] = scalar_t(b[q]);
  }
}
RF_MULTIVERSION void interleave2_f32(float* y, const float* a, const float* b, int64_t n) {
  interleave2_generic(y, a, b, n);
}
template <typename acc_t, typename scalar_t>
inline void interleave2(scalar_t* y, const acc_t* a, const acc_t* b, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    interleave2_f32(y, a, b, n);
  } else {
    interleave2_generic(y, a, b, n);
  }
}

template <typename acc_t, typename scalar_t>
inline void axpy(acc_t* acc, const scalar_t* x, acc_t w, int64_t n, int64_t stride) {
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    axpy_f32(acc, x, w, n, stride);
  } else if constexpr (std::is_same_v<scalar_t, double>) {
    axpy_f64(acc, x, w, n, stride);
  } else {
    axpy_strided(acc, x, w, n, stride);
  }
}

struct PhaseTap {
  int64_t t;         // tap index into the correlation filter row
  int64_t i0;        // input column read at q = 0 (may be out of range; q range keeps reads inside)
  int64_t q_lo, q_hi;
};

template <typename scalar_t>
void upfirdn2d_rows(const scalar_t* x, const at::opmath_type<scalar_t>* fc, scalar_t* y,
                    const Upfirdn2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t g = std::gcd(p.up_x, p.down_x);
  const int64_t S = p.up_x / g, D = p.down_x / g;

  std::vector<int64_t> nq(S), offset(S);
  std::vector<std::vector<PhaseTap>> taps(S);
  for (int64_t r = 0, off = 0; r < S; ++r) {
    nq[r] = r < p.out_w ? (p.out_w - r + S - 1) / S : 0;
    offset[r] = off;
    off += nq[r];
    int64_t t0, i0;
    upfirdn2d_first_tap(r, p.up_x, p.down_x, p.pad_x0, &t0, &i0);
    for (int64_t t = t0, i = i0; t < p.fw; t += p.up_x, ++i) {
      int64_t lo = std::max<int64_t>(0, ceil_div(-i, D));
      int64_t hi = std::min<int64_t>(nq[r], floor_div(p.in_w - 1 - i, D) + 1);
      if (lo < hi) taps[r].push_back({t, i, lo, hi});
    }
  }

  const int64_t rows = p.planes * p.out_h;
  const int64_t work_per_row = std::max<int64_t>(1, p.out_w * p.fh * p.fw / (p.up_x * p.up_y));
  const int64_t grain = std::max<int64_t>(1, 32768 / work_per_row);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(p.out_w);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t plane = row / p.out_h, oy = row % p.out_h;
      const scalar_t* xp = x + plane * p.in_h * p.in_w;
      std::fill(buf.begin(), buf.end(), acc_t(0));

      int64_t ty0, iy0;
      upfirdn2d_first_tap(oy, p.up_y, p.down_y, p.pad_y0, &ty0, &iy0);
      for (int64_t ty = ty0, iy = iy0; ty < p.fh; ty += p.up_y, ++iy) {
        if (iy < 0 || iy >= p.in_h) continue;
        const scalar_t* xrow = xp + iy * p.in_w;
        const acc_t* frow = fc + ty * p.fw;
        for (int64_t r = 0; r < S; ++r) {
          acc_t* b = buf.data() + offset[r];
          for (const PhaseTap& tap : taps[r]) {
            const acc_t w = frow[tap.t];
            if (w == acc_t(0)) continue;
            axpy<acc_t, scalar_t>(b + tap.q_lo, xrow + tap.i0 + tap.q_lo * D, w, tap.q_hi - tap.q_lo, D);
          }
        }
      }

      scalar_t* yrow = y + row * p.out_w;
      if (S == 1) {
        for (int64_t ox = 0; ox < p.out_w; ++ox) yrow[ox] = scalar_t(buf[ox]);
      } else if (S == 2) {
        const int64_t n1 = nq[1];  // phase 1 has the same count as phase 0 or one fewer
        interleave2<acc_t, scalar_t>(yrow, buf.data(), buf.data() + offset[1], n1);
        if (nq[0] > n1) yrow[2 * n1] = scalar_t(buf[n1]);
      } else {
        for (int64_t r = 0; r < S; ++r) {
          const acc_t* b = buf.data() + offset[r];
          for (int64_t q = 0; q < nq[r]; ++q) yrow[r + q * S] = scalar_t(b[q]);
        }
      }
    }
  });
}

// channels_last: every (output pixel, tap) is an axpy over the C contiguous channels, which
// vectorises for any channel count >= 8 and needs no layout conversion around the kernel.
template <typename acc_t, typename scalar_t>
inline void axpy_channels(acc_t* acc, const scalar_t* x, acc_t w, int64_t c) {
  for (int64_t k = 0; k < c; ++k) acc[k] += w * acc_t(x[k]);
}
RF_MULTIVERSION void nhwc_row_f32(float* buf, const float* xrow, const float* frow, const int64_t* tx0,
                                  const int64_t* ix0, int64_t out_w, int64_t c, int64_t fw, int64_t up,
                                  int64_t in_w) {
  for (int64_t ox = 0; ox < out_w; ++ox) {
    float* acc = buf + ox * c;
    for (int64_t t = tx0[ox], i = ix0[ox]; t < fw; t += up, ++i) {
      if (i < 0 || i >= in_w) continue;
      axpy_channels(acc, xrow + i * c, frow[t], c);
    }
  }
}
template <typename acc_t, typename scalar_t>
inline void nhwc_row(acc_t* buf, const scalar_t* xrow, const acc_t* frow, const int64_t* tx0,
                     const int64_t* ix0, int64_t out_w, int64_t c, int64_t fw, int64_t up, int64_t in_w) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    nhwc_row_f32(buf, xrow, frow, tx0, ix0, out_w, c, fw, up, in_w);
  } else {
    for (int64_t ox = 0; ox < out_w; ++ox) {
      acc_t* acc = buf + ox * c;
      for (int64_t t = tx0[ox], i = ix0[ox]; t < fw; t += up, ++i) {
        if (i < 0 || i >= in_w) continue;
        axpy_channels(acc, xrow + i * c, frow[t], c);
      }
    }
  }
}

template <typename scalar_t>
void upfirdn2d_rows_nhwc(const scalar_t* x, const at::opmath_type<scalar_t>* fc, scalar_t* y,
                         int64_t n, int64_t c, const Upfirdn2dParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> tx0(p.out_w), ix0(p.out_w);
  for (int64_t ox = 0; ox < p.out_w; ++ox)
    upfirdn2d_first_tap(ox, p.up_x, p.down_x, p.pad_x0, &tx0[ox], &ix0[ox]);
  const int64_t rows = n * p.out_h;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(p.out_w * c);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.out_h, oy = row % p.out_h;
      std::fill(buf.begin(), buf.end(), acc_t(0));
      int64_t ty0, iy0;
      upfirdn2d_first_tap(oy, p.up_y, p.down_y, p.pad_y0, &ty0, &iy0);
      for (int64_t ty = ty0, iy = iy0; ty < p.fh; ty += p.up_y, ++iy) {
        if (iy < 0 || iy >= p.in_h) continue;
        nhwc_row<acc_t, scalar_t>(buf.data(), x + (b * p.in_h + iy) * p.in_w * c, fc + ty * p.fw,
                                  tx0.data(), ix0.data(), p.out_w, c, p.fw, p.up_x, p.in_w);
      }
      scalar_t* yrow = y + row * p.out_w * c;
      for (int64_t k = 0; k < p.out_w * c; ++k) yrow[k] = scalar_t(buf[k]);
    }
  });
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x_in, const at::Tensor& f, int64_t up_x, int64_t up_y,
                         int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                         int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain) {
  Upfirdn2dParams p = make_upfirdn2d_params(x_in, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1,
                                            pad_y0, pad_y1);
  // channels_last with enough channels to fill a vector runs as is; anything else as NCHW.
  const bool nhwc = x_in.size(1) >= 8 && x_in.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    !x_in.is_contiguous();
  const at::Tensor x = nhwc ? x_in : x_in.contiguous();

  at::Tensor y = advise_hugepages(at::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options(),
                                            nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor fc = correlation_filter(f, x, at::CppTypeToScalarType<acc_t>::value, flip_filter, gain);
    if (nhwc) {
      upfirdn2d_rows_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), fc.const_data_ptr<acc_t>(),
                                    y.mutable_data_ptr<scalar_t>(), x.size(0), x.size(1), p);
    } else {
      upfirdn2d_rows<scalar_t>(x.const_data_ptr<scalar_t>(), fc.const_data_ptr<acc_t>(),
                               y.mutable_data_ptr<scalar_t>(), p);
    }
  });
  return y.contiguous(x_in.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CPU, m) { m.impl("upfirdn2d", &upfirdn2d_cpu); }

}  // namespace retina_fast
