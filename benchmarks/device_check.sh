#!/usr/bin/env bash
# GPU device check, self-contained for a CUDA machine with no network and its own torch:
# builds the extension in place, runs the CUDA-marked tests, prints the classifier's training
# throughput (the compiled ResNet152 on synthetic tensors and through DALI), the ops' ratio tables
# (fp32, fp16) and the DALI decode check. That default set is sized to finish in under 8 minutes on
# one H100, by estimate: build 35-38 s (measured); classify about 4.5 min (the compiled ResNet152
# run on synthetic tensors alone took about 2.7 min, most of it compiling; the smoke checks and the
# DALI rows have not run on a GPU yet); tests, ratio and dali about 2 min (build + tests + ratio
# took 99 s in 2026-11, before the GAN's CUDA tests joined).
# More sections, by name: gan (StyleGAN2 training step at paper1024, about 2.5 min), classify-eager
# (ResNet152 without compiling at batch 10, 32, 64, about 2 min), formulations, augment, segment.
# Sections run in the order below; each prints the clock. Pick them with SECTIONS, e.g.
#   SECTIONS="gan classify" bash benchmarks/device_check.sh      (SECTIONS=none: build only)
# Usage: bash benchmarks/device_check.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
# Packages the GPU machine lacks travel in .whl/ (ignored by git; carried files stay on a warm
# machine between calls). pydicom and segmentation-models-pytorch as wheels (see the device README:
# `pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl pydicom==3.0.2`);
# a wheel split into X.whl.part-aa, -ab, ... is joined first. DALI with its needs is one pruned
# site folder in three 50 MiB parts made by benchmarks/pack_dali_bundle.sh (carry one part per call,
# back to back); it is unpacked into /tmp/site once its .sha256 matches the parts here.
if [ -d .whl ]; then
  for first in .whl/*.whl.part-aa; do
    [ -e "$first" ] && cat "${first%-aa}"-* > "${first%.part-aa}" && rm -f "${first%-aa}"-*
  done
  if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  fi
  for sum in .whl/*.tar.xz.sha256; do
    [ -e "$sum" ] || continue
    b=${sum%.sha256}
    if [ "$(cat "$b".part-* 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$sum")" ]; then
      mkdir -p /tmp/site && cat "$b".part-* | xz -d | tar -x -C /tmp/site && rm -f "$b".part-* "$sum" \
        && echo "unpacked $b into /tmp/site"
      # torch's own nvidia/ may be a regular package, which would hide this one: merge the two
      [ -d /tmp/site/nvidia ] && [ ! -e /tmp/site/nvidia/__init__.py ] \
        && echo "__path__ = __import__('pkgutil').extend_path(__path__, __name__)" > /tmp/site/nvidia/__init__.py
    else
      echo "$b: not all parts here yet"
    fi
  done
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
[ -d /tmp/site/_dali_libs ] && export LD_LIBRARY_PATH=/tmp/site/_dali_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The tree is used in place (no install): the repository root must be importable by the scripts.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} NUMBA_CACHE_DIR=/tmp/numba
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
SECTIONS=${SECTIONS:-"classify tests ratio dali"}
T0=$SECONDS
section() {  # section NAME TITLE: true when NAME is selected; prints the title and the clock
  case " $SECTIONS " in *" $1 "*) echo "== $2  [t=$((SECONDS - T0)) s]"; return 0 ;; *) return 1 ;; esac
}

echo "== build"
time MAX_JOBS=8 $PY setup.py -q build_ext --inplace 2>&1 | grep -v -i warning | tail -20
$PY -c "import retina_fast.ops as o; assert o.has_cuda_kernels(), 'no CUDA kernels'; print('CUDA kernels registered')" || exit 1

if section gan "StyleGAN2-ADA training step, paper1024 at batch 4 (target on one H100: <= 40 s/kimg)"; then
  timeout 150 $PY benchmarks/gan_step.py --device cuda --preset paper1024 --batch 4 --steps 20 --warmup 5 --repeats 1
fi
if section classify "classifier: CUDA path smoke (CUDA graphs), ResNet152 512 x 512 training images/s (target >= 450 with DALI)"; then
  timeout 120 $PY benchmarks/classify_gpu_smoke.py --compile reduce-overhead
  # one compiled model (about 2.5 min to compile on the device) times synthetic tensors, then the DALI loader.
  # 1536 PNGs make a 24-batch epoch, so the 30 timed steps cross one epoch boundary (DALI's reset and
  # refill), as training on a folder of that size would; making them takes about 15 s.
  backends=synthetic-tensor
  if $PY -c "import nvidia.dali" 2>/dev/null; then
    timeout 90 $PY benchmarks/classify_gpu_smoke.py --backend dali --compile reduce-overhead
    backends="synthetic-tensor dali"
  else
    echo "DALI is not installed here: carry it in .whl/ (see the top of this script)"
  fi
  timeout 330 $PY benchmarks/classify_throughput.py --device cuda --amp --channels-last --compile reduce-overhead \
    --batch ${CLASSIFY_BATCH:-64} --backend $backends --workers 12 --images 1536 --steps 30 --warmup 4
fi
if section classify-eager "classifier without compiling: ResNet152 512 x 512 training images/s at batch 10, 32, 64"; then
  timeout 120 $PY benchmarks/classify_throughput.py --device cuda --amp --channels-last --batch 10 32 64 --steps 15 --warmup 5
fi
if section tests "CUDA tests"; then
  # test_loaders' CUDA case needs DALI, checked separately below.
  timeout 200 $PY -m pytest tests/ops/test_upfirdn2d.py tests/ops/test_bias_act.py tests/ops/test_modconv.py tests/vessels/test_segment.py tests/test_transfer.py \
    tests/gan/test_networks.py tests/gan/test_augment.py -q -m cuda -p no:cacheprovider 2>&1 | tail -25
fi
if section ratio "ratio tables fp32 and fp16"; then
  for d in float32 float16; do
    timeout 100 $PY benchmarks/ratio_table.py --device cuda --dtype $d --repeats 5 --warmup 2 2>/tmp/ratio.err || tail -5 /tmp/ratio.err
  done
fi
if section formulations "modulated conv formulations (ms): what modulated_conv2d dispatches to vs grouped vs ref"; then
  for d in float32 float16; do timeout 60 $PY benchmarks/modconv_formulations.py --device cuda --dtype $d --repeats 5 --warmup 2; done
fi
if section augment "ADA augmentation on CUDA (R1 double backward through grid_sample, timings)"; then
  timeout 60 $PY benchmarks/augment_gpu_check.py
fi
if section segment "vessel segmentation (hessian, 1024 x 1024): numpy vs cupy"; then
  timeout 60 $PY -m pytest benchmarks/test_bench_segment.py -q -p no:cacheprovider --benchmark-only 2>&1 | tail -12
fi
if section dali "DALI GPU decode + crop + resize, 1536 x 2048 JPEG -> 1024 (target >= 1000 img/s)"; then
  if $PY -c "import nvidia.dali" 2>/dev/null; then
    timeout 120 $PY benchmarks/dali_gpu_check.py
  else
    echo "DALI is not installed here: carry its wheel in .whl/ (see the top of this script)"
  fi
fi
echo "== done  [t=$((SECONDS - T0)) s]"
