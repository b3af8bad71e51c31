#!/usr/bin/env bash
# Configures (first run only), builds and tests the CMake build of csrc/ in build/cmake.
# PYTHON picks the interpreter whose torch to build against (default: .venv/bin/python).
# Extra arguments go to the first configure, e.g. -DRETINA_FAST_WITH_CUDA=ON; to change them
# later, delete build/cmake.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON="$(command -v "${PYTHON:-.venv/bin/python}")"
[[ "$PYTHON" == /* ]] || PYTHON="$PWD/$PYTHON"  # CMake needs it absolute; not realpath: keep the venv
BUILD=build/cmake

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  prefix="$("$PYTHON" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')"
  generator=()
  if command -v ninja >/dev/null; then generator=(-G Ninja); fi
  cmake -S . -B "$BUILD" "${generator[@]}" \
    -DCMAKE_PREFIX_PATH="$prefix" -DPython3_EXECUTABLE="$PYTHON" "$@"
fi
cmake --build "$BUILD" -j2
ctest --test-dir "$BUILD" --output-on-failure
