// CPU upfirdn2d: polyphase, one output row at a time, for NCHW and channels_last alike.
//
// Along x, outputs ox = r + q*S (S = up_x / gcd(up_x, down_x)) share one tap pattern per phase r,
// and consecutive q step the input by D = down_x / gcd. So each (output row, input row, phase,
// tap) is one axpy over q into a per-phase buffer. Both layouts are the same walk over "pixels"
// of C contiguous values: NCHW is C = 1 with one image per (n, c) plane; channels_last is
// C = channels with one image per sample, where a tap's axpy runs over q * C contiguous values
// when D = 1. Rows are cut into chunks whose buffers stay in L1, and spread over threads.
//
// An optional epilogue turns the filter into the fused step of a modulated convolution:
// y = filtered * scale[n, c] + noise, and dot[n, c] = sum_{h, w} filtered * other (the style
// gradient of that step's backward), all while the filtered row is still in cache.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "alloc.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../upfirdn2d_common.h"

namespace retina_fast {
namespace {

// The hot loops: acc[q] += w * x[q * stride]. Built for AVX-512, AVX2+FMA and baseline x86-64 and
// picked at load time, so the extension stays portable yet uses the widest FMAs the CPU has
// (AVX-512 ran the 4x4 filter of a [4, 32, 1024, 1024] batch in 68 ms against 115 ms with AVX2).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RF_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=haswell", "default")))
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

// acc[q * C + k] += w * x[(q * D) * C + k] for q < n, k < C: one long axpy when the pixels are
// contiguous (D = 1), else one per pixel (or a strided one for C = 1).
template <typename acc_t, typename scalar_t>
inline void axpy_pixels(acc_t* acc, const scalar_t* x, acc_t w, int64_t n, int64_t c, int64_t d) {
  if (d == 1) {
    axpy<acc_t, scalar_t>(acc, x, w, n * c, 1);
  } else if (c == 1) {
    axpy<acc_t, scalar_t>(acc, x, w, n, d);
  } else {
    for (int64_t q = 0; q < n; ++q) axpy<acc_t, scalar_t>(acc + q * c, x + q * d * c, w, c, 1);
  }
}

// Interleave two phase buffers into one output row: y[2q] = a[q], y[2q+1] = b[q] (up=2, C = 1).
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

// channels_last filtering without resampling (the FIR step of an upsampling convolution, and
// its adjoint) is the hottest case: there every output pixel's taps are summed in registers, 16
// channels x 8 pixels at a time, instead of one axpy per tap through the row buffer (which spent
// two loads and a store per multiply-add: 70 ms against 24 ms for the [4, 32, 1024, 1024] layer).
// buf[j * C + k] = sum over the valid rows r and taps tx of frows[r][tx] * xrows[r][(ox0 + j + tx
// - pad_x0) * C + k], for j < n; C is a multiple of 16.
#if defined(__GNUC__)
typedef float v16f __attribute__((vector_size(64)));
typedef float v16f_u __attribute__((vector_size(64), aligned(4), may_alias));  // unaligned access
constexpr int64_t kPixelBlock = 8;
constexpr int64_t kMaxBlockedRows = 16;  // filter rows (taller filters take the generic walk)

RF_MULTIVERSION void filter_chunk_nhwc_f32(float* buf, const float* const* xrows, const float* const* frows,
                                           int64_t nrows, int64_t fw, int64_t in_w, int64_t C,
                                           int64_t ox0, int64_t n, int64_t pad_x0) {
  int64_t j = 0;
  while (j < n) {
    const int64_t ix = ox0 + j - pad_x0;  // input column under tap 0
    if (ix >= 0 && j + kPixelBlock <= n && ix + kPixelBlock - 1 + fw - 1 < in_w) {
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        v16f a[kPixelBlock] = {};
        for (int64_t r = 0; r < nrows; ++r) {
          const float* xr = xrows[r] + ix * C + c0;
          for (int64_t tx = 0; tx < fw; ++tx) {
            const float w = frows[r][tx];
            const float* xp = xr + tx * C;
            for (int64_t b = 0; b < kPixelBlock; ++b) a[b] += w * *reinterpret_cast<const v16f_u*>(xp + b * C);
          }
        }
        for (int64_t b = 0; b < kPixelBlock; ++b) *reinterpret_cast<v16f_u*>(buf + (j + b) * C + c0) = a[b];
      }
      j += kPixelBlock;
    } else {  // near an edge (or the chunk's tail): one pixel, checking every tap
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        v16f a = {};
        for (int64_t r = 0; r < nrows; ++r)
          for (int64_t tx = 0; tx < fw; ++tx)
            if (ix + tx >= 0 && ix + tx < in_w) a += frows[r][tx] * *reinterpret_cast<const v16f_u*>(xrows[r] + (ix + tx) * C + c0);
        *reinterpret_cast<v16f_u*>(buf + j * C + c0) = a;
      }
      j += 1;
    }
  }
}
#define RF_HAVE_FILTER_CHUNK 1
#endif

