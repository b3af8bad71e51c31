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
def _need_native():
    if not ops.NATIVE_AVAILABLE:
        pytest.fail("the native extension is not built: run the README's test command, which builds it")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one intra-op thread for the module using it (`pytestmark = pytest.mark.usefixtures
    ("one_thread")`): on a busy 2-core machine torch's spinning worker threads make small-tensor
    work many times slower, and results do not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
