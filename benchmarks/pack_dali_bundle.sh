#!/usr/bin/env bash
# Packs NVIDIA DALI and what it needs for the GPU machine (Python 3.12, no network) into
# .whl/dali.tar.xz.part-aa, -ab, -ac (50 MiB each) and .whl/dali.tar.xz.sha256, which
# benchmarks/device_check.sh unpacks into /tmp/site once all parts are there.
# One device call carries at most 64 MiB, so the parts travel in three calls on one warm machine
# (carry .whl/dali.tar.xz.part-aa in the first, -ab in the second, -ac and the .sha256 in the
# third; the machine goes back after 30 s idle, so issue the calls back to back).
# Pruned to what a Python 3.12 import needs: other Pythons' bindings, headers, the JPEG 2000 and
# TIFF codecs go; libnvjpeg (for GPU JPEG decoding) comes along in _dali_libs/. About 146 MB.
# Usage (here, with pip's index reachable): bash benchmarks/pack_dali_bundle.sh  (then checks it, see
# benchmarks/check_dali_bundle.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$work/w" nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 \
  nvidia-nvjpeg==13.3.2.43 astunparse==1.6.3 gast==0.7.0 optree==0.20.0 nvtx==0.2.17 makefun==1.16.0 libcst==1.9.0
site=$work/site
mkdir -p "$site/_dali_libs"
for w in "$work"/w/*.whl; do
  case $(basename "$w") in
    nvidia_nvjpeg-*) unzip -q -j "$w" 'nvidia/cu13/lib/libnvjpeg.so.13' -d "$site/_dali_libs" ;;
    *) unzip -q -o "$w" -d "$site" ;;
  esac
done
cd "$site/nvidia"
rm -rf dali/include nvimgcodec/include nvimgcodec/tools
find . -name '*.cpython-3*.so' ! -name '*cpython-312-*' -delete
rm -f nvimgcodec/extensions/lib{nvjpeg2k,nvtiff,tiff}_ext*
cd - >/dev/null
mkdir -p .whl
rm -f .whl/dali.tar.xz.part-* .whl/dali.tar.xz.sha256
tar -C "$site" -cf - . | xz -T0 -9 > "$work/dali.tar.xz"
split -b 50M "$work/dali.tar.xz" .whl/dali.tar.xz.part-
(cd "$work" && sha256sum dali.tar.xz) > .whl/dali.tar.xz.sha256
ls -l .whl/dali.tar.xz.*
# The bundle must import with only what the GPU machine's Python has: checked here on a bare
# Python 3.12 when one is found (exit 2: none found, not checked).
bash benchmarks/check_dali_bundle.sh || [ $? -eq 2 ]
