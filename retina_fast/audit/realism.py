"""Realism of synthetic fundus images in the fundus's own terms, measured with the project's stages.

Each image goes through `prepare`'s quality checks (`retina_fast.data.prepare.process_image`: colour,
exposure, field of view found and inside the frame, optic disc found) plus a centring check, then the
vessel stages (`retina_fast.vessels.segment`, `measure_image`: vessel fraction, skeleton length,
zone-B SNR). `realism_report` compares a synthetic set with a real one metric by metric, in the layout
of `retina-fast vessels compare` with a Kolmogorov-Smirnov column. `RealismMonitor` runs it during
training on fixed seeds against a fixed, cached sample of training images.

Images are measured at the checks' working size `WORK_SIZE` (512 px): a smaller image (a 64 px
generator's output) is first upscaled (bicubic) so that its short side is `WORK_SIZE`, and prepare's
crop is resized to `WORK_SIZE` x `WORK_SIZE`. Pixel lengths (skeleton length) are at that size.
Prepared and generated images are cropped to the field of view, which touches their left and right
edges; `prepare` looks for the FOV in a camera frame and calls a FOV that leaves the frame 'zoomed'.
So every image gets a black margin of `MARGIN` x its short side on each side before the checks, as
a camera frame has (a frame whose retina fills it still has no circular edge and fails).
"""
import math
import multiprocessing as mp
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from retina_fast.checks import check_int
from retina_fast.data.dataset import DatasetReader, list_images, write_text_atomic
from retina_fast.data.fov import FieldOfView, as_pil, crop_geometry, crop_to_fov_pil
from retina_fast.data.prepare import PrepareSettings, process_image
from retina_fast.data.reasons import DESCRIPTIONS

__all__ = ["WORK_SIZE", "CENTRE_TOLERANCE", "MARGIN", "COLUMNS", "METRICS", "HEADLINE_COLUMNS", "AUDIT_REASONS",
           "measure_image_realism", "measure_realism", "realism_report", "RealismReport", "RealismMonitor",
           "passing_mask", "add_metric_point", "audit_filter"]

WORK_SIZE = 512
# FOV centre farther than this x its radius from the frame centre: 'off_centre'. Prepared images are
# centred by construction (offset ~0); raw phantom frames are within 0.05.
CENTRE_TOLERANCE = 0.1
MARGIN = 1 / 16

# Reasons an image fails the audit: prepare's pixel checks, then the centring check.
AUDIT_REASONS = ("unreadable", "not_colour", "dark", "saturated", "zoomed", "disc_not_found", "off_centre")
REASON_DESCRIPTIONS = {**{r: DESCRIPTIONS[r] for r in AUDIT_REASONS if r in DESCRIPTIONS},
                       "off_centre": f"field of view centre more than {CENTRE_TOLERANCE:g} x its radius "
                                     "from the frame centre"}

# Compared metrics: column -> description with units.
METRICS = {
    "vessel_fraction": "vessel pixels / FOV pixels",
    "skeleton_length": f"vessel centreline length, px at {WORK_SIZE} px",
    "snr": "zone-B SNR (vessels.snr default kind)",
    "snr_contrast": "zone-B contrast-to-noise ratio",
    "disc_radius": "disc radius / FOV radius",
    "disc_row": "disc centre row offset from the FOV centre / FOV radius",
    "disc_col": "disc centre column offset from the FOV centre / FOV radius",
    "fov_radius": "FOV radius / half the frame's short side",
    "fov_offset": "FOV centre distance from the frame centre / FOV radius",
    "mean_red": "mean red inside the FOV, grey levels",
    "mean_green": "mean green inside the FOV, grey levels",
    "mean_blue": "mean blue inside the FOV, grey levels",
}
COLUMNS = ("image", "passed", "reason", "disc_found", *METRICS, "n_points")
HEADLINE_COLUMNS = ("realism_pass", "realism_vessel_d", "realism_snr_d")
_NAN = float("nan")