// Outputs far larger than the caches are written with streaming (non-temporal) stores where the CPU
// has AVX-512: a plain store first reads each line it writes (read-for-ownership), which, once
// freed memory is reused and page faults are gone, left the up=2 [4, 32, 2048, 2048] output
// at ~17 GB/s of writes on a 45 GB/s machine. Each function ends with a fence, so the rows are
// visible to other threads when the parallel region joins.
constexpr int64_t kStreamBytes = int64_t(64) << 20;  // beyond any L3 we run on
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RF_HAVE_STREAM 1
bool cpu_streams() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
__attribute__((target("avx512f"))) void copy_stream_f32(float* y, const float* a, int64_t n) {
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(y + i) & 63); ++i) y[i] = a[i];
  for (; i + 16 <= n; i += 16) _mm512_stream_ps(y + i, _mm512_loadu_ps(a + i));
  for (; i < n; ++i) y[i] = a[i];
  _mm_sfence();
}
// y[2q] = a[q], y[2q + 1] = b[q]; y must be 8-byte aligned (whole output pairs).
__attribute__((target("avx512f"))) void interleave2_stream_f32(float* y, const float* a, const float* b,
                                                               int64_t n) {
  const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  int64_t q = 0;
  for (; q < n && (reinterpret_cast<uintptr_t>(y + 2 * q) & 63); ++q) y[2 * q] = a[q], y[2 * q + 1] = b[q];
  for (; q + 16 <= n; q += 16) {
    const __m512 va = _mm512_loadu_ps(a + q), vb = _mm512_loadu_ps(b + q);
    _mm512_stream_ps(y + 2 * q, _mm512_permutex2var_ps(va, lo, vb));
    _mm512_stream_ps(y + 2 * q + 16, _mm512_permutex2var_ps(va, hi, vb));
  }
  for (; q < n; ++q) y[2 * q] = a[q], y[2 * q + 1] = b[q];
  _mm_sfence();
}
#endif

struct PhaseTap {
  int64_t t;         // tap index into the correlation filter row
  int64_t i0;        // input column read at q = 0 (may be out of range; q range keeps reads inside)
  int64_t q_lo, q_hi;
};

// The epilogue of the fused modulated-convolution step (every member optional):
//   dot[img * C + k] += filtered * dot_with   (dot_with laid out like y)
//   y = filtered * scale[img * C + k] + noise
// Images are (n, c) planes in NCHW (C = 1) and samples in channels_last, so a scale index is
// img * C + k in both. noise element (img, oy, ox, k) sits at
// noise + (img / groups) * sn + (img % groups) * sc + oy * sh + ox * sw + k * sk.
template <typename scalar_t>
struct Epilogue {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t* scale = nullptr;
  const scalar_t* noise = nullptr;
  int64_t groups = 1, sn = 0, sc = 0, sh = 0, sw = 0, sk = 0;
  const scalar_t* dot_with = nullptr;
  double* dot_rows = nullptr;  // [images * out_h * C]: one partial sum per row (deterministic)
  bool active() const { return scale || noise || dot_with; }
};

