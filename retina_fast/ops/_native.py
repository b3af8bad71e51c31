"""Loads the compiled extension ``retina_fast._C`` once and says whether it is there.

Importing it registers the ``torch.ops.retina_fast.*`` operators. Nothing is ever compiled at
import or call time: the extension is built ahead of time by ``setup.py`` (see README.md).
"""
import functools
import warnings

import torch

_error = None
try:
    from .. import _C  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the no-extension test in a subprocess
    _error = exc
    warnings.warn(
        f"retina_fast: the native extension is not built ({exc}); ops fall back to their "
        "pure-PyTorch reference implementations. Build it with `make build` (see README.md).",
        RuntimeWarning,
        stacklevel=2,
    )

AVAILABLE = _error is None


@functools.cache  # fixed once the extension is loaded; resolve_impl asks on every call
def has_cuda_kernels():
    """True when the extension was compiled with its CUDA kernels."""
    if not AVAILABLE:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("retina_fast::upfirdn2d", "CUDA")


def resolve_impl(impl, op, device):
    """Map the public ``impl`` argument to 'native' or 'ref' for a tensor on ``device``.

    None picks the native kernel when it exists for that device; 'native' insists on it and
    raises RuntimeError naming the reason; 'ref' is the pure-PyTorch reference.
    """
    if impl not in (None, "native", "ref"):
        raise ValueError(f"{op}: impl must be None, 'native' or 'ref', got {impl!r}")
    if impl == "ref":
        return "ref"
    native_ok = AVAILABLE and (device.type == "cpu" or (device.type == "cuda" and has_cuda_kernels()))
    if impl == "native" and not native_ok:
        why = f"the extension is not built ({_error})" if not AVAILABLE else (
            f"it has no kernel for device type '{device.type}'")
        raise RuntimeError(f"{op}: impl='native' requested but {why}")
    return "native" if native_ok else "ref"
