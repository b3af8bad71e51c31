"""Which torch device a ``device=`` argument means: one rule for every stage."""
__all__ = ["resolve_device"]


def resolve_device(device, name="device"):
    """The `torch.device` that a ``device`` argument names, checked to be usable.

    Parameters
    ----------
    device : str, torch.device or None
        ``'auto'`` or None: ``'cuda'`` when torch sees a CUDA GPU, else ``'cpu'``. ``'cpu'``,
        ``'cuda'`` or ``'cuda:k'`` (a string or a `torch.device`): that device. A CUDA device is
        refused when torch sees no GPU. ``'cuda'`` keeps no index (torch's current device); callers
        that place one process per GPU (DDP) choose the index themselves.
    name : str
        The argument's name in error messages.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        One line naming `name`: not a device, a device type other than cpu/cuda, or CUDA asked for
        where torch sees no GPU.
    """
    import torch  # here, so that command-line modules importing this stay quick to load

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda[:k]', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be 'auto', 'cpu' or 'cuda[:k]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(device)!r} asked for, but torch sees no CUDA GPU")
    return dev