constexpr int64_t kChunkValues = 8192;  // per-row buffer size: 32 KB of float accumulators
constexpr int64_t kDotLanes = 8;        // independent partial sums when C = 1

// The epilogue on one phase's run of n pixels of C values in the row buffer b. Pixel j's noise
// is np[j * n_step + k * n_k], its dot partner dp[j * d_step + k]. dot holds C sums (C > 1) or
// kDotLanes lanes of one sum (C = 1); the dot uses the filtered value, before scale and noise.
template <typename acc_t, typename scalar_t>
inline void epilogue_run_generic(acc_t* __restrict b, int64_t n, int64_t C, const acc_t* __restrict sc,
                                 const scalar_t* __restrict np, int64_t n_step, int64_t n_k,
                                 const scalar_t* __restrict dp, int64_t d_step, double* __restrict dot) {
  if (dp) {
    if (C == 1) {
      int64_t j = 0;
      for (; j + kDotLanes <= n; j += kDotLanes)
        for (int64_t l = 0; l < kDotLanes; ++l) dot[l] += double(b[j + l]) * double(dp[(j + l) * d_step]);
      for (; j < n; ++j) dot[0] += double(b[j]) * double(dp[j * d_step]);
    } else {
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < C; ++k) dot[k] += double(b[j * C + k]) * double(dp[j * d_step + k]);
    }
  }
  if (sc) {
    if (C == 1) {
      const acc_t s0 = sc[0];
      for (int64_t j = 0; j < n; ++j) b[j] *= s0;
    } else {
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < C; ++k) b[j * C + k] *= sc[k];
    }
  }
  if (np) {
    if (C == 1) {
      for (int64_t j = 0; j < n; ++j) b[j] += acc_t(np[j * n_step]);
    } else if (n_k == 0) {
      for (int64_t j = 0; j < n; ++j) {
        const acc_t v = acc_t(np[j * n_step]);
        for (int64_t k = 0; k < C; ++k) b[j * C + k] += v;
      }
    } else {
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < C; ++k) b[j * C + k] += acc_t(np[j * n_step + k * n_k]);
    }
  }
}
RF_MULTIVERSION void epilogue_run_f32(float* b, int64_t n, int64_t C, const float* sc, const float* np,
                                      int64_t n_step, int64_t n_k, const float* dp, int64_t d_step,
                                      double* dot) {
  epilogue_run_generic(b, n, C, sc, np, n_step, n_k, dp, d_step, dot);
}
template <typename acc_t, typename scalar_t>
inline void epilogue_run(acc_t* b, int64_t n, int64_t C, const acc_t* sc, const scalar_t* np,
                         int64_t n_step, int64_t n_k, const scalar_t* dp, int64_t d_step, double* dot) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    epilogue_run_f32(b, n, C, sc, np, n_step, n_k, dp, d_step, dot);
  } else {
    epilogue_run_generic(b, n, C, sc, np, n_step, n_k, dp, d_step, dot);
  }
}