def _to_working_size(pil, size, resolution):
    """Box-downscale to short side `resolution` (if larger), then bicubic-upscale to short side `size`."""
    w, h = pil.size
    if resolution is not None and min(w, h) > resolution:
        f = resolution / min(w, h)
        pil = pil.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
        w, h = pil.size
    if min(w, h) < size:
        f = size / min(w, h)
        pil = pil.resize((round(w * f), round(h * f)), Image.Resampling.BICUBIC)
    return pil


def _check_size(size, resolution):
    check_int("size", size, 64)
    check_int("resolution", resolution, 8, allow_none=True)


def measure_image_realism(image, *, size=WORK_SIZE, resolution=None, detector="classical"):
    """Quality checks and realism metrics of one fundus image.

    Parameters
    ----------
    image : (H, W, 3) uint8 array or RGB PIL.Image
        A raw frame, a prepared image or a generator's output.
    size : int
        Working size, px: an image whose short side is under it is upscaled (bicubic) to it first, and
        prepare's FOV crop is resized to `size` x `size` (default `WORK_SIZE`, 512).
    resolution : int, optional
        First box-downscale an image whose short side is over `resolution` to it: measures real
        images at a generator's resolution, as the generator sees them in training.
    detector : str or callable
        Optic-disc detector (`retina_fast.data.disc.detect_disc`).

    Returns
    -------
    dict
        The `COLUMNS` fields except ``image``: ``passed`` (bool), ``reason`` ('' or one of
        `AUDIT_REASONS`), ``disc_found`` and the `METRICS` (NaN where not measurable: vessel metrics
        and colour need a field of view, disc metrics and SNR a disc).
    """
    from retina_fast.vessels.batch import measure_image
    from retina_fast.vessels.segment import segment

    _check_size(size, resolution)
    pil = _to_working_size(as_pil(image), int(size), resolution)
    short = min(pil.size)
    pad = round(MARGIN * short)
    framed = Image.new("RGB", (pil.size[0] + 2 * pad, pil.size[1] + 2 * pad))
    framed.paste(pil, (pad, pad))
    pil = framed
    row = {"passed": False, "reason": "", "disc_found": False, "n_points": 0, **{k: _NAN for k in METRICS}}
    reason, fields, square = process_image(pil, PrepareSettings(size=int(size), detector=detector))
    if "fov_radius" not in fields:
        row["reason"] = reason
        return row
    w, h = pil.size
    fov = FieldOfView((fields["fov_row"], fields["fov_col"]), fields["fov_radius"])
    offset = math.hypot(fov.center[0] - (h - 1) / 2, fov.center[1] - (w - 1) / 2) / fov.radius
    row.update(fov_radius=fov.radius / (short / 2), fov_offset=offset)
    if reason is None and offset > CENTRE_TOLERANCE:
        reason = "off_centre"
    geom = crop_geometry(fov, int(size))
    if square is None:  # failed after the FOV was found: the vessels are still measured on its crop
        square, geom = crop_to_fov_pil(pil, fov, int(size))
    out_fov = geom.output_fov(fov)
    arr = np.asarray(square)
    seg = segment(arr)
    disc = None
    if "disc_radius" in fields and reason != "disc_not_found":
        disc = ((fields["disc_row"], fields["disc_col"]), fields["disc_radius"])
        row.update(disc_found=True, disc_radius=disc[1] / out_fov.radius,
                   disc_row=(disc[0][0] - out_fov.center[0]) / out_fov.radius,
                   disc_col=(disc[0][1] - out_fov.center[1]) / out_fov.radius)
    m = measure_image(arr, seg.mask, *(disc or (None, None)), fov_mask=seg.fov_mask)
    row.update(vessel_fraction=m["vessel_fraction"], skeleton_length=m["skeleton_length"], snr=m["snr"],
               snr_contrast=m["snr_contrast"], n_points=m["n_points"])
    inside = arr[seg.fov_mask] if seg.fov_mask is not None and seg.fov_mask.any() else arr.reshape(-1, 3)
    row.update(zip(("mean_red", "mean_green", "mean_blue"), inside.mean(axis=0).tolist()))
    row["reason"] = reason or ""
    row["passed"] = reason is None
    return row


