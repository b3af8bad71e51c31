// CPU modulate: one (n, c) plane per task; the inner loop is a scaled copy (+ noise row).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

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

at::Tensor modulate_cpu(const at::Tensor& x_in, const at::Tensor& s,
                        const std::optional<at::Tensor>& noise) {
  at::Tensor noise_e;
  ModulateParams p = make_modulate_params(x_in, s, noise, &noise_e);
  // channels_last stays channels_last (no conversion pass); other layouts run as NCHW.
  const bool nhwc = x_in.is_contiguous(at::MemoryFormat::ChannelsLast) && !x_in.is_contiguous();
  const at::Tensor x = nhwc ? x_in : x_in.contiguous();
  at::Tensor y = advise_hugepages(at::empty(x.sizes(), x.options(),
                                            nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulate_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::Tensor sc = s.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    const scalar_t* noise_ptr = p.has_noise ? noise_e.const_data_ptr<scalar_t>() : nullptr;
    if (nhwc) {
      modulate_nhwc<scalar_t>(x.const_data_ptr<scalar_t>(), sc.const_data_ptr<acc_t>(), noise_ptr,
                              y.mutable_data_ptr<scalar_t>(), p);
    } else {
      modulate_planes<scalar_t>(x.const_data_ptr<scalar_t>(), sc.const_data_ptr<acc_t>(), noise_ptr,
                                y.mutable_data_ptr<scalar_t>(), p);
    }
  });
  return y.contiguous(x_in.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_fast, CPU, m) { m.impl("modulate", &modulate_cpu); }

}  // namespace retina_fast
