"""Training snapshots: plain-data dicts written atomically, found again after a crash.

Format (``'format': 'retina_fast.gan/1'``), loadable with ``torch.load(path, weights_only=True)``
(`load_snapshot` reads it so, and checks the networks' arguments against their weights)::

    {'format', 'G_kwargs', 'D_kwargs', 'G', 'D', 'G_ema', 'opt_G', 'opt_D', 'augment_p', 'ada_stats',
     'loss', 'cur_nimg', 'cur_tick', 'batch_idx', 'loader', 'rng', 'config', 'fid_history', 'best_fid',
     'metric_history'}

A snapshot converted from an NVlabs network pickle (`retina_fast.gan.nvlabs`) holds the networks,
their kwargs, 'augment_p', 'config' and an 'nvlabs' record only: training from it starts with fresh
optimisers at kimg 0.

Names are ``snapshot-<kimg, 3 decimals, 10 wide>kimg.pt`` (e.g. ``snapshot-000012.345kimg.pt``), so
their sort order is their training order. A snapshot is written to a hidden temporary name
(``.<name>.tmp<pid>``), flushed to disk and renamed over the final name: a process killed at any
moment leaves either the complete previous state or the complete new one, and the temporary names
never match the snapshot pattern, so a half-written file is never picked up.
"""
import glob
import os
import random
import re

import numpy as np
import torch

from retina_fast.checkpoints import load_torch_file
from retina_fast.fileio import atomic_write

from .architecture import Discriminator, Generator, check_network_kwargs

FORMAT = "retina_fast.gan/1"
_NAME_RE = re.compile(r"^snapshot-(\d+\.\d{3})kimg\.pt$")


def snapshot_name(cur_nimg):
    """File name of the snapshot taken after `cur_nimg` training images."""
    return f"snapshot-{int(cur_nimg) / 1000:010.3f}kimg.pt"


def save_snapshot(path, data):
    """Write the snapshot dict `data` to `path` atomically (`retina_fast.fileio.atomic_write`)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"snapshot data must have 'format': {FORMAT!r}")
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path) as f:
        torch.save(data, f)
    return path


def load_snapshot(path, map_location="cpu"):
    """Read a snapshot (tensors and plain data only) and check its networks' arguments.

    The constructor arguments ``G_kwargs``/``D_kwargs`` are checked against bounds and against the
    shapes of the stored ``G``, ``G_ema`` and ``D`` weights
    (`retina_fast.gan.architecture.check_network_kwargs`), so that a network built from them fits its
    weights and no hostile size is ever allocated.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    ValueError
        One line naming the file: truncated, corrupt, refused (it holds pickled code), not a
        ``retina_fast.gan/1`` snapshot, or arguments that do not fit the weights.
    """
    path = os.fspath(path)
    data = load_torch_file(path, what="snapshot", map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"snapshot {path!r} is not a {FORMAT} snapshot (format {found!r})")
    for kwargs_key, cls, keys in (("G_kwargs", Generator, ("G", "G_ema")), ("D_kwargs", Discriminator, ("D",))):
        if kwargs_key in data:
            check_network_kwargs(cls, data[kwargs_key], {k: data[k] for k in keys if k in data},
                                 where=f"snapshot {path!r}", kwargs_name=kwargs_key)
    return data


def list_snapshots(folder):
    """Complete snapshot files of a run folder, oldest first (temporary files are never listed)."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(os.fspath(folder), "snapshot-*kimg.pt"))]
    names = [n for n in names if _NAME_RE.match(n)]
    return [os.path.join(folder, n) for n in sorted(names, key=lambda n: float(_NAME_RE.match(n).group(1)))]


def resolve_resume(path, map_location="cpu"):
    """(path, data) of the snapshot to resume from.

    `path` is a snapshot file, or a run folder: then its newest snapshot that reads completely
    (an unreadable newest one, e.g. from a disk error, is reported and the next older one used).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        candidates = list_snapshots(path)
        if not candidates:
            raise ValueError(f"resume folder {path!r} holds no snapshot-*kimg.pt")
        errors = []
        for p in reversed(candidates):
            try:
                return p, load_snapshot(p, map_location)
            except ValueError as e:
                errors.append(str(e))
                print(f"warning: skipping unreadable snapshot: {e}")
        raise ValueError(f"no readable snapshot in {path!r}: {errors}")
    return path, load_snapshot(path, map_location)


# ---------------------------------------------------------------------------------------------
# Random number generator states as plain data (weights_only-loadable)


def rng_state():
    """torch (CPU and CUDA), numpy and python global generator states as plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_state[0]), "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss_next": py_state[2]},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the states saved by `rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