_JOB = {}


def _init_worker(job):
    _JOB.clear()
    _JOB.update(job)


def _measure_item(item):
    """Worker: (name, array or None) -> row; never raises (a failure is the reason 'unreadable')."""
    name, image = item
    try:
        if image is None:
            reader = _JOB.get("reader")
            if reader is None:
                reader = _JOB["reader"] = DatasetReader(_JOB["path"])
            image = reader.read(name)
        row = measure_image_realism(image, size=_JOB["size"], resolution=_JOB["resolution"],
                                    detector=_JOB["detector"])
    except Exception as e:  # noqa: BLE001 -- one bad image never stops the batch
        row = {"passed": False, "reason": "unreadable", "disc_found": False, "n_points": 0,
               **{k: _NAN for k in METRICS}, "error": f"{type(e).__name__}: {e}"}
    return {"image": name, **row}


def measure_realism(images, *, size=WORK_SIZE, resolution=None, names=None, detector="classical", workers=1,
                    progress=False):
    """Quality checks and realism metrics of many images: one row per image.

    Parameters
    ----------
    images : path, sequence of (H, W, 3) uint8 arrays / PIL images, or (N, H, W, 3) uint8 array
        A dataset folder or .zip (`retina-fast prepare` output) or a folder of images (read with
        `retina_fast.data.dataset.DatasetReader`), or the images themselves.
    size : int
        Working size of the checks, px (default `WORK_SIZE`, 512): smaller images are upscaled to it
        (bicubic), see `measure_image_realism`.
    resolution : int, optional
        Box-downscale larger images to this short side first (e.g. a generator's resolution).
    names : sequence of str, optional
        For a path: only these image names (in this order). For arrays: the ``image`` column
        (default ``'0'``, ``'1'``, ...).
    detector : str or callable
        Optic-disc detector.
    workers : int
        Processes (1: in this process).
    progress : bool
        tqdm bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns `COLUMNS` (plus ``error`` where an image could not be read); see `METRICS` for units.
    """
    import pandas as pd

    _check_size(size, resolution)
    check_int("workers", workers, 1)
    job = {"size": int(size), "resolution": resolution, "detector": detector, "path": None}
    if isinstance(images, (str, os.PathLike)):
        path = os.fspath(images)
        if not os.path.exists(path):
            raise ValueError(f"images {path!r} does not exist")
        available = [n for n, _ in list_images(path)]
        if names is None:
            names = available
        else:
            missing = sorted(set(names) - set(available))
            if missing:
                raise ValueError(f"{path}: no image named {missing[0]!r}")
        if not names:
            raise ValueError(f"images {path!r} holds no images")
        job["path"] = path
        items = [(n, None) for n in names]
    else:
        images = list(images)
        if not images:
            raise ValueError("images is empty")
        if names is None:
            names = [str(i) for i in range(len(images))]
        elif len(names) != len(images):
            raise ValueError(f"names has {len(names)} entries for {len(images)} images")
        items = list(zip(names, images))
    from tqdm.auto import tqdm

    with tqdm(total=len(items), unit="img", desc="realism", disable=not progress) as bar:
        rows = []
        if workers == 1 or len(items) == 1:
            _init_worker(job)
            try:
                for it in items:
                    rows.append(_measure_item(it))
                    bar.update(1)
            finally:
                if _JOB.get("reader") is not None:
                    _JOB["reader"].close()
                _JOB.clear()
        else:
            with mp.get_context("spawn").Pool(min(workers, len(items)), _init_worker, (job,)) as pool:
                for r in pool.imap(_measure_item, items, chunksize=4):
                    rows.append(r)
                    bar.update(1)
    df = pd.DataFrame(rows)
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    return df[cols]


