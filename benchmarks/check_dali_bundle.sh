#!/usr/bin/env bash
# Checks, here, that the DALI bundle made by benchmarks/pack_dali_bundle.sh imports and decodes with
# nothing but what the GPU machine's Python 3.12 already has (numpy, six, packaging,
# typing_extensions): it unpacks .whl/dali.tar.xz.part-* into a temporary folder, makes a bare
# Python 3.12 venv with those four packages (pip's index needed) and runs a CPU pipeline that
# decodes a PNG and a JPEG and resizes them as retina_fast's loader does. The GPU half (nvJPEG,
# mixed decoding) can only be checked on the GPU machine (benchmarks/device_check.sh).
# Usage: bash benchmarks/check_dali_bundle.sh [python3.12]   (default: pyenv's 3.12, else python3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
PY312=${1:-$(ls -d /root/.pyenv/versions/3.12*/bin/python 2>/dev/null | head -1)}
PY312=${PY312:-python3.12}
"$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' || {
  echo "needs a Python 3.12 (the GPU machine's): pass its path"; exit 2; }
compgen -G ".whl/dali.tar.xz.part-*" >/dev/null || { echo "no .whl/dali.tar.xz.part-*: run pack_dali_bundle.sh"; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ "$(cat .whl/dali.tar.xz.part-* | sha256sum | cut -d' ' -f1)" = "$(cut -d' ' -f1 .whl/dali.tar.xz.sha256)" ] \
  || { echo "the parts do not match .whl/dali.tar.xz.sha256"; exit 1; }
mkdir -p "$work/site" && cat .whl/dali.tar.xz.part-* | xz -d | tar -x -C "$work/site"
"$PY312" -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy six packaging typing_extensions pillow
PYTHONPATH="$work/site" LD_LIBRARY_PATH="$work/site/_dali_libs" "$work/venv/bin/python" - <<'PYEOF'
import io
import sys

import numpy as np
from PIL import Image

import nvidia.dali
import nvidia.dali.fn as fn
from nvidia.dali import pipeline_def, types

yy, xx = np.mgrid[0:300, 0:400]   # a smooth picture: both resize filters agree on it to a grey level or two
rgb = np.stack([xx * 255 // 399, yy * 255 // 299, 128 + 100 * np.sin(xx / 40) * np.cos(yy / 30)], -1).astype(np.uint8)
files = []
for fmt in ("PNG", "JPEG"):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    files.append(np.frombuffer(buf.getvalue(), np.uint8))


@pipeline_def(batch_size=2, num_threads=2, device_id=None)
def pipe():
    enc = fn.external_source(source=lambda: files, batch=True)
    img = fn.decoders.image(enc, device="cpu", output_type=types.RGB)
    return fn.resize(img, size=[64, 64], interp_type=types.INTERP_LINEAR, antialias=True, dtype=types.FLOAT)


p = pipe()
p.build()
out, = p.run()
shapes = [np.asarray(out[i]).shape for i in range(2)]
assert shapes == [(64, 64, 3)] * 2, shapes
png = np.asarray(out[0])
ref = np.asarray(Image.fromarray(rgb).resize((64, 64), Image.BILINEAR), np.float32)
err = float(np.abs(png - ref).mean())
print(f"DALI {nvidia.dali.__version__} on Python {sys.version.split()[0]}: PNG + JPEG decoded and resized, "
      f"shapes {shapes}, mean |PNG - Pillow| {err:.1f} grey levels")
assert err < 3, err
PYEOF
echo "bundle OK"
