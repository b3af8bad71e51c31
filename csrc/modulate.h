// modulate: y[n, c, h, w] = x[n, c, h, w] * s[n, c] + noise[n, c, h, w] (noise optional, broadcast
// through zero strides). It is the style modulation and the demodulation/noise epilogue of a
// modulated convolution: per-(sample, channel) scaling instead of per-sample weights lets the
// convolution itself run dense, with one shared weight for the whole batch.
#pragma once
#include <cstdint>

namespace retina_fast {

struct ModulateParams {
  int64_t n, c, h, w;                       // x is contiguous NCHW
  bool has_noise;
  int64_t noise_sn, noise_sc, noise_sh, noise_sw;  // element strides of the expanded noise
};

}  // namespace retina_fast
