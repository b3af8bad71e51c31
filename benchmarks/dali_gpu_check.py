"""GPU check of the DALI loader: 1536 x 2048 JPEG -> GPU decode + crop + resize to 1024, images/s.

    python benchmarks/dali_gpu_check.py [--n 64] [--repeat 8] [--batch-size 64] [--cpu-batch-size 8]
                                        [--workers N] [--epochs 2] [--cpu-only] [--skip-cpu]

Makes `--n` camera-sized fundus frames (skimage's retina photo resized to 1536 x 1536 on a black
1536 x 2048 frame, each shifted and scaled in brightness, Pillow JPEG quality 90) in a temp dataset
whose dataset.json lists each file `--repeat` times (an epoch of n * repeat decodes), then times
`make_loader(backend='dali', device='cuda')`: ``fn.decoders.image(device='mixed')`` -> slice
(crop_scale 0.9-1.0) -> resize to 1024 (linear, antialiased) -> xflip -> normalise, batches
delivered as CUDA tensors. Beside it, the CPU paths on the same files with `--workers` workers:
the torch backend (Pillow decode + crop + resize in worker processes) and DALI's CPU pipeline.
Each row: one warm-up epoch, then the best of `--epochs`. Target: >= 1000 images/s on one H100.

It also compares the first 8 samples of the DALI GPU path with the torch (Pillow) path: mean and
max |difference| in grey levels (nvJPEG and libjpeg-turbo differ slightly); the exit status is 1
when the mean exceeds 1 grey level, 0 otherwise (a missed speed target is reported, not failed).

Without a CUDA GPU or without DALI it prints why and exits 0; `--cpu-only` runs the CPU rows and
the DALI-CPU-vs-torch comparison instead (what this script can prove on a machine without a GPU).

Carrying onto the GPU machine (no network there, DALI not preinstalled): bring the
nvidia-dali-cuda130==2.4.0 wheel built for its Python (3.12, manylinux x86_64) and install it from
the local file; pydicom's wheel too, because importing `retina_fast.data` imports the ingest
modules (which need pydicom) before `retina_fast.data.loaders`.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loader_throughput import images_per_s  # noqa: E402  (one timing loop for both scripts)

FRAME = (1536, 2048)
RESOLUTION = 1024
TARGET = 1000.0


def make_frames(folder, n, repeat, seed=0):
    """n JPEG frames of 1536 x 2048 and a dataset.json listing each `repeat` times; returns folder."""
    import skimage.data
    from PIL import Image

    from retina_fast.data.dataset import write_dataset_json

    os.makedirs(folder, exist_ok=True)
    h, w = FRAME
    disc = np.asarray(Image.fromarray(skimage.data.retina()).resize((h, h), Image.BILINEAR)).astype(np.float32)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        frame = np.zeros((h, w, 3), np.uint8)
        left = (w - h) // 2 + int(rng.integers(-40, 41))
        frame[:, left:left + h] = np.clip(disc * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
        name = f"frame{i:05d}.jpg"
        Image.fromarray(frame).save(os.path.join(folder, name), quality=90)
        names.append(name)
    write_dataset_json(folder, [(name, k % 2) for k in range(repeat) for name in names])
    return folder


def agreement(folder, device, workers):
    """Mean and max |DALI - torch| (grey levels) over the first 8 samples, same draws."""
    from retina_fast.data.loaders import make_loader

    kw = dict(batch_size=8, resolution=RESOLUTION, crop_scale=(0.9, 1.0), xflip=True, seed=1)
    ref = next(iter(make_loader(folder, backend="torch", **kw)))[0]
    got = next(iter(make_loader(folder, backend="dali", device=device, num_workers=workers, **kw)))[0]
    diff = (got.cpu() - ref).abs() * 127.5
    return float(diff.mean()), float(diff.max())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64, help="distinct JPEG frames")
    p.add_argument("--repeat", type=int, default=8, help="times each frame is listed per epoch")
    p.add_argument("--batch-size", type=int, default=64, help="batch of the DALI rows")
    p.add_argument("--cpu-batch-size", type=int, default=8,
                   help="batch of the torch row (each worker builds whole batches: keep all busy)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="DALI CPU threads / torch worker processes")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per row (after 1 warm-up)")
    p.add_argument("--cpu-only", action="store_true", help="no GPU row: CPU paths and the DALI-CPU comparison")
    p.add_argument("--skip-cpu", action="store_true", help="GPU row and comparison only")
    p.add_argument("--data", default=None, help="folder for the frames (default: a new temp folder)")
    a = p.parse_args()

    try:
        import nvidia.dali  # noqa: F401
    except ImportError as e:
        print(f"DALI is not installed ({e}): carry the nvidia-dali-cuda130 wheel in; nothing measured")
        return 0
    import torch

    gpu = torch.cuda.is_available() and not a.cpu_only
    if not gpu and not a.cpu_only:
        print("no CUDA GPU visible to torch: nothing measured (run with --cpu-only for the CPU paths)")
        return 0
    with tempfile.TemporaryDirectory(prefix="dali_gpu_check_") as tmp:
        return run(a, make_frames(a.data or tmp, a.n, a.repeat), gpu)


def run(a, folder, gpu):
    import nvidia.dali
    import torch

    from retina_fast.data.loaders import make_loader

    sizes = [os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".jpg")]
    print(f"# {torch.cuda.get_device_name() if gpu else 'no GPU (--cpu-only)'}; DALI {nvidia.dali.__version__}; "
          f"torch {torch.__version__}; {os.cpu_count()} CPUs; {a.n} JPEGs {FRAME[0]}x{FRAME[1]} q90 "
          f"(mean {np.mean(sizes) / 1024:.0f} KiB) x {a.repeat} = {a.n * a.repeat} samples/epoch; "
          f"-> {RESOLUTION}, crop_scale (0.9, 1.0) + xflip; best of {a.epochs} epochs after 1 warm-up")
    print(f"{'path':<36} {'workers':>7} {'batch':>5} {'images/s':>9}")
    kw = dict(resolution=RESOLUTION, crop_scale=(0.9, 1.0), xflip=True)
    rates = {}
    rows = []
    if gpu:
        rows.append(("dali mixed (GPU decode), cuda out", "dali", "cuda"))
    if not a.skip_cpu:
        rows += [("dali cpu pipeline", "dali", "cpu"), ("torch backend (Pillow) workers", "torch", "cpu")]
    for label, backend, device in rows:
        batch = a.batch_size if backend == "dali" else a.cpu_batch_size
        loader = make_loader(folder, backend=backend, device=device, num_workers=a.workers, batch_size=batch, **kw)
        rates[label] = images_per_s(loader, a.epochs, device)
        print(f"{label:<36} {a.workers:>7} {batch:>5} {rates[label]:>9.1f}", flush=True)
        del loader
    status = 0
    device = "cuda" if gpu else "cpu"
    mean, worst = agreement(folder, device, a.workers)
    print(f"dali ({device}) vs torch, first 8 samples: mean |diff| {mean:.3f} grey levels, max {worst:.2f}")
    if mean > 1.0:
        print("FAIL: the DALI path differs from the torch path by more than 1 grey level on average")
        status = 1
    if gpu:
        rate = rates[rows[0][0]]
        cpu = rates.get("torch backend (Pillow) workers")
        if cpu:
            print(f"GPU / CPU (torch workers) speed-up: {rate / cpu:.1f}x")
        print(f"target >= {TARGET:.0f} images/s: {'met' if rate >= TARGET else 'NOT met'} ({rate:.0f})")
    return status


if __name__ == "__main__":
    sys.exit(main())
