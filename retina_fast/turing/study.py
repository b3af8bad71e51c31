"""Build a study from a folder of real and a folder of synthetic images."""
import os
import secrets
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from retina_fast.checks import check_int
from retina_fast.fileio import temp_name

from . import db
from .reencode import IMAGE_SUFFIXES, image_max_side, plan_geometry, reencode


def _folder(path, arg, data_root):
    """Resolved directory `path`, refused if missing or (with `data_root`) outside it."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise ValueError(f"{arg} must be a folder path, got {path!r}")
    try:
        p = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ValueError(f"{arg}: folder not found: {path}") from None
    if data_root is not None and not p.is_relative_to(data_root):
        # resolve() has already followed '..' and symlinks, so this catches traversal of any spelling
        raise ValueError(f"{arg}: {path} is outside the server's data root")
    if not p.is_dir():
        raise ValueError(f"{arg}: not a folder: {path}")
    return p


def list_images(folder, arg, data_root=None):
    """Sorted image files (by suffix) directly inside `folder`; symlinks leaving `data_root` refused."""
    files = []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            continue
        if data_root is not None and not f.resolve().is_relative_to(data_root):
            raise ValueError(f"{arg}: {f.name} links outside the server's data root")
        files.append(f)
    if not files:
        raise ValueError(f"{arg}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def _pick(files, n, arg, rng):
    if n is None:
        return files
    n = check_int(arg, n, 1, len(files))   # at most the images available
    return [files[i] for i in sorted(rng.choice(len(files), n, replace=False))]


def create_study(engine, store, name, real_dir, synthetic_dir, seed, n_real=None, n_synthetic=None,
                 max_side=1024, data_root=None, progress=False, workers=None, geometry="auto"):
    """Create a study: pick, shuffle (seeded), re-encode and register the images.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        From :func:`retina_fast.turing.db.make_engine`.
    store : str or Path
        Folder for the re-encoded PNGs (created if missing); the study keeps its absolute path.
    name : str
        Study name.
    real_dir, synthetic_dir : str or Path
        Folders of source images (PNG/JPEG/TIFF/BMP, not recursive).
    seed : int
        Seeds the subset choice (`n_real`, `n_synthetic`) and the display order shared by all readers.
    n_real, n_synthetic : int or None
        Use a seeded random subset of this many images (None: all).
    max_side : int
        Side of the square stored images is ``min(max_side, longest side of any chosen image)``.
    data_root : str or Path or None
        If given, both folders (after resolving '..' and symlinks) must lie inside it.
    progress : bool
        Show a tqdm bar while re-encoding.
    workers : int or None
        Re-encoding threads (None: ``min(4, os.cpu_count())``).
    geometry : {'auto', 'fov', 'crop'}
        How every image is placed in the square (`retina_fast.turing.reencode.plan_geometry`): by
        default on its field of view, outside it black, when every image shows one.

    Returns
    -------
    (int, int)
        Study id and number of images.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    seed = check_int("seed", seed, 0)
    max_side = check_int("max_side", max_side, 16, 8192)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    workers = check_int("workers", workers, 1)
    root = Path(data_root).resolve() if data_root is not None else None
    real = list_images(_folder(real_dir, "real_dir", root), "real_dir", root)
    synth = list_images(_folder(synthetic_dir, "synthetic_dir", root), "synthetic_dir", root)
    rng = np.random.default_rng(seed)
    items = ([("real", f) for f in _pick(real, n_real, "n_real", rng)]
             + [("synthetic", f) for f in _pick(synth, n_synthetic, "n_synthetic", rng)])
    items = [items[i] for i in rng.permutation(len(items))]
    size = min(max_side, max(image_max_side(f) for _, f in items))
    # one placement for every image, so that framing and padding cannot tell the arms apart
    placement = plan_geometry([f for _, f in items], size, geometry, workers)

    store = Path(store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    # IDs are random, not seeded: knowing the seed must not let anyone map IDs to truth.
    ids = [secrets.token_hex(16) for _ in items]
    targets = [store / f"{iid}.png" for iid in ids]
    try:
        # Submitted in the shuffled display order, so file times on disk do not sort real before
        # synthetic. Threads: Pillow releases the GIL while decoding, resizing and encoding.
        with ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(reencode, f, t, size, placement) for (_, f), t in zip(items, targets)]
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), desc="re-encoding", unit="img",
                                disable=not progress):
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        with engine.begin() as conn:
            sid = db.add_study(conn, name.strip(), seed, size, str(store), [
                {"id": iid, "position": pos, "truth": truth, "source": f.name}
                for pos, (iid, (truth, f)) in enumerate(zip(ids, items))])
    except BaseException:
        for t in targets:  # no orphan images of a study that does not exist (the pool has finished)
            t.unlink(missing_ok=True)
            Path(temp_name(t)).unlink(missing_ok=True)  # threads of this process: this pid
        raise
    return sid, len(items)
