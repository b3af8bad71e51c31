"""Training throughput of the classifier (images/s): ResNet152 at 512 x 512 by default.

    python benchmarks/classify_throughput.py --device cuda --amp --channels-last --backend synthetic-tensor \\
        --batch 32 --steps 30
    python benchmarks/classify_throughput.py --device cuda --amp --channels-last --backend dali --batch 32 --steps 30
    python benchmarks/classify_throughput.py --device cpu --batch 2 --steps 3 --threads 2
    python benchmarks/classify_throughput.py --device cuda --compare     # fp32 vs AMP, NCHW vs channels_last

Each timed step is `retina_fast.classify.train.train_step`: the paper's augmentation on the batch
tensor (flips, shift, zoom, rotation via affine_grid/grid_sample), forward, cross-entropy,
backward, Adam (fused on CUDA). Backends:

- 'synthetic-tensor': one random batch kept on the device (the model's own speed, no input cost);
- 'torch' / 'dali': `make_loader` over a folder of 1024 x 1024 phantom PNGs (made once in the temp
  folder), resized to --size; DALI decodes on the GPU when --device is cuda.

Warm-up steps (cuDNN autotuning with --benchmark-cudnn, the default on CUDA) are not timed; then
--steps steps are timed with a device sync at the end. Target on one H100: >= 450 images/s.
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def _batches(args, device):
    import torch
    if args.backend == "synthetic-tensor":
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
        y = torch.randint(0, 2, (args.batch,), generator=g).to(device)
        while True:
            yield x, y
    from loader_throughput import make_png_folder

    from retina_fast.data.loaders import make_loader
    n = max(args.images, args.batch)
    folder = make_png_folder(os.path.join(tempfile.gettempdir(), f"retina_fast_classify_bench_{n}x1024"), n, 1024)
    loader = make_loader(folder, backend=args.backend, batch_size=args.batch, resolution=args.size, shuffle=True,
                         drop_last=True, num_workers=args.workers, device=str(device))
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for x, _ in loader:
            yield x, torch.randint(0, 2, (x.shape[0],), device=x.device)
        epoch += 1


def measure(args, *, amp, channels_last, compile_model=False):
    """(images/s, ms/step, peak GPU memory GiB or nan) of `args.steps` timed training steps."""
    import torch

    from retina_fast.classify.model import make_classifier
    from retina_fast.classify.train import train_step

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_classifier(args.arch, 2, device=device, channels_last=channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    step_model = torch.compile(model) if compile_model else model
    # train_step reads the device from the parameters, works on the compiled wrapper too
    batches = _batches(args, device)
    kw = dict(amp=amp, amp_dtype="bfloat16", channels_last=channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup):
        x, y = next(batches)
        train_step(step_model, opt, x, y, augment=dict(seed=0, epoch=0, step=i), **kw)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    n = 0
    t0 = time.perf_counter()
    for i in range(args.steps):
        x, y = next(batches)
        loss = train_step(step_model, opt, x, y, augment=dict(seed=0, epoch=1, step=i), **kw)
        n += x.shape[0]
    float(loss)  # sync
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return n / dt, 1000 * dt / args.steps, mem


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet152")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--backend", default="synthetic-tensor", choices=["synthetic-tensor", "torch", "dali"])
    p.add_argument("--workers", type=int, default=8, help="loader workers (torch processes / DALI threads)")
    p.add_argument("--images", type=int, default=256, help="PNG files in the loader folder")
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
    print(f"# classifier training throughput: {args.arch} {args.size}x{args.size}, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; {name}; torch {torch.__version__}")
    configs = [(args.amp, args.channels_last, args.compile)]
    if args.compare:
        configs = [(False, False, False), (True, False, False), (True, True, False)] + (
            [(True, True, True)] if args.compile else [])
    print("| backend | AMP (bf16) | channels_last | compile | images/s | ms/step | peak GPU GiB |")
    print("|---|---|---|---|---:|---:|---:|")
    for amp, cl, comp in configs:
        ips, ms, mem = measure(args, amp=amp, channels_last=cl, compile_model=comp)
        print(f"| {args.backend} | {amp} | {cl} | {comp} | {ips:.1f} | {ms:.1f} | {mem:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
