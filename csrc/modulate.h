// modulate: y[n, c, h, w] = x[n, c, h, w] * s[n, c] + noise[n, c, h, w] (noise optional, broadcast
// through zero strides). It is the style modulation and the demodulation/noise epilogue of a
// modulated convolution: per-(sample, channel) scaling instead of per-sample weights lets the
// convolution itself run dense, with one shared weight for the whole batch. With channels_last,
// y is channels_last whatever x's layout: a CPU convolution that runs channels_last then needs no
// separate layout pass over its input.
//
// modulate_backward: dx = dy * s[n, c] and ds[n, c] = sum_{h, w} dy * x, both from one pass over dy
// and x (the noise gradient is a plain reduction of dy, left to ATen). ds accumulates in double:
// its sums run over whole planes (a million terms at 1024 x 1024), where float sums lose digits.
// dx takes x's layout (autograd would otherwise copy it there), so after a channels_last modulate
// of an NCHW x, dy is channels_last and dx NCHW.
#pragma once
#include <cstdint>

namespace retina_fast {

struct ModulateParams {
  int64_t n, c, h, w;                       // x is contiguous NCHW
  bool has_noise;
  int64_t noise_sn, noise_sc, noise_sh, noise_sw;  // element strides of the expanded noise
};

struct ModulateBackwardParams {
  int64_t n, c, h, w;
  bool need_dx, need_ds;
};

}  // namespace retina_fast
