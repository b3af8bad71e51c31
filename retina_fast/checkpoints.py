"""Reading ``torch.save`` files without running code from them.

Every weights file retina_fast reads (GAN snapshots, the FPN vessel checkpoint, Inception weights,
classifier weights and checkpoints) goes through `load_torch_file`: ``torch.load`` with
``weights_only=True``, so a file can hold tensors and plain data only, and a pickle that names a
function (``os.system`` in a ``__reduce__``) is refused before anything in it is called. Torch's own
errors for a refused, truncated or foreign file run to several lines and advise retrying with
``weights_only=False``, which would run the file's code; here every failure is one line naming the
file, and the unsafe retry is never suggested.
"""
import os
import pickle
import warnings

import torch

__all__ = ["load_torch_file", "load_torchscript_file", "build_on_meta", "check_state_dict"]

# Lines of torch's weights-only message that advise loading unsafely or allow-listing globals.
_ADVICE = ("weights_only", "safe_globals", "allowlist", "please file an issue", "check the documentation",
           "trusted source")


def _refusal_detail(message):
    """The part of torch's weights-only refusal that says what was refused, without its advice."""
    for line in str(message).splitlines()[1:]:
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not any(a in line.lower() for a in _ADVICE):
            return line[:200]
    return "content other than tensors and plain data"


def _first_line(exc):
    """`exc`'s type and first line, without sentences that advise an unsafe load."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    kept = [s for s in text[0].split(". ") if not any(a in s.lower() for a in _ADVICE)]
    return f"{type(exc).__name__}: {'. '.join(kept)[:200]}" if kept else type(exc).__name__


def check_local_file(path, what):
    """`path` as a string, checked to name an existing local file (weights are never downloaded).

    Parameters
    ----------
    path : str or os.PathLike
    what : str
        What the file is, first words of the error message (e.g. ``"network pickle"``).

    Raises
    ------
    TypeError
        `path` is not a path.
    ValueError
        A URL, or a folder.
    FileNotFoundError
        Nothing at `path`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a local file path, got {type(path).__name__}")
    path = os.fspath(path)
    if "://" in path:
        raise ValueError(f"{what} must be a local file path, not a URL: {path!r} (weights are never downloaded)")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} is not a file")
    return path


def load_torch_file(path, what="checkpoint", map_location="cpu"):
    """Read a ``torch.save`` file as tensors and plain data only (``weights_only=True``).

    Parameters
    ----------
    path : str or os.PathLike
        A local file (never a URL).
    what : str
        What the file is, for messages (e.g. ``'snapshot'``, ``'Inception weights'``).
    map_location : str or torch.device
        Where tensors are put (default the CPU).

    Returns
    -------
    object
        The saved object: dicts, lists, tuples, numbers, strings and tensors.

    Raises
    ------
    FileNotFoundError
        `path` does not exist (named).
    ValueError
        One line naming the file: it is not a file, it holds pickled objects other than tensors and
        plain data (refused unopened: unpickling them could run code), or it is truncated, empty or
        not a ``torch.save`` file.
    """
    path = check_local_file(path, what)
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": a multi-line aside about a file we refuse or read anyway.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise ValueError(f"{what} {path!r} cannot be read safely: it is not a file of tensors and plain "
                             f"data ({_refusal_detail(e)}); such a file is refused, as unpickling it could run "
                             "code") from None
        raise ValueError(f"{what} {path!r} cannot be read: not a torch.save file, or corrupt "
                         f"({_first_line(e)})") from None
    except RuntimeError as e:
        if "torchscript" in str(e).lower():
            raise ValueError(f"{what} {path!r} cannot be read: it is a TorchScript archive, not a torch.save "
                             "file of tensors") from None
        if "central directory" in str(e) or "PytorchStreamReader" in str(e):
            raise ValueError(f"{what} {path!r} cannot be read: truncated or corrupt (not a complete "
                             "torch.save archive)") from None
        raise ValueError(f"{what} {path!r} cannot be read ({_first_line(e)})") from None
    except EOFError:
        raise ValueError(f"{what} {path!r} cannot be read: empty or truncated") from None
    except OSError as e:
        raise OSError(f"{what} {path!r} cannot be read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - random bytes make torch's unpickler raise almost anything
        raise ValueError(f"{what} {path!r} cannot be read: not a torch.save file, or corrupt "
                         f"({_first_line(e)})") from None


def load_torchscript_file(path, what="TorchScript file", map_location="cpu"):
    """Load a TorchScript archive (``torch.jit.load``): its code is TorchScript, run by torch's
    interpreter, not Python. Errors as `load_torch_file`: one line naming the file."""
    path = check_local_file(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location=map_location)
    except Exception as e:  # noqa: BLE001 - torch.jit raises RuntimeError and its own C++ error types
        raise ValueError(f"{what} {path!r} cannot be loaded as TorchScript ({_first_line(e)})") from None


def build_on_meta(build, where, what):
    """``build()`` on the ``meta`` device: the module's tensors get shapes but no memory, so sizes
    read from a file can be checked against its weights before anything of that size is allocated.

    Any error of the constructor becomes one ValueError line naming `where` and `what` (the
    arguments, e.g. ``'its config'``).
    """
    try:
        with torch.device("meta"):
            return build()
    except Exception as e:  # noqa: BLE001 - constructors raise TypeError, ValueError, KeyError, ...
        raise ValueError(f"{where}: {what} do not build the network ({_first_line(e)})") from None


def check_state_dict(module, state, where, key="state_dict", what="its arguments"):
    """Check that `state` has exactly the tensor names and shapes of `module`'s state dict.

    `module` is typically built by `build_on_meta` from the same file's arguments (`what`).
    Raises ValueError, one line naming `where`, the state dict `key` and the first mismatch.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{where}: {key!r} is a {type(state).__name__}, not a state dict")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{where}: {key!r} does not match {what}: {len(missing)} missing tensors "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for k, v in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor):
            raise ValueError(f"{where}: {key!r}[{k!r}] is a {type(got).__name__}, not a tensor")
        if got.shape != v.shape:
            raise ValueError(f"{where}: {key!r}[{k!r}] has shape {list(got.shape)} but {what} give "
                             f"{list(v.shape)}")
