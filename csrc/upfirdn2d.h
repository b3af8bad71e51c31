// upfirdn2d: upsample (zero insertion), pad/crop, FIR filter, downsample — one fused pass.
//
// For every plane (n, c):  y[oy, ox] = sum_{ty, tx} fc[ty, tx] * p[oy*down_y + ty, ox*down_x + tx]
// where p is the input upsampled by zero insertion and padded by (pad_x0, pad_y0) before /
// (pad_x1, pad_y1) after, and fc is the correlation filter: f flipped (unless flip_filter) and
// scaled by gain. The launcher prepares fc; kernels only see it. Only taps whose upsampled
// position holds a real input sample are visited (polyphase), so up=2 costs (fh/2)*(fw/2) MACs
// per output instead of fh*fw.
#pragma once
#include <cstdint>

#include "common.h"

namespace retina_fast {

struct Upfirdn2dParams {
  int64_t planes;           // N * C
  int64_t in_h, in_w;
  int64_t out_h, out_w;
  int64_t up_x, up_y, down_x, down_y;
  int64_t pad_x0, pad_y0;   // the "after" pads only matter through out_h / out_w
  int64_t fh, fw;           // correlation filter size
};

// Output length along one axis (same formula as the StyleGAN2-ADA reference).
RF_HD int64_t upfirdn2d_out_size(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1,
                                 int64_t taps) {
  return floor_div(in * up + pad0 + pad1 - taps, down) + 1;
}

// First tap and first input index that contribute to output position `o` along one axis:
// taps t = t0, t0 + up, ... < taps read input index i0 + k for the k-th visited tap.
RF_HD void upfirdn2d_first_tap(int64_t o, int64_t up, int64_t down, int64_t pad0, int64_t* t0,
                               int64_t* i0) {
  int64_t base = o * down - pad0;
  *t0 = pos_mod(-base, up);
  *i0 = floor_div(base + *t0, up);
}

}  // namespace retina_fast
