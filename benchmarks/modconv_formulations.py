"""Which formulation of the modulated convolution pays on this device? Prints a table.

    .venv/bin/python benchmarks/modconv_formulations.py [--device cuda] [--dtype float16] [--repeats 5]

On the issue's modconv shapes, times side by side (interleaved, best of ``repeats``):

- ``dispatch``: ``modulated_conv2d(impl='native')``, whatever formulation it picks here;
- ``grouped``: StyleGAN2-ADA's per-sample weights + one grouped convolution, on native upfirdn2d;
- ``ref``: ``modulated_conv2d(impl='ref')`` (the same algorithm on the reference upfirdn2d).

``modulated_conv2d`` picks its formulation per device and shape from tables like this one.
"""
import argparse

import torch

from retina_fast.ops import bench, modconv, setup_filter


def _variants(in_ch, out_ch, up, f, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=g).to(device)
    s = (torch.randn(4, in_ch, generator=g) + 1).to(device)

    def call(x, impl):
        wr, sr = w.requires_grad_(x.requires_grad), s.requires_grad_(x.requires_grad)
        if impl == "grouped":
            return modconv._weight_scaled(x, wr, sr, None, up, 1, 1, f, True, True, True, impl="native")
        return modconv.modulated_conv2d(x, wr, sr, up=up, padding=1, resample_filter=f,
                                        impl="native" if impl == "dispatch" else "ref")
    return call


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "float64"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    f = setup_filter([1, 3, 3, 1], device=a.device)
    impls = ("dispatch", "grouped", "ref")
    print(f"# {bench.environment_line(a.device)}; best of {a.repeats} after {a.warmup} warm-up (ms)")
    print("| shape | pass | dtype | " + " | ".join(impls) + " |")
    print("|---|---|---|" + "---:|" * len(impls))
    for cin, cout, res in [(512, 512, 64), (64, 32, 512)]:
        for up in (1, 2):
            case = bench.Case(f"{cin}->{cout} @{res} up={up}", (4, cin, res, res),
                              _variants(cin, cout, up, f, a.device))
            x = torch.randn(case.shape, device=a.device).to(dtype)
            for backward in (False, True):
                best = dict.fromkeys(impls, float("inf"))
                for i in range(a.warmup + a.repeats):
                    for impl in impls:
                        t = bench.time_once(case, x, impl, backward, a.device)
                        if i >= a.warmup:
                            best[impl] = min(best[impl], t)
                print(f"| {case.name} | {'fwd+bwd' if backward else 'fwd'} | {a.dtype} | "
                      + " | ".join(f"{best[i] * 1e3:.2f}" for i in impls) + " |", flush=True)


if __name__ == "__main__":
    main()
