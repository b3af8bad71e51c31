"""Vessel metrics over a folder or a StyleGAN2-ADA dataset: segmentation, amount, zone-B SNR -> CSV.

One row per image (`CSV_COLUMNS`). ``snr``/``snr_db`` are the zone-B ratio of the chosen kind
(``snr_kind``: 'signal', the paper's literal signal / noise, by default); ``snr_signal`` and
``snr_contrast`` hold both kinds, measured at the same points (see `retina_fast.vessels.snr`). An image that cannot be read, segmented or measured gets a row
with a `reason` and NaNs; the batch goes on. The CSV is written to a temporary name, then renamed.
"""
import csv
import io
import math
import multiprocessing as mp
import os
import sys

import numpy as np
from tqdm import tqdm

from retina_fast.checks import check_int
from retina_fast.data.dataset import DatasetReader, list_images
from retina_fast.data.prepare import read_manifest

from .amount import check_mask, vessel_amount
from .skeleton import skeletonize
from .snr import KINDS, zone_b_snr

__all__ = ["CSV_COLUMNS", "measure_image", "measure_folder", "read_metrics_csv",
           "write_rows_csv"]

CSV_COLUMNS = ("image", "vessel_pixels", "vessel_fraction", "skeleton_length", "snr", "snr_db", "n_points",
               "disc_row", "disc_col", "disc_radius", "reason",
               # extra, after the agreed columns
               "n_segments", "skeleton_chain_length", "fov_pixels", "disc_source", "label",
               "snr_kind", "snr_signal", "snr_contrast")
_NAN = float("nan")


def measure_image(image, vessel_mask, disc_center=None, disc_radius=None, *, fov_mask=None, **snr_kwargs):
    """All vessel metrics of one image from its vessel mask: amount, skeleton length, zone-B SNR.

    The skeleton is computed once and shared.

    Parameters
    ----------
    image : (H, W, 3) or (H, W) array
    vessel_mask : (H, W) bool array
    disc_center : (row, col) px, or None when no disc is known (SNR is then NaN with a reason)
    disc_radius : float px, or None
    fov_mask : (H, W) bool array, optional
        Field of view for the amount fractions.
    **snr_kwargs
        Passed to `zone_b_snr` (kind, zone, halfwidth, points_per_vessel, ...).

    Returns
    -------
    dict
        The `CSV_COLUMNS` fields except image, disc_source and label.
    """
    kind = snr_kwargs.get("kind", "signal")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    mask = check_mask(vessel_mask, "vessel_mask", np.shape(image)[:2])
    skeleton = skeletonize(mask)
    amount = vessel_amount(mask, fov_mask, skeleton=skeleton)
    row = {"vessel_pixels": amount.vessel_pixels, "vessel_fraction": amount.vessel_fraction,
           "skeleton_length": amount.skeleton_length, "skeleton_chain_length": amount.skeleton_chain_length,
           "fov_pixels": amount.fov_pixels, "snr": _NAN, "snr_db": _NAN, "n_points": 0, "n_segments": 0,
           "disc_row": _NAN, "disc_col": _NAN, "disc_radius": _NAN, "reason": "", "snr_kind": kind,
           "snr_signal": _NAN, "snr_contrast": _NAN}
    if disc_center is None or disc_radius is None:
        row["reason"] = "disc_not_found"
        return row
    row.update(disc_row=float(disc_center[0]), disc_col=float(disc_center[1]), disc_radius=float(disc_radius))
    res = zone_b_snr(image, mask, disc_center, disc_radius, skeleton=skeleton, **snr_kwargs)
    row.update(snr=res.snr, snr_db=res.snr_db, n_points=res.n_points, n_segments=res.n_segments,
               reason=res.reason, snr_signal=res.snr_signal, snr_contrast=res.snr_contrast)
    return row


# ----------------------------------------------------------------------------------------- inputs


def _manifest_discs(path):
    """{output image name: (row, col, radius)} from the manifest.csv beside a prepared dataset, if any."""
    path = os.path.abspath(os.fspath(path))
    base = path if os.path.isdir(path) else os.path.dirname(path)
    for cand in (os.path.join(base, "manifest.csv"), os.path.join(os.path.dirname(base), "manifest.csv")):
        if os.path.isfile(cand):
            out = {}
            for r in read_manifest(cand):
                try:
                    if r.get("status", "accepted") != "accepted" or not r.get("output"):
                        continue
                    disc = (float(r["disc_row"]), float(r["disc_col"]), float(r["disc_radius"]))
                except (KeyError, TypeError, ValueError):
                    continue
                if all(math.isfinite(v) for v in disc) and disc[2] > 0:
                    out[r["output"]] = disc
            return out
    return {}


def _default_segmenter(method="hessian", checkpoint=None, device=None):
    from .segment import segment

    if method == "fpn" and checkpoint is not None:
        from .fpn import load_model
        checkpoint = load_model(checkpoint, device="cpu")  # once, not per image

    def run(image):
        return segment(image, method=method, checkpoint=checkpoint, device=device)
    return run


def _default_disc_detector(image):
    from retina_fast.data.disc import detect_disc
    return detect_disc(image)


def _mask_and_fov(seg):
    """A segmenter may return a SegmentationResult (mask, fov_mask) or a bare mask."""
    if hasattr(seg, "mask"):
        return seg.mask, getattr(seg, "fov_mask", None)
    return seg, None


