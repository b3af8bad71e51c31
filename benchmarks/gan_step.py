"""StyleGAN2-ADA training-step time, native ops vs impl='ref', side by side.

    python benchmarks/gan_step.py                                     # CPU: presets 32 and 256
    python benchmarks/gan_step.py --device cuda --preset paper1024 --steps 20 --warmup 5

One "step" is a full training iteration of `retina_fast.gan.training.Trainer` (G and D: Gmain,
Dmain every step, Greg every 4th and Dreg every 16th with their lazy-regularisation gains, G_ema
update, ADA pipe at p = --augment-p) on random real images, so the mean over --steps consecutive
steps includes the regularisation phases in their training proportion. Both implementations start
from the same weights and RNG seed. The two are timed alternately, --repeats times each, and the
best chunk mean is kept, so a shared machine's load hits both. sec/kimg = 1000 / images per second.
Peak memory is torch.cuda.max_memory_allocated over the timed steps (CUDA only).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from retina_fast.gan.networks import PRESETS, make_networks
from retina_fast.gan.training import Trainer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_trainer(preset, impl, batch, device, augment_p=0.0, seed=0):
    """A Trainer on `preset` with op implementation `impl` (weights fixed by `seed`)."""
    torch.manual_seed(seed)
    G, D = make_networks(preset, impl=impl, mbstd_group=min(PRESETS[preset]["mbstd_group"], batch))
    pipe = None
    if augment_p > 0:
        from retina_fast.gan.augment import AUGPIPE_SPECS, AugmentPipe
        pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"]).train().requires_grad_(False).to(device)
        pipe.p.fill_(augment_p)
    spec = PRESETS[preset]
    return Trainer(G, D, batch=batch, gamma=spec["gamma"], ema_kimg=spec["ema_kimg"], ema_rampup=spec["ema_rampup"],
                   augment_pipe=pipe, device=device)


def time_steps(trainer, real, steps, device):
    """Mean seconds per step over `steps` consecutive steps, and the peak CUDA memory (GiB)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(real)
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return dt, mem


def bench_preset(preset, device, batch=4, steps=16, warmup=2, repeats=2, impls=("native", "ref"), augment_p=0.0):
    """Rows (preset, impl, batch, s/step, sec/kimg, images/s, peak GiB) for each implementation."""
    res = PRESETS[preset]["resolution"]
    torch.manual_seed(1)
    real = (torch.rand(batch, 3, res, res) * 2 - 1).to(device)
    trainers = {impl: make_trainer(preset, impl, batch, device, augment_p) for impl in impls}
    for impl, tr in trainers.items():
        torch.manual_seed(2)
        for _ in range(warmup):
            tr.step(real)
    best = {impl: (float("inf"), None) for impl in impls}
    for _ in range(repeats):
        for impl, tr in trainers.items():
            dt, mem = time_steps(tr, real, steps, device)
            if dt < best[impl][0]:
                best[impl] = (dt, mem)
    rows = []
    for impl in impls:
        dt, mem = best[impl]
        rows.append((preset, impl, batch, dt, dt / batch * 1000, batch / dt, mem))
    return rows


def format_table(rows):
    out = ["| preset | impl | batch | s/step | sec/kimg | images/s | peak GPU mem (GiB) | ref / native |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    by = {}
    for r in rows:
        by.setdefault(r[0], {})[r[1]] = r
    for preset, d in by.items():
        for impl, r in d.items():
            ratio = ""
            if impl == "native" and "ref" in d:
                ratio = f"{d['ref'][3] / r[3]:.2f}x"
            mem = f"{r[6]:.2f}" if r[6] is not None else "-"
            out.append(f"| {preset} | {impl} | {r[2]} | {r[3]:.4f} | {r[4]:.2f} | {r[5]:.2f} | {mem} | {ratio} |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--preset", nargs="+", default=None, help="presets (default: 32 256 on CPU, paper1024 on CUDA)")
    ap.add_argument("--batch", type=int, default=4, help="images per step (default 4)")
    ap.add_argument("--steps", type=int, default=16, help="timed consecutive steps per chunk (default 16)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed chunks per implementation, best kept (default 2)")
    ap.add_argument("--impl", nargs="+", default=["native", "ref"], choices=["native", "ref"])
    ap.add_argument("--augment-p", type=float, default=0.0, help="ADA pipe probability (default 0: no pipe)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no GPU")
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
    presets = args.preset or (["paper1024"] if device.type == "cuda" else ["32", "256"])
    from retina_fast.ops import bench
    print(f"StyleGAN2-ADA training step (G+D, lazy reg in proportion, G_ema), {bench.environment_line(device.type)}; "
          f"batch {args.batch}, {args.steps} steps x best of {args.repeats} after {args.warmup} warm-up, "
          f"ADA p {args.augment_p}\n")
    rows = []
    for preset in presets:
        rows += bench_preset(preset, device, args.batch, args.steps, args.warmup, args.repeats, args.impl,
                             args.augment_p)
        print(format_table(rows), end="\n\n", flush=True) if preset != presets[-1] else None
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
