"""pytest-benchmark: ingest stages on a 1536 x 2048 JPEG-encapsulated fundus DICOM -> 1024 PNG.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python -m pytest benchmarks/test_bench_ingest.py --benchmark-only

The bar is >= 25 images/s end to end on the 2-core machine, i.e. <= ~80 ms per image per core.
`benchmarks/ingest_throughput.py` prints the end-to-end table and the per-stage breakdown.
"""
import io
import os
import shutil

import numpy as np
import pytest

from retina_fast.data import prepare
from retina_fast.data.cohort import make_cohort
from retina_fast.data.dataset import encode_png
from retina_fast.data.dicom import read_dicom_pil, write_dicom
from retina_fast.data.disc import detect_disc
from retina_fast.data.fov import crop_to_fov_pil, find_fov
from retina_fast.data.phantom import make_fundus
from retina_fast.data.prepare import PrepareSettings, process_image


@pytest.fixture(scope="module")
def dicom_path(tmp_path_factory):
    image, _ = make_fundus(0)
    path = tmp_path_factory.mktemp("bench") / "frame.dcm"
    write_dicom(path, image, patient_name="Bench^Mark", patient_id="B1", birth_date="19600101", sex="F",
                age=60, study_date="20200101", institution="Bench", transfer_syntax="jpeg")
    return path


@pytest.fixture(scope="module")
def decoded(dicom_path):
    return read_dicom_pil(dicom_path)[0]


def test_decode_jpeg_dicom(benchmark, dicom_path):
    benchmark.group = "ingest stages 1536x2048 -> 1024"
    benchmark(read_dicom_pil, dicom_path)


def test_checks_fov_crop_disc(benchmark, decoded):
    benchmark.group = "ingest stages 1536x2048 -> 1024"
    reason, _, square = benchmark(process_image, decoded, PrepareSettings())
    assert reason is None and square.size == (1024, 1024)


@pytest.mark.parametrize("resample", ["box", "lanczos"])
def test_crop_resize(benchmark, decoded, resample):
    benchmark.group = "crop + resize 1024"
    fov = find_fov(decoded)
    benchmark(crop_to_fov_pil, decoded, fov, 1024, resample)


def test_disc_on_1024(benchmark, decoded):
    benchmark.group = "ingest stages 1536x2048 -> 1024"
    square, g = crop_to_fov_pil(decoded, find_fov(decoded), 1024)
    benchmark(detect_disc, square, g.output_fov(find_fov(decoded)))


@pytest.mark.parametrize("encoder", ["ours_level1", "pillow_level1"])
def test_png_encode(benchmark, decoded, encoder):
    benchmark.group = "PNG encode 1024x1024"
    square, _ = crop_to_fov_pil(decoded, find_fov(decoded), 1024)
    a = np.asarray(square)

    def pillow():
        buf = io.BytesIO()
        square.save(buf, format="PNG", compress_level=1)
        return buf

    benchmark(lambda: encode_png(a, 1)) if encoder == "ours_level1" else benchmark(pillow)


def test_prepare_end_to_end(benchmark, tmp_path_factory):
    src = tmp_path_factory.mktemp("cohort")
    n = 2 * (os.cpu_count() or 1) * 4
    make_cohort(src, n, seed=1, bad=False, second_visit_fraction=0.0)
    outs = iter(range(100))
    root = tmp_path_factory.mktemp("outs")

    def run():
        out = root / str(next(outs))
        res = prepare(src, out, salt="bench", progress=False)
        shutil.rmtree(out)
        return res

    benchmark.group = "prepare end to end"
    res = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert res.accepted == n
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.mean
