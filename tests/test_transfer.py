import pytest
import torch

from retina_fast.transfer import host_to_device


def test_same_device_returns_the_tensor_itself():
    t = torch.arange(6.0)
    assert host_to_device(t, "cpu") is t
    assert host_to_device(t, torch.device("cpu")) is t


def test_bad_device_is_named():
    with pytest.raises(RuntimeError, match="nodevice"):
        host_to_device(torch.zeros(2), "nodevice")


@pytest.mark.cuda
def test_cuda_copy_matches_and_keeps_dtype():
    t = torch.randn(3, 5, dtype=torch.float64)
    ref = t.clone()
    d = host_to_device(t, "cuda")
    assert d.device.type == "cuda" and d.dtype == t.dtype
    t.zero_()  # the copy was queued from a pinned staging buffer, not from t's own memory
    torch.cuda.synchronize()
    assert torch.equal(d.cpu(), ref)
    assert torch.equal(host_to_device(d, "cuda"), d)
