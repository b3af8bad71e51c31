// Output allocation for the CPU kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>

#include <cstdint>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace retina_fast {

// Marks a fresh tensor's buffer for transparent huge pages on large buffers. A fresh multi-GB output is
// otherwise paid for in 4 KiB page faults on first touch (~0.35 s per 2 GB here, more than the
// kernel itself); with the hint the kernel faults 2 MiB pages. Advisory only: harmless on reused
// or non-Linux memory. torch's own THP_MEM_ALLOC_ENABLE=1 does the same for every allocation.
inline at::Tensor advise_hugepages(at::Tensor t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t start = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (p + t.nbytes()) & ~(kHuge - 1);
  if (t.nbytes() >= 4 * kHuge && end > start)
    madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
#endif
  return t;
}

inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return advise_hugepages(at::empty(sizes, options));
}

// Same, with x's sizes and strides (x dense, e.g. contiguous or channels_last).
inline at::Tensor empty_large_like(const at::Tensor& x) {
  return advise_hugepages(at::empty_strided(x.sizes(), x.strides(), x.options()));
}

}  // namespace retina_fast
