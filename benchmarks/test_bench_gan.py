"""pytest-benchmark: one StyleGAN2-ADA training step (G+D, batch 4) on the CPU, native ops vs impl='ref'.

    .venv/bin/python -m pytest benchmarks/test_bench_gan.py --benchmark-only --benchmark-group-by=param:preset

Each preset has a native and a reference entry in the same run, so their ratio is meaningful (the
issue's bar: the tiny preset at least 3x faster with native ops). A round is 4 consecutive steps,
so lazy regularisation (Greg every 4th step) is inside every round; Dreg (every 16th) falls in one
round of four. `benchmarks/gan_step.py` prints the same comparison as a table.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_step import make_trainer

STEPS_PER_ROUND = 4


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("preset", ["32", "256"])
def test_gan_training_step(benchmark, preset, impl):
    from retina_fast.gan.networks import PRESETS

    device = torch.device("cpu")
    res = PRESETS[preset]["resolution"]
    torch.manual_seed(1)
    real = torch.rand(4, 3, res, res) * 2 - 1
    trainer = make_trainer(preset, impl, 4, device)
    trainer.step(real)   # warm-up (first-call allocations, all phases)

    def run():
        for _ in range(STEPS_PER_ROUND):
            trainer.step(real)

    benchmark.group = f"gan step preset {preset}"
    benchmark.extra_info["steps_per_round"] = STEPS_PER_ROUND
    rounds = 4 if preset == "32" else 1
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=0)