# ------------------------------------------------------------------------------------------ worker

_JOB = {}  # the batch configuration, set in each worker by the pool initializer (inherited when forked)


def _init_worker(job):
    _JOB.clear()
    _JOB.update(job)


def _measure_one(item):
    name, label = item
    job = _JOB
    row = {c: _NAN for c in CSV_COLUMNS}
    row.update(image=name, label="" if label is None else label, n_points=0, n_segments=0, reason="",
               disc_source="", snr_kind=job["snr_kwargs"].get("kind", "signal"))
    try:
        image = job["reader"].read(name)
    except Exception as e:  # noqa: BLE001 - one unreadable file must not stop the batch
        row["reason"] = f"unreadable: {type(e).__name__}: {e}"
        return row
    try:
        mask, fov = _mask_and_fov(job["segmenter"](image))
        disc = job["discs"].get(name)
        if disc is not None:
            center, radius, source = (disc[0], disc[1]), disc[2], "manifest"
        else:
            d = job["disc_detector"](image)
            found = bool(getattr(d, "found", True))
            center, radius, source = (tuple(d.center), float(d.radius), "detected") if found else (None, None, "")
        row.update(measure_image(image, mask, center, radius, fov_mask=fov, **job["snr_kwargs"]))
        row["disc_source"] = source
    except Exception as e:  # noqa: BLE001
        row["reason"] = f"error: {type(e).__name__}: {e}"
    return row


def measure_folder(path, out_csv=None, *, workers=2, segmenter=None, disc_detector=None, method="hessian",
                   checkpoint=None, progress=True, limit=None, **snr_kwargs):
    """Measure every image of a folder or dataset and write one CSV row per image.

    Parameters
    ----------
    path : str or path-like
        A StyleGAN2-ADA dataset (folder with dataset.json, or .zip) or a plain folder of PNG/JPEG.
    out_csv : str or path-like, optional
        CSV to write (temp name, then rename). Not written when None.
    workers : int
        Processes (default 2). 0 or 1 runs in this process.
    segmenter : callable, optional
        ``segmenter(image) -> SegmentationResult or bool mask``; default
        ``retina_fast.vessels.segment.segment(image, method=method, checkpoint=checkpoint)``.
    disc_detector : callable, optional
        ``disc_detector(image) -> DiscResult``; default `retina_fast.data.disc.detect_disc`. Used for images
        without a disc in the dataset's manifest.csv (looked up beside `path` and one level up).
    method, checkpoint :
        Passed to the default segmenter.
    progress : bool
        Show a tqdm bar on stderr.
    limit : int, optional
        Measure only the first `limit` (>= 1) images.
    **snr_kwargs
        Passed to `zone_b_snr` (kind='signal' or 'contrast' for the ``snr`` column, zone='radii' or
        'diameters', halfwidth, ...).

    Returns
    -------
    list of dict
        The rows, in listing order.
    """
    kind = snr_kwargs.get("kind", "signal")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"no such folder or dataset: {path!r}")
    check_int("limit", limit, minimum=1, allow_none=True)
    items = list_images(path)
    if not items:
        raise ValueError(f"no images in {path!r} (PNG, JPEG, TIFF, BMP, or a dataset)")
    if limit is not None:
        items = items[:int(limit)]
    # forked workers cannot use a CUDA context: with a pool the default segmenter stays on the CPU
    device = "cpu" if workers is not None and workers > 1 else None
    # one reader for the batch: a zip is opened once per worker process, not once per image
    reader = DatasetReader(path)
    job = {"reader": reader, "segmenter": segmenter or _default_segmenter(method, checkpoint, device),
           "disc_detector": disc_detector or _default_disc_detector, "discs": _manifest_discs(path),
           "snr_kwargs": snr_kwargs}
    bar = tqdm(total=len(items), desc="vessel metrics", unit="img", file=sys.stderr, disable=not progress)
    rows = []
    try:
        if workers is None or workers <= 1 or len(items) <= 1:
            _init_worker(job)
            for item in items:
                rows.append(_measure_one(item))
                bar.update()
        else:
            # fork keeps the (possibly unpicklable) segmenter/detector callables; spawn needs picklable ones
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(int(workers), initializer=_init_worker, initargs=(job,)) as pool:
                for row in pool.imap(_measure_one, items, chunksize=1):
                    rows.append(row)
                    bar.update()
    finally:
        bar.close()
        reader.close()
    if out_csv is not None:
        write_rows_csv(out_csv, rows)
    return rows


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def write_rows_csv(path, rows, columns=CSV_COLUMNS):
    """Write dict rows as CSV through a temp file and a rename (NaN/None as empty cells)."""
    from retina_fast.data.dataset import write_text_atomic
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(folder, exist_ok=True)
    write_text_atomic(os.fspath(path), buf.getvalue())


def read_metrics_csv(path):
    """A metrics CSV as {column: list}; numeric columns as float arrays (empty cells NaN)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"no such metrics CSV: {path!r}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [c for c in ("image", "vessel_pixels", "snr") if c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: not a vessel metrics CSV (missing columns {missing})")
    out = {}
    for c in rows[0]:
        vals = [r[c] for r in rows]
        try:
            out[c] = np.array([float(v) if v != "" else np.nan for v in vals])
        except ValueError:
            out[c] = vals
    return out