// StyleGAN's filters are outer products ([1, 3, 3, 1] x [1, 3, 3, 1]). For such a filter the NCHW
// walk filters each output row's input rows vertically once, into a row of the input's width, and
// then filters that row horizontally: fh/up_y + fw/up_x axpys per output row instead of
// (fh/up_y) * (fw/up_x) (8 instead of 16 for a 4x4 filter at down=2, the discriminator's and the
// upsampling backward's case). Returns false (and the generic walk runs) unless
// fc[ty][tx] == fv[ty] * fh[tx] to within a few units of the accumulation type's precision.
template <typename acc_t>
bool split_rank1(const acc_t* fc, int64_t rows, int64_t cols, std::vector<acc_t>* fv, std::vector<acc_t>* fh) {
  int64_t r0 = 0, c0 = 0;
  acc_t peak = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (std::abs(fc[r * cols + c]) > peak) peak = std::abs(fc[r * cols + c]), r0 = r, c0 = c;
  if (peak == acc_t(0)) return false;
  fv->resize(rows);
  fh->resize(cols);
  for (int64_t r = 0; r < rows; ++r) (*fv)[r] = fc[r * cols + c0];
  for (int64_t c = 0; c < cols; ++c) (*fh)[c] = fc[r0 * cols + c] / fc[r0 * cols + c0];
  const acc_t tol = 8 * std::numeric_limits<acc_t>::epsilon() * peak;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (std::abs(fc[r * cols + c] - (*fv)[r] * (*fh)[c]) > tol) return false;
  return true;
}

template <typename scalar_t>
void upfirdn2d_rows(const scalar_t* x, const at::opmath_type<scalar_t>* fc, scalar_t* y,
                    const Upfirdn2dParams& p, int64_t images, int64_t C, const Epilogue<scalar_t>& e) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t g = std::gcd(p.up_x, p.down_x);
  const int64_t S = p.up_x / g, D = p.down_x / g;

  std::vector<std::vector<PhaseTap>> taps(S);
  for (int64_t r = 0; r < S; ++r) {
    const int64_t nq = r < p.out_w ? (p.out_w - r + S - 1) / S : 0;
    int64_t t0, i0;
    upfirdn2d_first_tap(r, p.up_x, p.down_x, p.pad_x0, &t0, &i0);
    for (int64_t t = t0, i = i0; t < p.fw; t += p.up_x, ++i) {
      int64_t lo = std::max<int64_t>(0, ceil_div(-i, D));
      int64_t hi = std::min<int64_t>(nq, floor_div(p.in_w - 1 - i, D) + 1);
      if (lo < hi) taps[r].push_back({t, i, lo, hi});
    }
  }

  const int64_t chunk_px = std::max<int64_t>(S, kChunkValues / C / S * S);
#ifdef RF_HAVE_FILTER_CHUNK
  const bool blocked = std::is_same_v<scalar_t, float> && C % 16 == 0 && p.up_x == 1 && p.down_x == 1 &&
                       p.up_y == 1 && p.down_y == 1 && p.fh <= kMaxBlockedRows;
#else
  constexpr bool blocked = false;
#endif
#ifdef RF_HAVE_STREAM
  const bool stream = images * p.out_h * p.out_w * C * int64_t(sizeof(scalar_t)) >= kStreamBytes && cpu_streams();