def passing_mask(table):
    """Boolean array: which rows of a `measure_realism` table pass the audit's checks."""
    return np.asarray(table["passed"], dtype=bool)


# ------------------------------------------------------------------------------------------ report


@dataclass
class RealismReport:
    """Result of `realism_report`.

    Attributes
    ----------
    real, synthetic : pandas.DataFrame
        Per-image rows (`measure_realism`).
    comparisons : list of `retina_fast.vessels.compare.Comparison`
        One per metric with at least 2 measurable images in each set.
    ks : dict
        Metric -> (KS distance, p) of `scipy.stats.ks_2samp`.
    not_compared : list of str
        Metrics with fewer than 2 measurable images in a set.
    pass_real, pass_synthetic : float
        Share of images passing the checks.
    reasons_real, reasons_synthetic : Counter
        Reason -> count of the failing images.
    headline : dict
        ``realism_pass`` (synthetic share passing), ``realism_vessel_d`` and ``realism_snr_d``
        (Cohen's d real - synthetic of vessel fraction and SNR; NaN when not compared).
    table : str
        The Markdown report.
    files : dict
        Written files by kind (empty without `out_dir`).
    """

    real: object
    synthetic: object
    comparisons: list
    ks: dict
    not_compared: list
    pass_real: float
    pass_synthetic: float
    reasons_real: Counter
    reasons_synthetic: Counter
    headline: dict
    table: str
    files: dict = field(default_factory=dict)


def _as_table(x, kw):
    import pandas as pd

    return x if isinstance(x, pd.DataFrame) else measure_realism(x, **kw)


def _pass_section(groups, tables):
    lines = ["| set | images | pass | share | " + " | ".join(AUDIT_REASONS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(AUDIT_REASONS)]
    for g, t in zip(groups, tables):
        ok = passing_mask(t)
        counts = Counter(r for r, p in zip(t["reason"], ok) if not p)
        lines.append(f"| {g} | {len(t)} | {int(ok.sum())} | {100 * ok.mean():.1f} % | "
                     + " | ".join(str(counts.get(r, 0)) for r in AUDIT_REASONS) + " |")
    return "\n".join(lines) + "\n"


def realism_report(real, synthetic, out_dir=None, *, size=WORK_SIZE, resolution=None, detector="classical",
                   workers=1, groups=("real", "synthetic"), progress=False):
    """Compare the realism metrics of a synthetic image set with a real one.

    Parameters
    ----------
    real, synthetic : DataFrame from `measure_realism`, or anything it takes (path, image list)
    out_dir : path, optional
        Folder for ``realism.md``, ``comparison.csv``, ``<group>.csv`` (per image) and
        ``hist_<metric>.png``; every file is written atomically. Created after both sets are measured.
    size, resolution, detector, workers, progress :
        Passed to `measure_realism` for sets not yet measured.
    groups : (str, str)
        Names of the two sets in the tables.

    Returns
    -------
    RealismReport
        Share passing with reasons; per metric mean +- SD, Cohen's d (95 % CI) and KS distance.
    """
    from scipy import stats

    from retina_fast.vessels.compare import compare, comparison_table

    kw = dict(size=size, resolution=resolution, detector=detector, workers=workers, progress=progress)
    real = _as_table(real, kw)
    synthetic = _as_table(synthetic, kw)
    comparisons, ks, skipped = [], {}, []
    for name in METRICS:
        a = np.asarray(real[name], float)
        b = np.asarray(synthetic[name], float)
        if np.isfinite(a).sum() < 2 or np.isfinite(b).sum() < 2:
            skipped.append(name)
            continue
        comparisons.append(compare(a, b, name=name))
        r = stats.ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)])
        ks[name] = (float(r.statistic), float(r.pvalue))
    by_name = {c.name: c for c in comparisons}
    pr, ps = float(passing_mask(real).mean()), float(passing_mask(synthetic).mean())
    headline = {"realism_pass": ps,
                "realism_vessel_d": by_name["vessel_fraction"].cohens_d if "vessel_fraction" in by_name else _NAN,
                "realism_snr_d": by_name["snr"].cohens_d if "snr" in by_name else _NAN}
    text = [f"# Realism audit: {groups[1]} vs {groups[0]}", "",
            f"Quality checks of `prepare` at {size} px (smaller images upscaled, bicubic), and centring:", "",
            _pass_section(groups, (real, synthetic)),
            "Metrics (Cohen's d = (" + groups[0] + " - " + groups[1] + ") / pooled SD; KS: two-sample "
            "Kolmogorov-Smirnov distance):", "",
            comparison_table(comparisons, groups, ks=[ks[c.name] for c in comparisons])]
    if skipped:
        text += [f"Not compared (fewer than 2 measurable images in a set): {', '.join(skipped)}", ""]
    text += ["Metrics: " + "; ".join(f"`{k}` {v}" for k, v in METRICS.items()) + ".", ""]
    report = RealismReport(
        real=real, synthetic=synthetic, comparisons=comparisons, ks=ks, not_compared=skipped, pass_real=pr,
        pass_synthetic=ps, reasons_real=Counter(r for r, p in zip(real["reason"], passing_mask(real)) if not p),
        reasons_synthetic=Counter(r for r, p in zip(synthetic["reason"], passing_mask(synthetic)) if not p),
        headline=headline, table="\n".join(text))
    if out_dir is not None:
        report.files = _write_report(report, os.fspath(out_dir), groups)
    return report


