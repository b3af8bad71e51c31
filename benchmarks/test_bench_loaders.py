"""pytest-benchmark: one epoch of `make_loader` over a folder of 1024 x 1024 PNGs, both backends.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python -m pytest benchmarks/test_bench_loaders.py \\
        --benchmark-only --benchmark-group-by=group [--quick]

32 PNGs (`loader_throughput.make_png_folder`, reused between runs), crop_scale (0.9, 1.0) + xflip,
batch 8, resized to 1024 and 512 (--quick: 256 x 256 PNGs to 256 and 128). Each backend runs with
2 workers (torch processes / DALI threads) on the CPU; on a CUDA machine DALI also runs on the GPU
(mixed decode). extra_info["images_per_s"] holds the throughput. Backends of one resolution share a
group, so their ratio is read side by side.
"""
import os
import tempfile

import pytest
import torch
from loader_throughput import make_png_folder

from retina_fast.data.loaders import make_loader

N_IMAGES, WORKERS = 32, 2
CASES = [("torch", "cpu"), ("dali", "cpu")] + ([("dali", "cuda")] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def folder(request):
    size = 256 if request.config.getoption("--quick", default=False) else 1024
    path = os.path.join(tempfile.gettempdir(), f"retina_fast_loader_bench_{N_IMAGES}x{size}")
    return make_png_folder(path, N_IMAGES, size), size


@pytest.mark.parametrize("scale", [1, 2], ids=["full", "half"])
@pytest.mark.parametrize("backend,device", CASES, ids=[f"{b}-{d}" for b, d in CASES])
def test_loader_epoch(benchmark, folder, scale, backend, device):
    path, size = folder
    res = size // scale
    loader = make_loader(path, backend=backend, batch_size=8, resolution=res, crop_scale=(0.9, 1.0),
                         xflip=True, num_workers=WORKERS, device=device)

    def epoch():
        n = 0
        for images, _ in loader:
            n += images.shape[0]
        if device == "cuda":
            torch.cuda.synchronize()
        return n

    benchmark.group = f"loader {size}px PNG -> {res}"
    n = benchmark.pedantic(epoch, rounds=2, warmup_rounds=1)
    assert n == N_IMAGES
    benchmark.extra_info["images_per_s"] = N_IMAGES / benchmark.stats.stats.min