#endif
  std::vector<acc_t> fv, fh;
  const bool separable = !blocked && C == 1 && p.fh > 1 && p.fw > 1 && split_rank1(fc, p.fh, p.fw, &fv, &fh);
  const int64_t rows = images * p.out_h;
  const int64_t work_per_row = std::max<int64_t>(1, p.out_w * C * p.fh * p.fw / (p.up_x * p.up_y));
  const int64_t grain = std::max<int64_t>(1, 32768 / work_per_row);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::min(chunk_px, p.out_w + S) * C);
    std::vector<int64_t> qa(S), qb(S), off(S);
    std::vector<double> dot(e.dot_with ? std::max(C, kDotLanes) : 0);
    std::vector<acc_t> column_sums(separable ? p.in_w : 0);  // the vertically filtered input row
    for (int64_t row = begin; row < end; ++row) {
      const int64_t img = row / p.out_h, oy = row % p.out_h;
      const scalar_t* xi = x + img * p.in_h * p.in_w * C;
      scalar_t* yrow = y + row * p.out_w * C;
      int64_t ty0, iy0;
      upfirdn2d_first_tap(oy, p.up_y, p.down_y, p.pad_y0, &ty0, &iy0);
      if (e.dot_with) std::fill(dot.begin(), dot.end(), 0.0);
      if (separable) {
        std::fill(column_sums.begin(), column_sums.end(), acc_t(0));
        for (int64_t ty = ty0, iy = iy0; ty < p.fh; ty += p.up_y, ++iy)
          if (iy >= 0 && iy < p.in_h && fv[ty] != acc_t(0))
            axpy<acc_t, scalar_t>(column_sums.data(), xi + iy * p.in_w, fv[ty], p.in_w, 1);
      }

      for (int64_t ox0 = 0; ox0 < p.out_w; ox0 += chunk_px) {
        const int64_t ox1 = std::min(p.out_w, ox0 + chunk_px);
        for (int64_t r = 0, o = 0; r < S; ++r) {
          qa[r] = ox0 / S;
          qb[r] = std::max(qa[r], ceil_div(ox1 - r, S));
          off[r] = o;
          o += (qb[r] - qa[r]) * C;
        }
        const int64_t used = off[S - 1] + (qb[S - 1] - qa[S - 1]) * C;
#ifdef RF_HAVE_FILTER_CHUNK
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (blocked) {
            const float* xrows[kMaxBlockedRows];
            const float* frows[kMaxBlockedRows];
            int64_t nrows = 0;
            for (int64_t ty = ty0, iy = iy0; ty < p.fh; ty += p.up_y, ++iy) {
              if (iy < 0 || iy >= p.in_h) continue;
              xrows[nrows] = xi + iy * p.in_w * C;
              frows[nrows++] = fc + ty * p.fw;
            }
            filter_chunk_nhwc_f32(buf.data(), xrows, frows, nrows, p.fw, p.in_w, C, ox0, ox1 - ox0, p.pad_x0);
          }
        }
#endif
        if (!blocked) std::fill(buf.begin(), buf.begin() + used, acc_t(0));
        if (separable) {
          for (int64_t r = 0; r < S; ++r) {
            for (const PhaseTap& tap : taps[r]) {
              const acc_t w = fh[tap.t];
              const int64_t lo = std::max(tap.q_lo, qa[r]), hi = std::min(tap.q_hi, qb[r]);
              if (w == acc_t(0) || lo >= hi) continue;
              axpy<acc_t, acc_t>(buf.data() + off[r] + (lo - qa[r]), column_sums.data() + tap.i0 + lo * D, w,
                                 hi - lo, D);
            }
          }
        }

        for (int64_t ty = ty0, iy = iy0; !blocked && !separable && ty < p.fh; ty += p.up_y, ++iy) {
          if (iy < 0 || iy >= p.in_h) continue;
          const scalar_t* xrow = xi + iy * p.in_w * C;
          const acc_t* frow = fc + ty * p.fw;
          for (int64_t r = 0; r < S; ++r) {
            for (const PhaseTap& tap : taps[r]) {
              const acc_t w = frow[tap.t];
              const int64_t lo = std::max(tap.q_lo, qa[r]), hi = std::min(tap.q_hi, qb[r]);
              if (w == acc_t(0) || lo >= hi) continue;
              axpy_pixels<acc_t, scalar_t>(buf.data() + off[r] + (lo - qa[r]) * C,
                                           xrow + (tap.i0 + lo * D) * C, w, hi - lo, C, D);
            }
          }
        }

        if (e.active()) {
          const scalar_t* nrow = e.noise ? e.noise + (img / e.groups) * e.sn + (img % e.groups) * e.sc + oy * e.sh
                                         : nullptr;
          const scalar_t* drow = e.dot_with ? e.dot_with + row * p.out_w * C : nullptr;
          const acc_t* sc = e.scale ? e.scale + img * C : nullptr;
          for (int64_t r = 0; r < S; ++r) {
            const int64_t ox = r + qa[r] * S;  // the run's first pixel
            epilogue_run<acc_t, scalar_t>(buf.data() + off[r], qb[r] - qa[r], C, sc,
                                          nrow ? nrow + ox * e.sw : nullptr, S * e.sw, e.sk,
                                          drow ? drow + ox * C : nullptr, S * C, dot.data());
          }
        }

        scalar_t* ychunk = yrow + ox0 * C;
        if (S == 1) {
#ifdef RF_HAVE_STREAM
          if constexpr (std::is_same_v<scalar_t, float>) {
            if (stream) {
              copy_stream_f32(ychunk, buf.data(), used);
              continue;
            }
          }
#endif
          for (int64_t k = 0; k < used; ++k) ychunk[k] = scalar_t(buf[k]);
        } else if (S == 2 && C == 1) {
          const int64_t n0 = qb[0] - qa[0], n1 = qb[1] - qa[1];  // n1 is n0 or n0 - 1
#ifdef RF_HAVE_STREAM
          if constexpr (std::is_same_v<scalar_t, float>) {
            if (stream && (reinterpret_cast<uintptr_t>(ychunk) & 7) == 0) {
              interleave2_stream_f32(ychunk, buf.data(), buf.data() + off[1], n1);
              if (n0 > n1) ychunk[2 * n1] = buf[n1];
              continue;
            }
          }
#endif
          interleave2<acc_t, scalar_t>(ychunk, buf.data(), buf.data() + off[1], n1);
          if (n0 > n1) ychunk[2 * n1] = scalar_t(buf[n1]);
        } else {
          for (int64_t r = 0; r < S; ++r) {
            const acc_t* b = buf.data() + off[r];
            for (int64_t q = qa[r]; q < qb[r]; ++q, b += C) {
              scalar_t* yp = yrow + (r + q * S) * C;
              for (int64_t k = 0; k < C; ++k) yp[k] = scalar_t(b[k]);
            }
          }
        }
      }
      if (e.dot_with) {
        double* out = e.dot_rows + row * C;
        if (C == 1) {
          double sum = 0;
          for (int64_t l = 0; l < kDotLanes; ++l) sum += dot[l];
          out[0] = sum;
        } else {
          std::copy(dot.begin(), dot.begin() + C, out);
        }
      }
    }
  });
}

