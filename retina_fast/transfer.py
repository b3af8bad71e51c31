"""Host-to-device copies that do not stall the host.

A plain ``tensor.to('cuda')`` from pageable host memory makes PyTorch wait for the whole CUDA
stream, so a training loop that uploads a few random numbers per step (augmentation matrices,
labels) would drain the GPU's queue every step and leave it idle while Python launches the next
step's kernels. Copying through pinned memory with ``non_blocking=True`` queues the copy instead.
"""
import torch

__all__ = ["host_to_device"]


def host_to_device(t, device):
    """`t` on `device`; CPU -> CUDA copies go through pinned memory and do not block the host.

    Parameters
    ----------
    t : torch.Tensor
        Any tensor (typically small and on the CPU).
    device : torch.device or str

    Returns
    -------
    torch.Tensor
        `t` itself when it is already on `device`. The pinned staging buffer stays alive until the
        copy has run (PyTorch's caching host allocator records the stream), so `t` may be freed or
        changed by the caller right away.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
