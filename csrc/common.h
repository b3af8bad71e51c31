// Index helpers shared by the CPU and CUDA kernels. Plain C++ (no ATen) so .cu files stay light.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define RF_HD __host__ __device__ __forceinline__
#else
#define RF_HD inline
#endif

namespace retina_fast {

// Floor division and non-negative modulo; C++ '/' and '%' truncate towards zero, which is wrong
// for the negative offsets that padding produces.
RF_HD int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
RF_HD int64_t pos_mod(int64_t a, int64_t b) {
  int64_t r = a % b;
  return r < 0 ? r + b : r;
}
RF_HD int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

}  // namespace retina_fast
