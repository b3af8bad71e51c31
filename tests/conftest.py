import pytest
import torch

import retina_fast.ops as ops


# The CUDA tests compare against references built on cuDNN convolutions and matmuls; TF32 (on by
# default for cuDNN) would make those references, not our kernels, the inaccurate side.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() and ops.has_cuda_kernels():
        return
    why = "no CUDA GPU" if not torch.cuda.is_available() else "extension built without CUDA kernels"
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def _need_native(request):
    # Only tests about the native kernels need them; everything else runs on the reference ops.
    if (request.node.get_closest_marker("native") or request.node.get_closest_marker("cuda")) \
            and not ops.NATIVE_AVAILABLE:
        pytest.fail("the native extension is not built: run the README's test command (make test), "
                    "which builds it")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for the module using it (`pytestmark = pytest.mark.usefixtures
    ("one_thread")`): on a busy 2-core machine torch's spinning worker threads make small-tensor
    work many times slower, and results do not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def phantom_dataset():
    """Factory: ``phantom_dataset(folder, labels, size=64, seed=0)`` writes a StyleGAN2-ADA-layout
    dataset of phantom fundus PNGs (``img00000000.png``, ...; image i is ``make_fundus(seed + i)``,
    ERM where its label is 1) with ``dataset.json`` when any label is not None; returns the folder
    as a string. `labels` is a list of 0 / 1 / None, one per image."""
    import os

    import numpy as np

    from retina_fast.data.dataset import image_name, write_dataset_json, write_png
    from retina_fast.data.phantom import make_fundus

    def build(folder, labels, size=64, seed=0):
        os.makedirs(folder, exist_ok=True)
        items = []
        for i, lab in enumerate(labels):
            img, _ = make_fundus(seed + i, size=(size, size), disease="erm" if lab == 1 else None)
            write_png(os.path.join(folder, image_name(i)), np.asarray(img))
            items.append((image_name(i), lab))
        if any(lab is not None for lab in labels):
            write_dataset_json(folder, items)
        return str(folder)

    return build
