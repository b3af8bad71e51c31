"""pytest-benchmark: classifier training steps on the CPU (images/s in extra_info).

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python -m pytest benchmarks/test_bench_classify.py \\
        --benchmark-only --benchmark-group-by=group [--quick]

One `retina_fast.classify.train.train_step` (paper augmentation on the batch tensor, forward,
cross-entropy, backward, Adam) on a fixed random batch, for the paper's ResNet152 at 512 x 512
(batch 2; --quick: 256 x 256) and for the tests' ResNet18 at 64 x 64 (batch 10), with the torch
thread count left as it is. GPU figures: benchmarks/classify_throughput.py (device check).
"""
import numpy as np
import pytest
import torch

from retina_fast.classify.model import make_classifier
from retina_fast.classify.train import train_step


@pytest.mark.parametrize("arch,size,batch", [("resnet152", 512, 2), ("resnet18", 64, 10)],
                         ids=["resnet152-512", "resnet18-64"])
def test_train_step_cpu(benchmark, request, arch, size, batch):
    if arch == "resnet152" and request.config.getoption("--quick", default=False):
        size = 256
    torch.manual_seed(0)
    model = make_classifier(arch, 2, device="cpu")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    y = torch.tensor([0, 1] * (batch // 2))
    state = {"step": 0}

    def step():
        state["step"] += 1
        return float(train_step(model, opt, x, y, augment=dict(seed=0, epoch=0, step=state["step"])))

    benchmark.group = f"classifier training step, CPU ({torch.get_num_threads()} threads)"
    loss = benchmark.pedantic(step, rounds=2 if arch == "resnet152" else 5, warmup_rounds=1)
    assert np.isfinite(loss)
    benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.min
    benchmark.extra_info["config"] = f"{arch} {size}x{size} batch {batch}"