// channels_last with enough channels to fill a vector runs as is; anything else as NCHW.
bool runs_nhwc(const at::Tensor& x) {
  return x.size(1) >= 8 && x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

// Runs the kernel on x (its layout decides the walk) with an optional scale [N, C], noise
// (broadcastable to y) and dot_with (y's shape); returns y and, with dot_with, dot [N, C] in double.
std::tuple<at::Tensor, at::Tensor> upfirdn2d_cpu_impl(
    const at::Tensor& x_in, const at::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x,
    int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip_filter,
    double gain, const at::Tensor& scale, const at::Tensor& noise, const at::Tensor& dot_with) {
  Upfirdn2dParams p = make_upfirdn2d_params(x_in, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1,
                                            pad_y0, pad_y1);
  const bool nhwc = runs_nhwc(x_in);
  const auto fmt = nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t n = x.size(0), channels = x.size(1);
  const int64_t images = nhwc ? n : n * channels, C = nhwc ? channels : 1;

  at::Tensor y = advise_hugepages(at::empty({n, channels, p.out_h, p.out_w}, x.options(), fmt));
  at::Tensor noise_e, other, dot_rows;
  if (noise.defined()) {
    TORCH_CHECK_VALUE(noise.scalar_type() == x.scalar_type(), "upfirdn2d_modulate: noise dtype must match x");
    TORCH_CHECK_VALUE(noise.device() == x.device(), "upfirdn2d_modulate: noise is on ", noise.device(),
                      " but x is on ", x.device());
    noise_e = noise.expand(y.sizes());
  }
  if (dot_with.defined()) {
    TORCH_CHECK_VALUE(dot_with.sizes() == y.sizes(), "upfirdn2d_modulate_backward: x must have shape ",
                      y.sizes(), " (the shape of the adjoint of dy), got ", dot_with.sizes());
    other = dot_with.to(x.scalar_type()).contiguous(fmt);
    dot_rows = at::empty({images * p.out_h * C}, x.options().dtype(at::kDouble));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor fc = correlation_filter(f, x, at::CppTypeToScalarType<acc_t>::value, flip_filter, gain);
    at::Tensor sc;
    Epilogue<scalar_t> e;
    if (scale.defined()) {
      sc = scale.to(at::CppTypeToScalarType<acc_t>::value).contiguous();
      e.scale = sc.const_data_ptr<acc_t>();
    }
    if (noise_e.defined()) {
      e.noise = noise_e.const_data_ptr<scalar_t>();
      e.groups = nhwc ? 1 : channels;
      e.sn = noise_e.stride(0); e.sc = noise_e.stride(1); e.sh = noise_e.stride(2); e.sw = noise_e.stride(3);
      e.sk = noise_e.stride(1);
    }
    if (other.defined()) {
      e.dot_with = other.const_data_ptr<scalar_t>();
      e.dot_rows = dot_rows.mutable_data_ptr<double>();
    }
    upfirdn2d_rows<scalar_t>(x.const_data_ptr<scalar_t>(), fc.const_data_ptr<acc_t>(),
                             y.mutable_data_ptr<scalar_t>(), p, images, C, e);
  });
  at::Tensor dot;
  if (dot_rows.defined()) dot = dot_rows.view({n, nhwc ? 1 : channels, p.out_h, C}).sum(2).view({n, channels});
  return {y.contiguous(x_in.suggest_memory_format()), dot};
}

