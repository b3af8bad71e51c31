"""pytest-benchmark: vessel segmentation speed.

    .venv/bin/python -m pytest benchmarks/test_bench_segment.py --benchmark-only --benchmark-group-by=group

Groups:
* 'hessian 1024x1024' / 'hessian 1536x2048': `segment(method='hessian')` on a prepared-size phantom and a
  raw-frame phantom (the bar: 1024 x 1024 in <= 0.5 s single-process, i.e. >= 2 images/s on 2 cores),
  beside scikit-image's `frangi` (black ridges, the same scales, green channel only, no FOV handling,
  no mask) as the reference it replaces: their ratio is meaningful, absolute times depend on the load.
* 'fpn 1024x1024': tiled FPN inference (ResNet-18 FPN, random weights: speed only), torch on one CPU
  thread (torch's waiting threads spin: on a busy shared 2-core machine two threads are many times
  slower than one).
"""
import numpy as np
import pytest
import torch

from retina_fast.data.phantom import make_fundus
from retina_fast.vessels import fpn
from retina_fast.vessels.segment import default_sigmas, segment

SIZES = {"1024x1024": (1024, 1024), "1536x2048": (1536, 2048)}


@pytest.fixture(scope="module")
def images():
    return {name: make_fundus(0, size=size)[0] for name, size in SIZES.items()}


@pytest.mark.parametrize("size", list(SIZES))
def test_hessian(benchmark, images, size):
    image = images[size]
    benchmark.group = f"hessian {size}"
    res = benchmark.pedantic(segment, args=(image,), kwargs=dict(device="cpu"), rounds=5, warmup_rounds=1)
    assert res.mask.any()


@pytest.mark.parametrize("size", ["1024x1024"])
def test_skimage_frangi_reference(benchmark, images, size):
    from skimage.filters import frangi

    green = images[size][..., 1].astype(np.float32)
    benchmark.group = f"hessian {size}"
    benchmark.pedantic(frangi, args=(green,), kwargs=dict(sigmas=default_sigmas(green.shape), black_ridges=True),
                       rounds=2, warmup_rounds=0)


def test_fpn_inference(benchmark, images):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = fpn.build_model()
    config = dict(encoder_name="resnet18", pyramid_channels=128, segmentation_channels=64, encoder_depth=5,
                  dropout=0.0, short_side=None)
    model = fpn.SegModel(net.eval(), config, "cpu")
    benchmark.group = "fpn 1024x1024"
    prob = benchmark.pedantic(fpn.predict, args=(images["1024x1024"], model), kwargs=dict(tile=512),
                              rounds=2, warmup_rounds=1)
    torch.set_num_threads(threads)
    assert prob.shape == (1024, 1024)