def _write_report(report, out_dir, groups):
    import pandas as pd

    from retina_fast.report.plots import histogram_plot

    os.makedirs(out_dir, exist_ok=True)
    files = {"markdown": os.path.join(out_dir, "realism.md")}
    write_text_atomic(files["markdown"], report.table)
    for g, t in zip(groups, (report.real, report.synthetic)):
        p = os.path.join(out_dir, f"{g}.csv")
        write_text_atomic(p, t.to_csv(index=False))
        files[g] = p
    rows = [dict(c.as_dict(), ks_distance=report.ks[c.name][0], ks_p=report.ks[c.name][1])
            for c in report.comparisons]
    p = os.path.join(out_dir, "comparison.csv")
    write_text_atomic(p, pd.DataFrame(rows).to_csv(index=False))
    files["csv"] = p
    files["histograms"] = [
        histogram_plot({g: t[name] for g, t in zip(groups, (report.real, report.synthetic))},
                       os.path.join(out_dir, f"hist_{name}.png"), title=name, xlabel=METRICS[name])
        for name in METRICS if name not in report.not_compared]
    return files


# ------------------------------------------------------------------------------------- training hook


class RealismMonitor:
    """The realism audit during training: fixed seeds against a fixed, cached sample of training images.

    Parameters
    ----------
    data : path
        The training dataset (folder, .zip or folder of images).
    resolution : int
        The generator's resolution: real images are box-downscaled to it before the checks, so both
        sets are measured as the generator sees the data.
    num_images : int
        Generated images (seeds 0 .. num_images - 1) and real images (evenly spaced over the dataset).
    size : int
        Working size of the checks (`WORK_SIZE`).
    cache : path, optional
        CSV of the real sample's measurements; reused when present and written for the same
        images, resolution and size.
    """

    def __init__(self, data, resolution, *, num_images=64, size=WORK_SIZE, cache=None):
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 2:
            raise ValueError(f"num_images must be an integer >= 2, got {num_images!r}")
        _check_size(size, resolution)
        self.data, self.resolution, self.num_images, self.size = os.fspath(data), int(resolution), num_images, size
        self.cache = None if cache is None else os.fspath(cache)
        self._real = None

    def real(self):
        """The real sample's table, measured once (or read from `cache`)."""
        import pandas as pd

        if self._real is None:
            names = [n for n, _ in list_images(self.data)]
            pick = np.unique(np.linspace(0, len(names) - 1, min(self.num_images, len(names))).round().astype(int))
            names = [names[i] for i in pick]
            stamp = f"# resolution={self.resolution} size={self.size}\n"
            if self.cache and os.path.exists(self.cache):
                with open(self.cache, encoding="utf-8") as f:
                    if f.readline() == stamp:
                        table = pd.read_csv(f, keep_default_na=True)
                        # an all-pass table reads its empty reasons as a float column of NaN
                        table["reason"] = ["" if pd.isna(r) else str(r) for r in table["reason"]]
                        if list(table["image"].astype(str)) == names:
                            self._real = table
            if self._real is None:
                self._real = measure_realism(self.data, names=names, size=self.size, resolution=self.resolution)
                if self.cache:
                    os.makedirs(os.path.dirname(os.path.abspath(self.cache)), exist_ok=True)
                    write_text_atomic(self.cache, stamp + self._real.to_csv(index=False))
        return self._real

    def generated_images(self, G, device="cpu", batch_size=8):
        """(num_images, H, W, 3) uint8 images of `G` for seeds 0 .. num_images - 1 (noise 'const').

        A conditional G gets class ``seed % c_dim``.
        """
        import torch

        from retina_fast.gan.networks import z_from_seeds
        from retina_fast.metrics.fid import images_to_uint8

        seeds = list(range(self.num_images))
        out = []
        with torch.no_grad():
            for lo in range(0, len(seeds), batch_size):
                chunk = seeds[lo:lo + batch_size]
                z = z_from_seeds(chunk, G.z_dim, device=device)
                c = None
                if getattr(G, "c_dim", 0):
                    c = torch.zeros(len(chunk), G.c_dim, device=device)
                    c[torch.arange(len(chunk)), torch.tensor(chunk) % G.c_dim] = 1
                img = G(z, c, noise_mode="const")
                out.append(images_to_uint8(img).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def __call__(self, G, device="cpu", batch_size=8, out_dir=None):
        """Audit `G` now: returns the `RealismReport` (its ``headline`` has `HEADLINE_COLUMNS`),
        written to `out_dir` when given."""
        fake = measure_realism(list(self.generated_images(G, device, batch_size)), size=self.size,
                               names=[f"seed{s:06d}" for s in range(self.num_images)])
        return realism_report(self.real(), fake, out_dir, size=self.size, groups=("training", "generated"))


def add_metric_point(history, kimg, values):
    """Add `values` ({column: value}) at `kimg` to a training run's ``metric_history``
    ([kimg, {column: value}] rows), merging into the last row when it is at the same kimg.

    NaN values (not measurable, e.g. a d with no disc found in any generated image) are left out,
    so their cells in ``fid.csv`` are empty. Returns the dict of values added.
    """
    added = {k: float(v) for k, v in values.items() if math.isfinite(v)}
    if history and round(history[-1][0] * 1000) == round(kimg * 1000):
        history[-1][1].update(added)
    else:
        history.append([kimg, added])
    return added


def audit_filter(root, names, n_needed=None, *, size=WORK_SIZE, resolution=None, workers=1):
    """Audit images `names` of folder/dataset `root` in order until `n_needed` pass the checks.

    Returns
    -------
    kept : list of str
        The first `n_needed` passing names (all passing ones when `n_needed` is None; fewer when
        there are not enough).
    table : pandas.DataFrame
        The `measure_realism` rows of every image audited (images after the last one needed are not
        audited), with a ``kept`` column.
    """
    import pandas as pd

    names = list(names)
    want = len(names) if n_needed is None else int(n_needed)
    kept, parts, pos = [], [], 0
    while len(kept) < want and pos < len(names):
        # audit what is still missing, plus a margin for failures, in order
        step = max(4, 2 * (want - len(kept)))
        t = measure_realism(root, names=names[pos:pos + step], size=size, resolution=resolution, workers=workers)
        pos += step
        ok = passing_mask(t)
        take = [n for n, p in zip(t["image"], ok) if p][:want - len(kept)]
        kept += take
        parts.append(t.assign(kept=t["image"].isin(take)))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*COLUMNS, "kept"])
    return kept, table
