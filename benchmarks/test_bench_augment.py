"""pytest-benchmark: the ADA 'bgc' augmentation pipeline, native upfirdn2d vs impl='ref'.

    .venv/bin/python -m pytest benchmarks/test_bench_augment.py --benchmark-only \
        --benchmark-group-by=group [--quick]

[4, 3, 256, 256] images at p = 0.5 (a typical ADA strength), forward and forward+backward; the
random decisions are re-seeded before every call, so native and ref do the same work. Add --quick
for 128 x 128. The ratio is meaningful only between entries of the same run.
"""
import pytest
import torch

from retina_fast.gan.augment import AUGPIPE_SPECS, AugmentPipe

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_bgc_pipeline(benchmark, request, impl, mode):
    res = 128 if request.config.getoption("--quick", default=False) else 256
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.5, impl=impl).to(DEVICE)
    x = torch.rand([4, 3, res, res], device=DEVICE) * 2 - 1
    backward = mode == "fwd+bwd"

    def once():
        torch.manual_seed(0)
        xr = x.detach().requires_grad_(backward)
        y = pipe(xr)
        if backward:
            y.square().sum().backward()
        _sync()

    benchmark.group = f"augment bgc p=0.5 [4,3,{res},{res}] {mode} {DEVICE}"
    benchmark.pedantic(once, rounds=10, warmup_rounds=2)
