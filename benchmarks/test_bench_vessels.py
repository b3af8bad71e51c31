"""pytest-benchmark suite of the vessel metrics on 1024 x 1024 phantom image + vessel-mask pairs.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python -m pytest benchmarks/test_bench_vessels.py --benchmark-only
    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/test_bench_vessels.py      # side-by-side table

- skeletonize: ours vs scikit-image's on the same masks in the same run (bar: >= 4x, identical output).
- full metrics (skeleton + amount + zone-B SNR, `measure_image`) per image on one core, and the
  throughput of a 2-process pool (bar: >= 30 images/s on 2 cores).
Segmentation is not included (the VSEG helper benchmarks it separately).
"""
import multiprocessing as mp
import os
import sys
import time

import numpy as np
import pytest

from retina_fast.data.phantom import make_fundus
from retina_fast.vessels import measure_image, skeletonize

N_PAIRS = 6
_PAIRS = []  # filled once per process; forked pool workers inherit it instead of unpickling 4 MB per image


def pairs():
    if not _PAIRS:
        for seed in range(N_PAIRS):
            img, t = make_fundus(100 + seed, size=(1024, 1024))
            _PAIRS.append((img, t.vessel_mask, t.disc_center, t.disc_radius))
    return _PAIRS


def _measure(i):
    img, mask, center, radius = _PAIRS[i % len(_PAIRS)]
    return measure_image(img, mask, center, radius)["snr"]


def pool_throughput(n_images=48, workers=2):
    """Images/s of `measure_image` over `n_images` pairs in a fork pool of `workers` processes."""
    pairs()
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        pool.map(_measure, range(2 * workers))  # warm-up: numba cache load in every worker
        t0 = time.perf_counter()
        pool.map(_measure, range(n_images), chunksize=4)
        return n_images / (time.perf_counter() - t0)


@pytest.fixture(scope="module")
def data():
    return pairs()


@pytest.mark.parametrize("impl", ["retina_fast", "skimage"])
def test_skeletonize_1024(benchmark, data, impl):
    from skimage.morphology import skeletonize as sk
    fn = skeletonize if impl == "retina_fast" else sk
    masks = [p[1] for p in data]
    benchmark.group = f"skeletonize 1024x1024 phantom masks ({len(masks)} per round)"
    out = benchmark.pedantic(lambda: [fn(m) for m in masks], rounds=5, warmup_rounds=1)
    for m, s in zip(masks, out):
        assert np.array_equal(s, sk(m))
    benchmark.extra_info["masks_per_round"] = len(masks)


def test_full_metrics_per_image_one_core(benchmark, data):
    benchmark.group = f"full vessel metrics (skeleton + amount + zone-B SNR), 1024x1024 ({len(data)} per round)"
    snrs = benchmark.pedantic(lambda: [measure_image(*p)["snr"] for p in data], rounds=5, warmup_rounds=1)
    assert np.isfinite(snrs).all()
    benchmark.extra_info["images_per_round"] = len(data)


def test_full_metrics_two_worker_throughput(benchmark, data):
    benchmark.group = "full vessel metrics, 2-process pool (48 images per round)"
    rate = benchmark.pedantic(pool_throughput, kwargs={"n_images": 48, "workers": 2}, rounds=3)
    benchmark.extra_info["images_per_s"] = rate


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    from skimage.morphology import skeletonize as sk
    data = pairs()
    masks = [p[1] for p in data]
    for m in masks:
        assert np.array_equal(skeletonize(m), sk(m))
    reps = 15
    t_ours = _best(lambda: [skeletonize(m) for m in masks], reps) / len(masks)
    t_ref = _best(lambda: [sk(m) for m in masks], reps) / len(masks)
    t_full = _best(lambda: [measure_image(*p) for p in data], 5) / len(data)
    rate = max(pool_throughput(48, 2) for _ in range(3))
    print(f"machine: {os.cpu_count()} CPUs (shared with other jobs: timings are noisy); best of {reps}")
    print("| case (1024 x 1024 phantom) | retina_fast | scikit-image | ratio |\n|---|---:|---:|---:|")
    print(f"| skeletonize, ms per mask (identical output) | {t_ours * 1e3:.2f} | {t_ref * 1e3:.2f} "
          f"| {t_ref / t_ours:.1f}x |")
    print(f"| full metrics, ms per image, 1 core | {t_full * 1e3:.1f} | | |")
    print(f"| full metrics, images/s, 2-process pool | {rate:.0f} | | bar 30 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
