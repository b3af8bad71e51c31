"""pytest-benchmark suite: native vs reference on the 1024 x 1024 generator's shapes.

    .venv/bin/python -m pytest benchmarks/ --benchmark-only [--benchmark-group-by=param:case]

Each case has a native and a reference entry in the same run, so their ratio is meaningful.
Add --quick to benchmark at 1/4 resolution.
"""
import pytest
import torch

from retina_fast.ops import bench

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        quick = metafunc.config.getoption("--quick", default=False)
        cases = bench.paper_cases(DEVICE, scale=4 if quick else 1)
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
def test_op(benchmark, case, impl, mode):
    x = torch.randn(case.shape, device=DEVICE)
    benchmark.group = f"{case.name} {mode}"
    benchmark.pedantic(bench.time_once, args=(case, x, impl, mode == "fwd+bwd", DEVICE),
                       rounds=3, warmup_rounds=1)
