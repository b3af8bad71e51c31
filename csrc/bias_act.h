// bias_act: y = clamp(act(x + b) * gain, -clamp, clamp), the bias broadcast along one dimension.
//
// Activations and their derivatives are written once here and used by both the CPU and the
// CUDA kernels; the derivative is taken with respect to the activation input z = x + b.
#pragma once
#include <cmath>
#include <cstdint>

#include "common.h"

namespace retina_fast {

enum class Act : int { Linear = 0, Relu, Lrelu, Tanh, Sigmoid, Elu, Selu, Softplus, Swish };

struct BiasActParams {
  int64_t numel;
  int64_t bias_len;      // 0 when there is no bias
  int64_t bias_stride;   // memory stride of the bias dimension: element i uses b[(i / stride) % len]
  Act act;
  double alpha, gain, clamp;  // clamp < 0 disables clamping
};

// Stays on exp()'s finite side; beyond this softplus(z) == z in float and double alike.
constexpr double kSoftplusLinear = 20.0;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

#if defined(__CUDACC__)
#define RF_EXP(v) exp(v)
#define RF_TANH(v) tanh(v)
#define RF_LOG1P(v) log1p(v)
#else
#define RF_EXP(v) std::exp(v)
#define RF_TANH(v) std::tanh(v)
#define RF_LOG1P(v) std::log1p(v)
#endif

template <typename T>
RF_HD T act_forward(Act act, T z, T alpha) {
  switch (act) {
    case Act::Linear: return z;
    case Act::Relu: return z > T(0) ? z : T(0);
    // max(z, 0) + alpha * min(z, 0), spelled as std::max/min do (NaN propagates; exact, since
    // one term is 0): compiles to maxss/minss. `z > 0 ? z : z * alpha` became a branch (the
    // compiler may not speculate the multiply), which mispredicts half the time on
    // random-signed activations: the CPU loop ran 30x slower than relu's.
    case Act::Lrelu: return (z < T(0) ? T(0) : z) + alpha * (T(0) < z ? T(0) : z);
    case Act::Tanh: return RF_TANH(z);
    case Act::Sigmoid: return T(1) / (T(1) + RF_EXP(-z));
    case Act::Elu: return z >= T(0) ? z : RF_EXP(z) - T(1);
    case Act::Selu: return z >= T(0) ? T(kSeluScale) * z : T(kSeluScale * kSeluAlpha) * (RF_EXP(z) - T(1));
    case Act::Softplus: return z > T(kSoftplusLinear) ? z : RF_LOG1P(RF_EXP(z));
    case Act::Swish: return z / (T(1) + RF_EXP(-z));
  }
  return z;
}

// d act / dz. Matches torch's conventions at the kinks (relu'(0) = 0, lrelu'(0) = alpha).
template <typename T>
RF_HD T act_derivative(Act act, T z, T alpha) {
  switch (act) {
    case Act::Linear: return T(1);
    case Act::Relu: return z > T(0) ? T(1) : T(0);
    case Act::Lrelu: return z > T(0) ? T(1) : alpha;
    case Act::Tanh: { T t = RF_TANH(z); return T(1) - t * t; }
    case Act::Sigmoid: { T s = T(1) / (T(1) + RF_EXP(-z)); return s * (T(1) - s); }
    case Act::Elu: return z > T(0) ? T(1) : RF_EXP(z);
    case Act::Selu: return z > T(0) ? T(kSeluScale) : T(kSeluScale * kSeluAlpha) * RF_EXP(z);
    case Act::Softplus: return T(1) / (T(1) + RF_EXP(-z));
    case Act::Swish: { T s = T(1) / (T(1) + RF_EXP(-z)); return s * (T(1) + z * (T(1) - s)); }
  }
  return T(1);
}

// Clamping passes the gradient only where the clamped value is strictly inside the range,
// judged on the unclamped output (so both impls agree on which elements were clipped).
template <typename T>
RF_HD bool clamp_passes(T unclamped, T clamp) {
  return clamp < T(0) || (unclamped > -clamp && unclamped < clamp);
}

}  // namespace retina_fast
