// The seam between the ATen side (csrc/cuda/*_launch.cpp) and the CUDA kernels (csrc/cuda/*.cu).
//
// The .cu files must not include ATen or torch headers: those cost over a minute of nvcc time per
// file. So tensors cross this seam as raw pointers plus a plain params struct, and the dtype as a
// small enum. Launch functions return nullptr on success or a static error message, which the
// .cpp side raises with TORCH_CHECK (a std::string would tie both sides to one libstdc++ ABI).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../bias_act.h"
#include "../common.h"
#include "../modulate.h"
#include "../upfirdn2d.h"

namespace retina_fast {

// Storage dtype of the tensors handed to a launch function. Kernels accumulate in float for
// kF32/kF16/kBF16 and in double for kF64 (at::opmath_type), so any accumulation-type operand
// (filter, bias, styles) is float unless the storage is kF64.
enum DtypeCode : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

// y[planes, out_h, out_w] from x[planes, in_h, in_w] (both contiguous); fc is the prepared
// correlation filter [fh, fw], contiguous, in the accumulation type, on the same device.
const char* upfirdn2d_cuda_launch(const Upfirdn2dParams& p, const void* x, const void* fc, void* y,
                                  DtypeCode dtype, cudaStream_t stream);

// y and x share one dense layout (processed in memory order); b is null or bias_len values in
// the accumulation type.
const char* bias_act_cuda_launch(const BiasActParams& p, const void* x, const void* b, void* y,
                                 DtypeCode dtype, cudaStream_t stream);
const char* bias_act_grad_cuda_launch(const BiasActParams& p, const void* dy, const void* x,
                                      const void* b, void* dx, DtypeCode dtype,
                                      cudaStream_t stream);

// x and y contiguous NCHW; s is [N*C] in the accumulation type; noise is null or points at the
// element (0, 0, 0, 0) of a tensor addressed through the element strides in p.
const char* modulate_cuda_launch(const ModulateParams& p, const void* x, const void* s,
                                 const void* noise, void* y, DtypeCode dtype, cudaStream_t stream);

// dy, x and dx contiguous NCHW; s is [N*C] in the accumulation type (read when p.need_dx); ds is
// [N*C] doubles that the caller zeroed (added to when p.need_ds). Unneeded pointers may be null.
const char* modulate_backward_cuda_launch(const ModulateBackwardParams& p, const void* dy,
                                          const void* x, const void* s, void* dx, double* ds,
                                          DtypeCode dtype, cudaStream_t stream);

}  // namespace retina_fast

#if defined(__CUDACC__)
// Device-side helpers shared by the .cu files. Hidden from the ATen side, which never needs them
// and should not see cuda_fp16.h's types next to c10::Half.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// `#pragma unroll` for loops in __host__ __device__ code, where the host pass would warn about it.
#if defined(__CUDA_ARCH__)
#define RF_UNROLL _Pragma("unroll")
#else
#define RF_UNROLL
#endif

namespace retina_fast {
namespace cuda_detail {

// Explicit conversions: torch builds with __CUDA_NO_HALF_CONVERSIONS__ and friends, so __half
// and __nv_bfloat16 have no implicit casts. Round-to-nearest-even matches c10::Half/BFloat16.
RF_HD float to_acc(float v) { return v; }
RF_HD double to_acc(double v) { return v; }
RF_HD float to_acc(__half v) { return __half2float(v); }
RF_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

RF_HD void store(float* p, float v) { *p = v; }
RF_HD void store(double* p, double v) { *p = v; }
RF_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
RF_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// A product that nvcc may not fuse with a following add. The CPU kernels (built without FMA)
// round the product before adding it, so keeping that rounding makes CUDA and CPU results agree
// bit for bit where the arithmetic is only multiplies and adds (upfirdn2d, modulate).
RF_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
RF_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Division of 32-bit unsigned numerators below 2^31 by a divisor fixed at launch, as a
// multiply-high, add and shift (the method of ATen's IntDivider). Elementwise kernels need an
// index division per element, and a hardware-less integer divide would cost more than the memory
// traffic it serves. Valid for 1 <= divisor <= INT32_MAX and n <= INT32_MAX.
struct FastDiv {
  uint32_t divisor, magic, shift;

  FastDiv() = default;
  explicit FastDiv(uint32_t d) : divisor(d), magic(1), shift(0) {
    while (shift < 32 && (uint64_t(1) << shift) < d) ++shift;
    magic = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  RF_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(n, magic);
#else
    const uint32_t t = uint32_t((uint64_t(n) * magic) >> 32);
#endif
    return (t + n) >> shift;
  }
};

// Turns a launch's sticky or immediate error into the message the .cpp side raises.
inline const char* launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace cuda_detail
}  // namespace retina_fast
#endif  // __CUDACC__