at::Tensor upfirdn2d_cpu(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
                         int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                         int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain) {
  return std::get<0>(upfirdn2d_cpu_impl(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0,
                                        pad_y1, flip_filter, gain, {}, {}, {}));
}

void check_scale(const char* op, const at::Tensor& s, const at::Tensor& x) {
  TORCH_CHECK_VALUE(s.dim() == 2 && s.size(0) == x.size(0) && s.size(1) == x.size(1), op,
                    ": s must be [N, C] = [", x.size(0), ", ", x.size(1), "], got ", s.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(s.scalar_type()), op, ": s must be floating point");
  TORCH_CHECK_VALUE(s.device() == x.device(), op, ": s is on ", s.device(), " but x is on ", x.device());
}

at::Tensor upfirdn2d_modulate_cpu(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
                                  int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                                  int64_t pad_y0, int64_t pad_y1, bool flip_filter, double gain,
                                  const at::Tensor& s, const std::optional<at::Tensor>& noise) {
  check_scale("upfirdn2d_modulate", s, x);
  return std::get<0>(upfirdn2d_cpu_impl(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0,
                                        pad_y1, flip_filter, gain, s, noise.value_or(at::Tensor()), {}));
}

// The parameters are those of the adjoint upfirdn2d (dy -> shape of x), computed by the caller.
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> upfirdn2d_modulate_backward_cpu(
    const at::Tensor& dy, const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y,
    int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
    bool flip_filter, double gain, const at::Tensor& s, bool need_dx, bool need_ds) {
  check_scale("upfirdn2d_modulate_backward", s, x);
  if (!need_dx && !need_ds) return {std::nullopt, std::nullopt};
  auto [dx, ds] = upfirdn2d_cpu_impl(dy, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1,
                                     flip_filter, gain, need_dx ? s : at::Tensor(), {},
                                     need_ds ? x : at::Tensor());
  std::optional<at::Tensor> dx_out, ds_out;
  if (need_dx) dx_out = dx.contiguous(x.suggest_memory_format());
  if (need_ds) ds_out = ds.to(s.scalar_type());
  return {dx_out, ds_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CPU, m) {
  m.impl("upfirdn2d", &upfirdn2d_cpu);
  m.impl("upfirdn2d_modulate", &upfirdn2d_modulate_cpu);
  m.impl("upfirdn2d_modulate_backward", &upfirdn2d_modulate_backward_cpu);
}

}  // namespace retina_fast
