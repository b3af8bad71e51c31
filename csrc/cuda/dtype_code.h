// Maps ATen's storage types to the plain DtypeCode the .cu launchers take (ATen side only).
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <type_traits>

#include "launch.h"

namespace retina_fast {

template <typename scalar_t>
constexpr DtypeCode dtype_code() {
  if constexpr (std::is_same_v<scalar_t, double>) return kF64;
  else if constexpr (std::is_same_v<scalar_t, at::Half>) return kF16;
  else if constexpr (std::is_same_v<scalar_t, at::BFloat16>) return kBF16;
  else return kF32;
}

}  // namespace retina_fast
