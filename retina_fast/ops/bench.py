"""Native-vs-reference timings of the StyleGAN ops on the shapes of a 1024 x 1024 generator.

Both implementations run side by side in one process, interleaved repeat by repeat, so machine
noise hits both alike; the table reports the best time of each and their ratio. Used by
``retina-fast demo``, ``benchmarks/ratio_table.py`` and the GPU device check.
"""
from dataclasses import dataclass
import os
import time

import torch

from .modconv import modulated_conv2d
from .upfirdn2d import downsample2d, setup_filter, upsample2d


@dataclass
class Case:
    name: str
    shape: tuple      # input [N, C, H, W]
    make: object      # make(x, impl) -> output; built per case so weights live outside timing


def _upsample(f):
    return lambda x, impl: upsample2d(x, f, impl=impl)


def _downsample(f):
    return lambda x, impl: downsample2d(x, f, impl=impl)


def _modconv(in_ch, out_ch, up, f, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(out_ch, in_ch, 3, 3, generator=g).to(device)
    s = (torch.randn(4, in_ch, generator=g) + 1).to(device)

    def run(x, impl):
        wr, sr = w.requires_grad_(x.requires_grad), s.requires_grad_(x.requires_grad)
        return modulated_conv2d(x, wr, sr, up=up, padding=1, resample_filter=f, impl=impl)
    return run


def paper_cases(device="cpu", dtype=torch.float32, scale=1):
    """The issue's benchmark shapes; ``scale`` > 1 divides every resolution (for quick runs)."""
    f = setup_filter([1, 3, 3, 1], device=device)
    r = lambda n: max(4, n // scale)  # noqa: E731
    cases = []
    for c, res in [(512, 64), (128, 256), (32, 1024)]:
        cases.append(Case(f"upsample2d [4,{c},{r(res)},{r(res)}]", (4, c, r(res), r(res)), _upsample(f)))
    for c, res in [(32, 1024), (128, 256), (512, 64)]:
        cases.append(Case(f"downsample2d [4,{c},{r(res)},{r(res)}]", (4, c, r(res), r(res)), _downsample(f)))
    for cin, cout, res in [(512, 512, 64), (64, 32, 512)]:
        for up in (1, 2):
            cases.append(Case(f"modconv {cin}->{cout} @{r(res)} up={up}", (4, cin, r(res), r(res)),
                              _modconv(cin, cout, up, f, device, dtype)))
    return cases


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_once(case, x, impl, backward, device):
    xx = x.detach().requires_grad_(backward)
    _sync(device)
    t0 = time.perf_counter()
    y = case.make(xx, impl)
    if backward:
        y.backward(torch.ones_like(y))
    _sync(device)
    return time.perf_counter() - t0


def run_table(cases, device="cpu", dtype=torch.float32, repeats=3, warmup=1, modes=("fwd", "fwd+bwd"),
              progress=None):
    """Time every case natively and with the reference; returns a list of result dicts."""
    rows = []
    for case in cases:
        x = torch.randn(case.shape, device=device).to(dtype)
        for mode in modes:
            backward = mode == "fwd+bwd"
            best = {"native": float("inf"), "ref": float("inf")}
            for i in range(warmup + repeats):
                for impl in ("native", "ref"):  # interleaved: the same noise for both
                    t = time_once(case, x, impl, backward, device)
                    if i >= warmup:
                        best[impl] = min(best[impl], t)
            rows.append(dict(op=case.name, mode=mode, dtype=str(dtype).replace("torch.", ""),
                             native_ms=best["native"] * 1e3, ref_ms=best["ref"] * 1e3,
                             speedup=best["ref"] / best["native"]))
            if progress:
                progress(rows[-1])
        del x
    return rows


def environment_line(device="cpu"):
    d = torch.device(device)
    where = torch.cuda.get_device_name(d) if d.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    line = f"torch {torch.__version__}, {where}, THP_MEM_ALLOC_ENABLE={thp}"
    tunables = os.environ.get("GLIBC_TUNABLES")
    return line + (f", GLIBC_TUNABLES={tunables}" if tunables else "")


def format_table(rows):
    lines = ["| op | pass | dtype | native ms | reference ms | speed-up |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['op']} | {r['mode']} | {r['dtype']} | {r['native_ms']:.1f} | "
                     f"{r['ref_ms']:.1f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)
