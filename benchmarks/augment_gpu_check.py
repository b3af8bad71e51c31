"""GPU check of the ADA augmentation pipeline (retina_fast.gan.augment); prints a small report.

    python benchmarks/augment_gpu_check.py [--sizes 256 1024] [--repeats 10]

1. CUDA vs CPU agreement ('bgc' at a fixed debug percentile, so no random draws differ).
2. R1 through the augmentation on CUDA: grad of D(aug(x)) w.r.t. x with create_graph, then
   backward (needs grid_sample's double backward on CUDA), compared with the same on CPU.
3. float16 input keeps its dtype and agrees with float32.
4. Timing, 'bgc' at p = 0.5, batch 4, forward and forward+backward: impl=None (native CUDA
   kernels when the extension is built with them, else the reference) vs impl='ref'.
Exits non-zero if a check fails.
"""
import argparse
import sys
import time

import torch

from retina_fast import ops
from retina_fast.gan.augment import AUGPIPE_SPECS, AugmentPipe


def _d(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Softplus(),
                               torch.nn.Conv2d(8, 1, 3, padding=1)).to(device)


def _r1_grads(device, x, impl):
    D = _d(device)
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], impl=impl).to(device)
    xr = x.to(device).requires_grad_()
    (g,) = torch.autograd.grad(D(pipe(xr, debug_percentile=0.3)).sum(), xr, create_graph=True)
    g.square().sum().backward()
    return g.detach().cpu(), D[0].weight.grad.cpu()


def _time(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("augment_gpu_check: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    native = ops.has_cuda_kernels()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"native CUDA kernels: {native}")
    ok = True

    x = torch.rand([4, 3, 64, 64], generator=torch.Generator().manual_seed(1)) * 2 - 1
    y_cpu = AugmentPipe(**AUGPIPE_SPECS["bgc"])(x, debug_percentile=0.3)
    y_gpu = AugmentPipe(**AUGPIPE_SPECS["bgc"]).cuda()(x.cuda(), debug_percentile=0.3).cpu()
    err = (y_gpu - y_cpu).abs().max().item()
    ok &= err < 1e-4
    print(f"[{'ok' if err < 1e-4 else 'FAIL'}] bgc CUDA vs CPU max abs diff {err:.2e}")

    g_cpu, w_cpu = _r1_grads("cpu", x, None)
    try:
        g_gpu, w_gpu = _r1_grads("cuda", x, None)
        e1 = (g_gpu - g_cpu).abs().max().item() / g_cpu.abs().max().item()
        e2 = (w_gpu - w_cpu).abs().max().item() / w_cpu.abs().max().item()
        good = e1 < 1e-3 and e2 < 1e-3
        print(f"[{'ok' if good else 'FAIL'}] R1 double backward on CUDA: rel diff vs CPU "
              f"grad_x {e1:.2e}, dR1/dW {e2:.2e}")
        ok &= good
    except RuntimeError as exc:
        ok = False
        print(f"[FAIL] R1 double backward on CUDA raised: {exc}")

    y16 = AugmentPipe(**AUGPIPE_SPECS["bgc"]).cuda()(x.cuda().half(), debug_percentile=0.3)
    e16 = (y16.float().cpu() - y_cpu).abs().max().item()
    good = y16.dtype == torch.float16 and e16 < 2e-2
    ok &= good
    print(f"[{'ok' if good else 'FAIL'}] float16 input: dtype {y16.dtype}, max abs diff vs fp32 {e16:.2e}")

    print("timing: bgc p=0.5, batch 4, median ms")
    print(f"{'size':>6} {'mode':>8} {'impl=None':>10} {'ref':>10} {'ratio':>6}")
    for size in args.sizes:
        xs = torch.rand([4, 3, size, size], device="cuda") * 2 - 1
        for mode in ("fwd", "fwd+bwd"):
            res = {}
            for impl in (None, "ref"):
                pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.5, impl=impl).cuda()

                def once():
                    torch.manual_seed(0)
                    xr = xs.detach().requires_grad_(mode == "fwd+bwd")
                    y = pipe(xr)
                    if mode == "fwd+bwd":
                        y.square().sum().backward()

                res[impl] = _time(once, args.repeats)
            print(f"{size:>6} {mode:>8} {res[None]:>10.2f} {res['ref']:>10.2f} {res['ref'] / res[None]:>6.2f}")
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
