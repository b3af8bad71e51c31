#!/usr/bin/env bash
# GPU device check, self-contained for a CUDA machine with no network and its own torch:
# builds the extension in place, runs the CUDA-marked tests, prints the ratio tables (fp32, fp16).
# Budget: under 8 minutes on one H100. Usage: bash benchmarks/device_check.sh [python]
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "== build"
time MAX_JOBS=8 $PY setup.py -q build_ext --inplace 2>&1 | grep -v -i warning | tail -20
$PY -c "import retina_fast.ops as o; assert o.has_cuda_kernels(), 'no CUDA kernels'; print('CUDA kernels registered')" || exit 1
echo "== CUDA tests"
timeout 240 $PY -m pytest tests -q -m cuda -p no:cacheprovider -x 2>&1 | tail -15
echo "== ratio table fp32"
timeout 150 $PY benchmarks/ratio_table.py --device cuda --dtype float32 --repeats 5 --warmup 2 2>/dev/null
echo "== ratio table fp16"
timeout 150 $PY benchmarks/ratio_table.py --device cuda --dtype float16 --repeats 5 --warmup 2 2>/dev/null
