"""pytest-benchmark: phantom frame rendering speed at the camera's 1536 x 2048.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python -m pytest benchmarks/test_bench_phantom.py --benchmark-only

The bar is >= 2 frames/s on one core (<= 0.5 s per frame), after numba warm-up. Pin one core with
`taskset -c 0` (and OMP/OPENBLAS_NUM_THREADS=1) to measure the one-core figure; on a shared machine
add `--benchmark-timer=time.process_time` to count this process's CPU time instead of wall time.
"""
import pytest

from retina_fast.data.phantom import make_fundus


@pytest.mark.parametrize("disease", [None, "erm"])
def test_make_fundus_1536x2048(benchmark, disease):
    make_fundus(0, disease=disease)            # numba warm-up / cache load
    seeds = iter(range(1, 10_000))
    benchmark.group = "make_fundus 1536x2048"
    benchmark.extra_info["frame"] = "1536x2048"
    benchmark.pedantic(lambda: make_fundus(next(seeds), disease=disease), rounds=8, warmup_rounds=1)
    benchmark.extra_info["frames_per_s"] = 1.0 / benchmark.stats.stats.mean
