"""Training throughput of the classifier (images/s): ResNet152 at 512 x 512 by default.

    python benchmarks/classify_throughput.py --device cuda --amp --channels-last --batch 10 32 --steps 30
    python benchmarks/classify_throughput.py --device cuda --amp --channels-last --compile reduce-overhead \\
        --backend synthetic-tensor dali --batch 64 --workers 12 --images 512
    python benchmarks/classify_throughput.py --device cpu --batch 2 --steps 3 --threads 2
    python benchmarks/classify_throughput.py --device cuda --compare     # fp32 vs AMP, NCHW vs channels_last

Each timed step is `retina_fast.classify.train.train_step`: the paper's augmentation on the batch
tensor (flips, shift, zoom, rotation via affine_grid/grid_sample), forward, cross-entropy,
backward, Adam (fused on CUDA). Backends:

- 'synthetic-tensor': one random batch kept on the device (the model's own speed, no input cost);
- 'torch' / 'dali': `make_loader` over a folder of --images 1024 x 1024 PNGs (crops of
  skimage's retina photo, made once in the temp folder), resized to --size; DALI decodes on the
  GPU when --device is cuda (PNG: nvImageCodec decodes on --workers CPU threads). A first row
  times the loader alone, so a reader sees whether the input or the model sets the pace.
  Several backends are timed with one model, compiled once.

With --compile [MODE] each batch size is compiled once (``torch.compile(model, mode=MODE)``); the
warm-up steps (compilation, cuDNN autotuning with --benchmark-cudnn, the default on CUDA) are not
timed; then --steps steps are timed with a device sync at the end. Rows run one after the other in
one process, so their ratios are meaningful. Target on one H100 (AMP + channels_last + DALI):
>= 450 images/s.

Measured on one H100 (torch 2.11, 2026-11-26), synthetic tensors, AMP bf16 + channels_last:
eager 138 / 309 / 369 images/s at batch 10 / 32 / 64; --compile 386 at batch 32;
--compile reduce-overhead 530 at batch 64. Eager at batch 10 is bound by the host
launching kernels (73 ms a step for 10 images against 104 ms for 32).
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def _png_folder(args):
    from loader_throughput import make_png_folder
    return make_png_folder(os.path.join(tempfile.gettempdir(), f"retina_fast_classify_bench_{args.images}x1024"),
                           args.images, 1024, jobs=args.workers)


def _loader(args, backend, batch, device):
    from retina_fast.data.loaders import make_loader
    return make_loader(_png_folder(args), backend=backend, batch_size=batch, resolution=args.size,
                       shuffle=True, drop_last=True, num_workers=args.workers, device=str(device))


def _batches(args, backend, batch, device):
    import torch
    if backend == "synthetic-tensor":
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(batch, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
        y = torch.randint(0, 2, (batch,), generator=g).to(device)
        while True:
            yield x, y
    loader = _loader(args, backend, batch, device)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for x, _ in loader:
            yield x, torch.randint(0, 2, (x.shape[0],), device=x.device)
        epoch += 1


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_loader(args, backend, batch):
    """(images/s, ms/batch) of the loader alone: `args.steps` batches after `args.warmup`."""
    import torch
    device = torch.device(args.device)
    batches = _batches(args, backend, batch, device)
    for _ in range(args.warmup):
        next(batches)
    _sync(device)
    t0 = time.perf_counter()
    n = sum(next(batches)[0].shape[0] for _ in range(args.steps))
    _sync(device)
    dt = time.perf_counter() - t0
    return n / dt, 1000 * dt / args.steps


def measure(args, batch, backends, *, amp, channels_last, compile_model=False):
    """Yields (backend, images/s, ms/step, peak GPU memory GiB or nan) of `args.steps` timed steps.

    One model (compiled once) trains on each backend's batches in turn.
    """
    import torch

    from retina_fast.classify.model import make_classifier
    from retina_fast.classify.train import train_step

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_classifier(args.arch, 2, device=device, channels_last=channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    mode = None if args.compile is True else args.compile
    step_model = torch.compile(model, mode=mode) if compile_model else model
    # train_step reads the device from the parameters, works on the compiled wrapper too
    kw = dict(amp=amp, amp_dtype="bfloat16", channels_last=channels_last)
    for backend in backends:
        batches = _batches(args, backend, batch, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(args.warmup):
            x, y = next(batches)
            train_step(step_model, opt, x, y, augment=dict(seed=0, epoch=0, step=i), **kw)
        _sync(device)
        n = 0
        t0 = time.perf_counter()
        for i in range(args.steps):
            x, y = next(batches)
            loss = train_step(step_model, opt, x, y, augment=dict(seed=0, epoch=1, step=i), **kw)
            n += x.shape[0]
        float(loss)  # sync
        _sync(device)
        dt = time.perf_counter() - t0
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        yield backend, n / dt, 1000 * dt / args.steps, mem


def main(argv=None):
    from retina_fast.classify.train import COMPILE_MODES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet152")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, nargs="+", default=[32], help="one row per batch size")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE", choices=COMPILE_MODES,
                   help="torch.compile the model, in MODE (e.g. reduce-overhead: CUDA graphs) or torch's default")
    p.add_argument("--backend", nargs="+", default=["synthetic-tensor"], choices=["synthetic-tensor", "torch", "dali"],
                   help="input backends, each timed with the same (compiled) model")
    p.add_argument("--workers", type=int, default=8, help="loader workers (torch processes / DALI threads)")
    p.add_argument("--images", type=int, default=512, help="PNG files in the loader folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-benchmark-cudnn", action="store_true")
    p.add_argument("--compare", action="store_true",
                   help="also time fp32 NCHW, AMP NCHW and AMP channels_last side by side (same process)")
    args = p.parse_args(argv)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("no CUDA GPU: nothing to measure with --device cuda")
            return 0
        torch.backends.cudnn.benchmark = not args.no_benchmark_cudnn
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"# classifier training throughput: {args.arch} {args.size}x{args.size}, {args.steps} timed steps "
          f"after {args.warmup} warm-up; {name}; torch {torch.__version__}")
    configs = [(args.amp, args.channels_last, bool(args.compile))]
    if args.compare:
        configs = [(False, False, False), (True, False, False), (True, True, False)] + (
            [(True, True, True)] if args.compile else [])
    print("| backend | batch | AMP (bf16) | channels_last | compile | images/s | ms/step | peak GPU GiB |")
    print("|---|---:|---|---|---|---:|---:|---:|")
    for batch in args.batch:
        for backend in args.backend:
            if backend != "synthetic-tensor":
                try:
                    ips, ms = measure_loader(args, backend, batch)
                except Exception as e:  # a broken input backend must not hide the other rows
                    print(f"| {backend}, loader alone | {batch} | failed: {type(e).__name__}: {e} |", flush=True)
                    continue
                print(f"| {backend}, loader alone | {batch} | | | | {ips:.1f} | {ms:.1f} | |", flush=True)
        for amp, cl, comp in configs:
            mode = f" ({args.compile})" if comp and args.compile is not True else ""
            rows = measure(args, batch, args.backend, amp=amp, channels_last=cl, compile_model=comp)
            try:
                for backend, ips, ms, mem in rows:
                    print(f"| {backend} | {batch} | {amp} | {cl} | {comp}{mode} | {ips:.1f} | {ms:.1f} | {mem:.1f} |",
                          flush=True)
            except Exception as e:
                print(f"| failed | {batch} | {amp} | {cl} | {comp}{mode} | {type(e).__name__}: {e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
