"""Loader throughput table: images/s of `make_loader`'s backends on a folder of 1024 x 1024 PNGs.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/loader_throughput.py \\
        [--n 64] [--size 1024] [--resolutions 1024 512] [--workers 2] [--batch-size 8] \\
        [--repeats 2] [--device cpu|cuda] [--data DIR]

The PNGs are crops of `skimage.data.retina()` resized to --size and written like a prepared
dataset (`retina_fast.data.dataset.write_png`); they are kept in --data (default: a folder under
the system temp dir) and reused by later runs. Every loader runs with crop_scale=(0.9, 1.0) and
xflip, so the measured work is decode + crop + resize + flip + normalise. Each row: one warm-up
epoch (worker start-up, pipeline build), then the best of --repeats epochs. Rows run one after
the other in one process, so their ratios are meaningful; absolute numbers move with machine load.

On CPU the rows are torch with 0 and --workers worker processes and DALI's CPU pipeline with
--workers threads. With --device cuda: torch delivering to the GPU, and DALI decoding on the GPU
(``device='mixed'``; for PNG, nvImageCodec decodes on the CPU anyway, JPEG is GPU-decoded: see
benchmarks/dali_gpu_check.py for the JPEG measurement).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_png_folder(folder, n, size, seed=0, jobs=1):
    """Folder of `n` distinct size x size PNGs (reused when already complete); returns the folder.

    Image k is a random square crop (side 1200-1411 px) of skimage's retina photo resized to
    `size`; `jobs` threads crop, resize, encode and write (Pillow's resize and zlib release the GIL).
    """
    from concurrent.futures import ThreadPoolExecutor

    import skimage.data
    from PIL import Image

    from retina_fast.data.dataset import write_png

    os.makedirs(folder, exist_ok=True)
    names = [f"img{i:05d}.png" for i in range(n)]
    if all(os.path.exists(os.path.join(folder, f)) for f in names):
        return folder
    ret = skimage.data.retina()
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        side = int(rng.integers(1200, 1412))
        boxes.append((side, *rng.integers(0, 1411 - side + 1, 2)))

    def write(k):
        side, r, c = boxes[k]
        crop = Image.fromarray(ret[r:r + side, c:c + side]).resize((size, size), Image.BILINEAR)
        write_png(os.path.join(folder, names[k]), np.asarray(crop))

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(write, range(n)))
    return folder


def images_per_s(loader, repeats, device):
    """Best images/s over `repeats` epochs after one warm-up epoch."""
    import torch

    def epoch():
        n = 0
        for images, _ in loader:
            n += images.shape[0]
        if device == "cuda":
            torch.cuda.synchronize()
        return n

    epoch()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        n = epoch()
        best = max(best, n / (time.perf_counter() - t))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="number of PNGs")
    p.add_argument("--size", type=int, default=1024, help="PNG side, pixels")
    p.add_argument("--resolutions", type=int, nargs="+", default=[1024, 512])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--data", default=None, help="folder for the PNGs (created and reused)")
    a = p.parse_args()

    import torch

    from retina_fast.data.loaders import make_loader

    if a.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: nothing to measure with --device cuda")
        return 0
    folder = a.data or os.path.join(tempfile.gettempdir(), f"retina_fast_loader_bench_{a.n}x{a.size}")
    make_png_folder(folder, a.n, a.size, jobs=a.workers)
    try:
        import nvidia.dali  # noqa: F401
        have_dali = True
    except ImportError:
        have_dali = False
    if a.device == "cpu":
        configs = [("torch", 0), ("torch", a.workers), ("dali", a.workers)]
    else:
        configs = [("torch", a.workers), ("dali", a.workers)]
    gpu = torch.cuda.get_device_name() if a.device == "cuda" else "none"
    print(f"# {a.n} PNGs {a.size}x{a.size} in {folder}; batch {a.batch_size}; crop_scale (0.9, 1.0) + xflip; "
          f"device {a.device} (GPU: {gpu}); {os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}; "
          f"best of {a.repeats} epochs after 1 warm-up")
    print(f"{'backend':<8} {'workers':>7} {'resolution':>10} {'images/s':>9}")
    for res in a.resolutions:
        for backend, workers in configs:
            if backend == "dali" and not have_dali:
                print(f"{backend:<8} {workers:>7} {res:>10} {'(no DALI)':>9}")
                continue
            loader = make_loader(folder, backend=backend, batch_size=a.batch_size, resolution=res,
                                 crop_scale=(0.9, 1.0), xflip=True, num_workers=workers, device=a.device)
            rate = images_per_s(loader, a.repeats, a.device)
            print(f"{backend:<8} {workers:>7} {res:>10} {rate:>9.1f}", flush=True)
            del loader
    return 0


if __name__ == "__main__":
    sys.exit(main())
