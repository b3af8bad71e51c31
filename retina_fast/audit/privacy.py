"""Privacy audit of a synthetic image set: does the generator copy its training patients?

    report = audit_privacy("prep/dataset", "generated/", "audit-out", heldout="prep-test/dataset")
    print(report.table())

For every synthetic image, its k nearest training images in two spaces:

- 'pixel': 64 x 64 grey (luminance 0.299 R + 0.587 G + 0.114 B, 0-1) after centring the field of
  view (`retina_fast.data.fov.find_fov` + `crop_to_fov`; the whole image, box-resized, where no FOV
  is found), so that a copy shifted by a few pixels or rescaled lands on its original;
- 'inception': the FID's Inception-v3 pool3 features (`retina_fast.metrics`), from a local weights
  file or RANDOM weights (said so in the report), or any extractor given.

A generator trained with x-flips (StyleGAN2-ADA's ``--mirror``, ADA's xflip) may reproduce a
mirrored training image, so by default each synthetic (and held-out) image is also compared in its
left-right mirror image, and the closer orientation is kept (column ``mirrored``).

Three verdicts per space, with j the nearest training image of synthetic image s and r_j the
distance from j to its own nearest other training image:

- authenticity (Alaa et al. 2022): s is *unauthentic* when d(s, j) < r_j, i.e. s would be j's
  nearest neighbour. Between independent draws of one distribution this holds for a large share
  (the share of mutual nearest neighbours), so it is a rate to compare, not a verdict on one image;
- suspected copy: unauthentic AND d(s, j) / r_j below its `quantile` (default 0.05) over the
  training images themselves, each taken as a new draw against the others (`leave_one_out_ratios`):
  an independent draw of the training distribution is flagged with probability about `quantile`
  (measured on phantoms in tests/audit/test_privacy.py), an exact or near copy has d / r ~ 0;
- the data-copying statistic C_T (Meehan et al. 2020), which needs a held-out real set of other
  patients: cells from k-means on the training set; in each cell with at least `min_cell`
  synthetic and held-out images, the distances L to the nearest training image of the cell are
  compared by the Mann-Whitney U statistic (U counts pairs with the synthetic distance larger),
  Z = (U - m n / 2) / sqrt(m n (m + n + 1) / 12); C_T is the average of Z over those cells, weighted by
  the held-out share of each cell. C_T << 0: the synthetic images are closer to the training set
  than new real images are (copying); ~ 0: as close as new real images; >> 0: farther (underfitting).

Exact k-NN with faiss-cpu, or chunked torch matrix products (`retina_fast.audit.knn`).

References
----------
Meehan, C., Chaudhuri, K., Dasgupta, S. (2020). A non-parametric test to detect data-copying in
generative models. AISTATS 2020, PMLR 108:3546-3556.
Alaa, A., van Breugel, B., Saveliev, E., van der Schaar, M. (2022). How faithful is your synthetic
data? Sample-level metrics for evaluating and auditing generative models. ICML 2022, PMLR 162:290-306.
"""
import csv
import io
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..checks import check_int, check_number
from ..data.dataset import DatasetReader, list_images, write_png, write_text_atomic
from ..data.fov import FOVNotFoundError, crop_to_fov, find_fov
from .knn import exact_knn, resolve_backend

PIXEL_SIDE = 64
# Training images taken as new draws for the null distribution of d / r (the copy threshold).
RADIUS_SAMPLE = 5000
# Floor of a distance used as a divisor (duplicate training images are at distance 0).
TINY = 1e-12
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# ----------------------------------------------------------------------------------------------
# Image sources


def manifest_keys(dataset):
    """{image name: patient key} from the manifest.csv `prepare` writes next to a dataset ({} if none)."""
    from ..data.prepare import read_manifest

    path = os.path.join(os.path.dirname(os.path.abspath(os.fspath(dataset))), "manifest.csv")
    if not os.path.isfile(path):
        return {}
    return {r["output"]: r.get("key", "") for r in read_manifest(path) if r.get("output")}


class DatasetImages:
    """Images of a dataset folder, .zip or folder of images, by name, with patient keys."""

    def __init__(self, path, what):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"{what} {path!r}: no such file or folder")
        self.path, self.what = path, what
        self.names = [n for n, _ in list_images(path)]
        if not self.names:
            raise ValueError(f"{what} {path!r} holds no images")
        self.keys = manifest_keys(path)
        self._reader = DatasetReader(path)

    def __len__(self):
        return len(self.names)

    def key(self, i):
        return self.keys.get(self.names[i], "")

    def read(self, i):
        return self._reader.read(self.names[i])

    def batches(self, batch_size):
        for i in range(0, len(self.names), batch_size):
            yield [self.read(j) for j in range(i, min(i + batch_size, len(self.names)))]

    def close(self):
        self._reader.close()


class GeneratorImages:
    """Images of a generator checkpoint for seeds 0..num-1 (noise 'const': a function of the seed)."""

    def __init__(self, checkpoint, num, *, truncation_psi=1.0, class_idx=None, device="cpu"):
        from ..gan.networks import Generator

        self.path, self.what = os.fspath(checkpoint), "synthetic"
        self.G = Generator.from_checkpoint(self.path, key="G_ema", device=device)
        c_dim = int(getattr(self.G, "c_dim", 0))
        if c_dim and class_idx is None:
            raise ValueError(f"synthetic {self.path!r} is a conditional generator: give the class to draw")
        if class_idx is not None and not 0 <= int(class_idx) < max(c_dim, 1):
            raise ValueError(f"class {class_idx} is out of range for a generator with {c_dim} classes")
        self.names = [f"seed{s:06d}" for s in range(int(num))]
        self.keys = {}
        self.psi, self.class_idx, self.device = float(truncation_psi), class_idx, device

    def __len__(self):
        return len(self.names)

    def key(self, i):
        return ""

    def _generate(self, seeds):
        from ..gan.networks import z_from_seeds
        from ..metrics.fid import images_to_uint8

        z = z_from_seeds(seeds, self.G.z_dim, device=self.device)
        c = None
        if self.G.c_dim:
            c = torch.zeros(len(seeds), self.G.c_dim, device=self.device)
            c[:, int(self.class_idx)] = 1
        with torch.no_grad():
            img = images_to_uint8(self.G(z, c, truncation_psi=self.psi, noise_mode="const"))
        return list(img.permute(0, 2, 3, 1).cpu().numpy())

    def read(self, i):
        return self._generate([i])[0]

    def batches(self, batch_size):
        for i in range(0, len(self.names), batch_size):
            yield self._generate(list(range(i, min(i + batch_size, len(self.names)))))

    def close(self):
        pass


# ----------------------------------------------------------------------------------------------
# Feature spaces


def centre_fov(image, side=PIXEL_SIDE):
    """(side x side x 3 uint8 image of the centred field of view, whether a FOV was found).

    `find_fov` + `crop_to_fov` as `prepare` does; an image without a detectable FOV (e.g. a tiny or
    featureless generator output) is box-resized whole."""
    try:
        square, _ = crop_to_fov(image, find_fov(image), size=side)
        return square, True
    except FOVNotFoundError:
        return np.asarray(Image.fromarray(np.asarray(image)).resize((side, side), Image.Resampling.BOX)), False


def pixel_features(images, side=PIXEL_SIDE):
    """Grey-level vectors (N, side * side) float32 in 0-1 of FOV-centred images, and the FOV flags.

    Parameters
    ----------
    images : iterable of (H, W, 3) uint8 arrays
    side : int
        Side of the small image, px.

    Returns
    -------
    features : (N, side * side) float32
    fov_found : (N,) bool
    """
    feats, found = [], []
    for image in images:
        square, ok = centre_fov(image, side)
        feats.append((square.astype(np.float32) @ LUMA).ravel() / 255.0)
        found.append(ok)
    if not feats:
        return np.zeros((0, side * side), np.float32), np.zeros(0, bool)
    return np.stack(feats), np.array(found)


def _mirror(images):
    return [np.ascontiguousarray(a[:, ::-1]) for a in images]


def _extract(extractor, images, device):
    """Extractor features of a list of images; runs of equal size go through in one batch."""
    out, i = [], 0
    while i < len(images):
        j = i + 1
        while j < len(images) and images[j].shape == images[i].shape:
            j += 1
        x = torch.from_numpy(np.stack(images[i:j]).transpose(0, 3, 1, 2).copy()).to(device)
        with torch.no_grad():
            f = extractor(x)
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != j - i:
            raise ValueError("extractor must map uint8 [N, 3, H, W] images to [N, D] features")
        out.append(f.detach().to("cpu", torch.float32).numpy())
        i = j
    return np.concatenate(out)


def image_features(source, extractor=None, *, mirror=False, side=PIXEL_SIDE, batch_size=16, device="cpu",
                   progress=False, desc="features"):
    """Features of every image of `source` in each space, in one read of the images.

    Returns
    -------
    dict
        'pixel' -> (N, side^2) float32; 'inception' -> (N, D) when `extractor` is given; with `mirror`
        also 'pixel_mirror', 'inception_mirror' (the left-right mirrored images); 'fov_found' (N,) bool.
    """
    from tqdm.auto import tqdm

    acc = {}

    def add(name, value):
        acc.setdefault(name, []).append(value)

    with tqdm(total=len(source), unit="img", desc=desc, disable=not progress) as bar:
        for batch in source.batches(batch_size):
            batch = [np.asarray(a) for a in batch]
            for a in batch:
                if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                    raise ValueError(f"{source.what} {source.path!r}: images must be RGB uint8, got {a.dtype} "
                                     f"{a.shape}")
            views = [("", batch)] + ([("_mirror", _mirror(batch))] if mirror else [])
            for suffix, imgs in views:
                f, found = pixel_features(imgs, side)
                add("pixel" + suffix, f)
                if not suffix:
                    add("fov_found", found)
                if extractor is not None:
                    add("inception" + suffix, _extract(extractor, imgs, device))
            bar.update(len(batch))
    return {k: np.concatenate(v) for k, v in acc.items()}


# ----------------------------------------------------------------------------------------------
# Statistics


def oriented_knn(feats, mirrored, reference, k, backend):
    """k-NN of each vector in the orientation (as given or mirrored) whose nearest neighbour is closer.

    Returns (distances (m, k), indices (m, k), mirrored (m,) bool, vectors (m, D) in that orientation)."""
    d, i = exact_knn(feats, reference, k, backend=backend)
    if mirrored is None:
        return d, i, np.zeros(len(d), bool), feats
    dm, im = exact_knn(mirrored, reference, k, backend=backend)
    use = dm[:, 0] < d[:, 0]
    return (np.where(use[:, None], dm, d), np.where(use[:, None], im, i), use,
            np.where(use[:, None], mirrored, feats))


def training_radii(train, rows, backend="auto"):
    """Distance from each training vector `train[rows]` to its nearest *other* training vector."""
    rows = np.asarray(rows, np.int64)
    d, _ = exact_knn(train[rows], train, 1, backend=backend, exclude=rows)
    return d[:, 0]


def leave_one_out_ratios(train, rows, backend="auto"):
    """The null distribution of d(s, j) / r_j: each training vector `train[rows]` taken as a new draw.

    For training vector t, j is its nearest other training vector and r_j the distance from j to its
    nearest training vector other than j and t; the ratio d(t, j) / r_j is what a synthetic sample
    drawn independently from the training distribution would show (against n - 1 training vectors
    instead of n), so its quantiles are the false-positive rates of a threshold on the ratio.

    Returns
    -------
    (len(rows),) float64
    """
    rows = np.asarray(rows, np.int64)
    d, j = exact_knn(train[rows], train, 1, backend=backend, exclude=rows)
    j = j[:, 0]
    dj, ij = exact_knn(train[j], train, 2, backend=backend, exclude=j)
    r = np.where(ij[:, 0] == rows, dj[:, 1], dj[:, 0])
    return d[:, 0] / np.maximum(r, TINY)


def authenticity(nn_distance, nn_radius):
    """Alaa et al. (2022)'s per-sample rule: True where a synthetic sample is *unauthentic*.

    Parameters
    ----------
    nn_distance : (m,) array
        Distance from each synthetic sample to its nearest training sample j.
    nn_radius : (m,) array
        Distance from that j to its own nearest other training sample.

    Returns
    -------
    (m,) bool
        d(s, j) < r_j: the synthetic sample is closer to j than any other training sample is.
    """
    return np.asarray(nn_distance) < np.asarray(nn_radius)


def mann_whitney_z(x, y):
    """(U, Z) of the Mann-Whitney test of `x` against `y`: U counts pairs with x > y (ties 1/2),
    Z = (U - m n / 2) / sqrt(m n (m + n + 1) / 12), the normal approximation without tie correction."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    ranks = rankdata(np.concatenate([x, y]))
    u = ranks[:m].sum() - m * (m + 1) / 2
    return float(u), float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def data_copying_statistic(train, heldout, synthetic, *, n_cells=None, min_cell=20, seed=0, backend="auto"):
    """Meehan et al. (2020)'s C_T data-copying statistic.

    Parameters
    ----------
    train : (n, D) array
        Training-set vectors T.
    heldout : (p, D) array
        Real vectors not trained on (other patients of the same population), P_n.
    synthetic : (m, D) array
        Generated vectors, Q_m.
    n_cells : int, optional
        k-means cells fitted on `train`; default min(50, p // (2 min_cell), m // (2 min_cell)), at least 1.
    min_cell : int
        A cell counts when it holds at least this many held-out and this many synthetic vectors
        (the U test's normal approximation; Meehan et al. skip sparsely populated cells).
    seed : int
        k-means seed.

    Returns
    -------
    dict
        'C_T' (nan when no cell counts), 'cells' (fitted), 'cells_used', 'heldout_share_used' (share of
        the held-out vectors in the cells used), 'per_cell' list of (cell, n_heldout, n_synthetic, U, Z).
    """
    from sklearn.cluster import KMeans

    train, heldout, synthetic = (np.asarray(a, np.float32) for a in (train, heldout, synthetic))
    min_cell = check_int("min_cell", min_cell, 1)
    if n_cells is None:
        n_cells = max(1, min(50, len(heldout) // (2 * min_cell), len(synthetic) // (2 * min_cell)))
    n_cells = check_int("n_cells", n_cells, 1, len(train))   # at most one cell per training vector
    km = KMeans(n_clusters=int(n_cells), n_init=3, random_state=seed).fit(train)
    cell_t, cell_p, cell_q = km.labels_, km.predict(heldout), km.predict(synthetic)
    per_cell, num, den = [], 0.0, 0.0
    for c in range(int(n_cells)):
        t, p, q = train[cell_t == c], heldout[cell_p == c], synthetic[cell_q == c]
        if len(p) < min_cell or len(q) < min_cell or len(t) == 0:
            continue
        lp = exact_knn(p, t, 1, backend=backend)[0][:, 0]
        lq = exact_knn(q, t, 1, backend=backend)[0][:, 0]
        u, z = mann_whitney_z(lq, lp)
        share = len(p) / len(heldout)
        per_cell.append((c, len(p), len(q), u, z))
        num += share * z
        den += share
    return {"C_T": num / den if den else float("nan"), "cells": int(n_cells), "cells_used": len(per_cell),
            "heldout_share_used": den, "per_cell": per_cell}


# ----------------------------------------------------------------------------------------------
# The audit


@dataclass
class SpaceResult:
    """Nearest training images of each synthetic image in one feature space."""

    space: str
    distances: np.ndarray          # (m, k) to the k nearest training images
    indices: np.ndarray            # (m, k) training rows
    mirrored: np.ndarray           # (m,) bool: matched in the mirrored orientation
    radius: np.ndarray             # (m,) nearest-neighbour distance of the nearest training image
    threshold: float               # the `quantile` of d / r for training images taken as new draws
    unauthentic: np.ndarray        # (m,) bool, Alaa et al.
    suspected: np.ndarray          # (m,) bool: unauthentic and d / r < threshold
    copying: dict = field(default_factory=dict)   # data_copying_statistic's result, or {}

    @property
    def ratio(self):
        return self.distances[:, 0] / np.maximum(self.radius, TINY)


@dataclass
class PrivacyReport:
    """What `audit_privacy` found and wrote."""

    spaces: dict
    synthetic_names: list
    train_names: list
    train_keys: list
    n_heldout: int
    quantile: float
    extractor_label: str
    notes: list
    files: dict

    def summary_rows(self):
        rows = []
        for name, s in self.spaces.items():
            m = len(s.distances)
            ct = s.copying.get("C_T", float("nan")) if s.copying else float("nan")
            rows.append({"space": name, "synthetic": m, "training": len(self.train_names),
                         "median_nn_distance": float(np.median(s.distances[:, 0])),
                         "median_ratio": float(np.median(s.ratio)), "ratio_threshold": s.threshold,
                         "unauthentic": int(s.unauthentic.sum()),
                         "unauthentic_share": float(s.unauthentic.mean()),
                         "suspected_copies": int(s.suspected.sum()),
                         "suspected_share": float(s.suspected.mean()),
                         "C_T": ct, "C_T_cells": f"{s.copying['cells_used']}/{s.copying['cells']}"
                         if s.copying else ""})
        return rows

    def table(self):
        """Markdown table of the summary."""
        lines = ["| space | synthetic | training | median NN distance | median d/r | copy threshold d/r (q "
                 f"{self.quantile:g}) | unauthentic (Alaa) | suspected copies | C_T (Meehan) | cells used |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in self.summary_rows():
            ct = "n/a (no --heldout)" if not r["C_T_cells"] else f"{r['C_T']:.2f}"
            lines.append(f"| {r['space']} | {r['synthetic']} | {r['training']} | {r['median_nn_distance']:.4g} | "
                         f"{r['median_ratio']:.3g} | {r['ratio_threshold']:.3g} | "
                         f"{r['unauthentic']} ({100 * r['unauthentic_share']:.1f} %) | "
                         f"{r['suspected_copies']} ({100 * r['suspected_share']:.1f} %) | {ct} | "
                         f"{r['C_T_cells'] or '-'} |")
        return "\n".join(lines)


def _check_out(out, inputs):
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out {out!r} exists and is not a folder")
    for what, path in inputs:
        p = os.path.abspath(os.fspath(path))
        if out == p or out.startswith(p.rstrip(os.sep) + os.sep):
            raise ValueError(f"out {out!r} is inside the {what} {p!r}: the report would be read as images")
    return out


def _make_extractor(extractor, device):
    """(callable or None, label) for the feature space."""
    from ..metrics.inception import InceptionV3FID, load_inception

    if extractor is None:
        return None, "none (pixel space only)"
    if isinstance(extractor, str) and extractor == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = InceptionV3FID()
        return net.to(device), "InceptionV3FID with RANDOM weights (no --inception file): neighbours only"
    if isinstance(extractor, (str, os.PathLike)):
        return load_inception(os.fspath(extractor), device=device), \
            f"Inception-v3 {os.path.basename(os.fspath(extractor))}"
    if not callable(extractor):
        raise ValueError(f"extractor must be None, 'random', a weights file or a callable, got {extractor!r}")
    if isinstance(extractor, torch.nn.Module):
        extractor = extractor.to(device).eval()
        if isinstance(extractor, InceptionV3FID) and extractor.weights_id is None:
            return extractor, f"InceptionV3FID with RANDOM weights, resize {extractor.resize}"
    return extractor, type(extractor).__name__


def audit_privacy(train, synthetic, out, *, heldout=None, extractor="random", k=5, side=PIXEL_SIDE,
                  mirror=True, quantile=0.05, num=None, truncation_psi=1.0, class_idx=None, n_cells=None,
                  min_cell=20, backend="auto", device="cpu", batch_size=16, sheet_pairs=16, seed=0,
                  progress=False):
    """Nearest training images of each synthetic image, copy verdicts and C_T; written under `out`.

    Parameters
    ----------
    train : path
        Training dataset (folder or .zip; `prepare`'s ``OUT/dataset``, whose ``OUT/manifest.csv``
        gives the patient keys) or folder of images.
    synthetic : path
        Folder of generated images, or a generator checkpoint (then `num` images, seeds 0..num-1).
    out : path
        Folder for the report (created); nothing is written anywhere else.
    heldout : path, optional
        Real images of patients not trained on, for C_T; without it C_T is not computed.
    extractor : None, 'random', path or callable
        The feature space beside the pixel space: 'random' = the FID Inception-v3 with random weights
        (seeded; it ranks neighbours but is not a trained feature space), a path = local Inception
        weights (`load_inception`), a callable uint8 [N, 3, H, W] -> [N, D], or None (pixel space only).
    k : int
        Nearest training images listed per synthetic image.
    side : int
        Side of the pixel space's grey images, px.
    mirror : bool
        Also match each synthetic / held-out image mirrored left-right (see the module docstring).
    quantile : float in (0, 1)
        A suspected copy has d / r below this quantile of `leave_one_out_ratios` (on up to 5000
        seeded random training images): about the false-positive rate for independent draws.
    num : int, optional
        Images to generate from a checkpoint (default: as many as training images, at most 10,000).
    truncation_psi, class_idx :
        For a checkpoint: truncation, and the class of a conditional generator.
    n_cells, min_cell :
        C_T's k-means cells and the smallest cell counted (`data_copying_statistic`).
    backend : {'auto', 'faiss', 'torch'}
        k-NN backend (`exact_knn`).
    device : str
        Where the extractor and generator run.
    sheet_pairs : int
        Closest pairs shown per space in ``closest_pairs_<space>.png``.

    Returns
    -------
    PrivacyReport
        Its `files` maps 'summary_md', 'summary_csv', 'neighbours_csv', 'suspected_csv' and
        'sheet_<space>' to the paths written.
    """
    k = check_int("k", k, 1)
    side = check_int("side", side, 8)
    check_number("quantile", quantile, 0, 1, min_open=True, max_open=True)
    sheet_pairs = check_int("sheet_pairs", sheet_pairs, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    num = check_int("num", num, 1, allow_none=True)
    backend = resolve_backend(backend)
    syn_path = os.fspath(synthetic)
    if not os.path.exists(syn_path):
        raise ValueError(f"synthetic {syn_path!r}: no such file or folder")
    if isinstance(extractor, (str, os.PathLike)) and extractor != "random" and not os.path.isfile(extractor):
        raise ValueError(f"inception {os.fspath(extractor)!r}: no such file")
    inputs = [("training set", train), ("synthetic set", synthetic)] + \
        ([("held-out set", heldout)] if heldout is not None else [])
    out = _check_out(out, inputs)
    tr, sy, ho = _open_sources(train, syn_path, heldout, k, num, truncation_psi, class_idx, device)
    net, label = _make_extractor(extractor, device)
    notes = _key_notes(tr, ho)
    os.makedirs(out, exist_ok=True)
    common = dict(side=side, batch_size=batch_size, device=device, progress=progress)
    try:
        ft = image_features(tr, net, mirror=False, desc="training", **common)
        fs = image_features(sy, net, mirror=mirror, desc="synthetic", **common)
        fh = image_features(ho, net, mirror=mirror, desc="held-out", **common) if ho is not None else None
        for what, f in (("training", ft), ("synthetic", fs)):
            lost = int((~f["fov_found"]).sum())
            if lost:
                notes.append(f"{lost} of {len(f['fov_found'])} {what} images without a detectable field of view: "
                             "compared whole in the pixel space")
        rng = np.random.RandomState(seed)
        sample = np.sort(rng.choice(len(tr), min(len(tr), RADIUS_SAMPLE), replace=False))
        spaces = {}
        for space in ("pixel", "inception"):
            if space in ft:
                spaces[space] = _audit_space(space, ft, fs, fh, sample, k=k, quantile=quantile, backend=backend,
                                             n_cells=n_cells, min_cell=min_cell, seed=seed, notes=notes)
        report = PrivacyReport(spaces, list(sy.names), list(tr.names), [tr.key(i) for i in range(len(tr))],
                               0 if ho is None else len(ho), float(quantile), label, notes, {})
        report.files = _write_report(report, out, tr, sy, side=max(128, side), sheet_pairs=sheet_pairs)
    finally:
        for s in (tr, sy, ho):
            if s is not None:
                s.close()
    return report


def _open_sources(train, syn_path, heldout, k, num, truncation_psi, class_idx, device):
    """(training, synthetic, held-out or None) image sources; the synthetic one may be a generator."""
    tr = DatasetImages(train, "train")
    if len(tr) < 2 or len(tr) < k:
        raise ValueError(f"train {tr.path!r} holds {len(tr)} images; the audit needs >= 2 and >= k={k}")
    ho = DatasetImages(heldout, "heldout") if heldout is not None else None
    if os.path.isdir(syn_path):
        sy = DatasetImages(syn_path, "synthetic")
    else:
        sy = GeneratorImages(syn_path, num if num is not None else min(len(tr), 10_000),
                             truncation_psi=truncation_psi, class_idx=class_idx, device=device)
    return tr, sy, ho


def _key_notes(tr, ho):
    """Report notes on the patient keys: unknown, or patients in both the training and held-out set."""
    notes = []
    if not tr.keys:
        notes.append(f"no manifest.csv beside {tr.path}: patient keys unknown")
    if ho is not None and tr.keys and ho.keys:
        shared = (set(tr.keys.values()) & set(ho.keys.values())) - {""}
        if shared:
            notes.append(f"{len(shared)} patients are in both the training and the held-out set: C_T assumes "
                         "other patients")
    return notes


def _audit_space(space, ft, fs, fh, sample, *, k, quantile, backend, n_cells, min_cell, seed, notes):
    """Neighbours, copy verdicts and C_T in one feature space; a note is appended when C_T has no cell."""
    T = ft[space]
    d, idx, mir, syn_or = oriented_knn(fs[space], fs.get(space + "_mirror"), T, k, backend)
    null = leave_one_out_ratios(T, sample, backend)
    threshold = float(np.quantile(null, quantile))
    radius = training_radii(T, idx[:, 0], backend)
    unauth = authenticity(d[:, 0], radius)
    suspected = unauth & (d[:, 0] / np.maximum(radius, TINY) < threshold)
    copying = {}
    if fh is not None:
        _, _, _, ho_or = oriented_knn(fh[space], fh.get(space + "_mirror"), T, 1, backend)
        copying = data_copying_statistic(T, ho_or, syn_or, n_cells=n_cells, min_cell=min_cell, seed=seed,
                                         backend=backend)
        if copying["cells_used"] == 0:
            notes.append(f"{space}: no k-means cell holds {min_cell} held-out and {min_cell} synthetic "
                         "images: C_T not computed (fewer cells: n_cells, or a smaller min_cell)")
    return SpaceResult(space, d, idx, mir, radius, threshold, unauth, suspected, copying)


# ----------------------------------------------------------------------------------------------
# Writing


def _csv_text(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_report(report, out, tr, sy, *, side, sheet_pairs):
    files = {}
    nb_rows, sus_rows = [], []
    for name, s in report.spaces.items():
        for i, syn in enumerate(report.synthetic_names):
            for r in range(s.distances.shape[1]):
                j = int(s.indices[i, r])
                nb_rows.append([syn, name, r + 1, report.train_names[j], report.train_keys[j],
                                f"{s.distances[i, r]:.6g}", int(s.mirrored[i]),
                                f"{s.radius[i]:.6g}" if r == 0 else "", f"{s.ratio[i]:.4f}" if r == 0 else "",
                                int(s.unauthentic[i]) if r == 0 else "", int(s.suspected[i]) if r == 0 else ""])
        for i in np.argsort(s.ratio, kind="stable"):
            if s.suspected[i]:
                j = int(s.indices[i, 0])
                sus_rows.append([report.synthetic_names[i], name, report.train_names[j], report.train_keys[j],
                                 f"{s.distances[i, 0]:.6g}", f"{s.radius[i]:.6g}", f"{s.ratio[i]:.4f}",
                                 f"{s.threshold:.6g}", int(s.mirrored[i])])
    files["neighbours_csv"] = os.path.join(out, "neighbours.csv")
    write_text_atomic(files["neighbours_csv"], _csv_text(
        ["synthetic", "space", "rank", "train_image", "patient_key", "distance", "mirrored", "train_nn_distance",
         "ratio", "unauthentic", "suspected_copy"], nb_rows))
    files["suspected_csv"] = os.path.join(out, "suspected_copies.csv")
    write_text_atomic(files["suspected_csv"], _csv_text(
        ["synthetic", "space", "train_image", "patient_key", "distance", "train_nn_distance", "ratio",
         f"ratio_threshold_q{report.quantile:g}", "mirrored"], sus_rows))
    rows = report.summary_rows()
    files["summary_csv"] = os.path.join(out, "summary.csv")
    write_text_atomic(files["summary_csv"], _csv_text(list(rows[0]), [list(r.values()) for r in rows]))
    md = ["# Privacy audit", "", f"Training images: {len(report.train_names)}; synthetic: "
          f"{len(report.synthetic_names)}; held-out: {report.n_heldout}. Feature space: {report.extractor_label}.",
          "", report.table(), "",
          "Unauthentic (Alaa et al. 2022): closer to its nearest training image than that image's own nearest "
          "training neighbour (d/r < 1, r = that image's own nearest-neighbour distance). Suspected copy: d/r below "
          f"its {report.quantile:g} quantile over training images taken as new draws (leave one out), the expected "
          "false-positive rate for independent draws. C_T (Meehan et al. 2020): << 0 copying, ~ 0 as close as new "
          "real images, > 0 farther.", ""]
    md += [f"- {n}" for n in report.notes]
    files["summary_md"] = os.path.join(out, "summary.md")
    write_text_atomic(files["summary_md"], "\n".join(md) + "\n")
    for name, s in report.spaces.items():
        if sheet_pairs:
            files[f"sheet_{name}"] = os.path.join(out, f"closest_pairs_{name}.png")
            write_png(files[f"sheet_{name}"], _pair_sheet(report, s, tr, sy, side, sheet_pairs))
    return files


def _pair_sheet(report, s, tr, sy, side, n_pairs, per_row=4):
    """The closest pairs (lowest distance / training NN distance) side by side, labelled."""
    order = np.argsort(s.ratio, kind="stable")[:n_pairs]
    label_h, gap = 52, 8
    cols = min(per_row, max(1, len(order)))
    n_rows = max(1, -(-len(order) // cols))
    sheet = Image.new("RGB", (cols * (2 * side + gap) + gap, n_rows * (side + label_h + gap) + gap + 18), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((gap, 4), f"{s.space} space: synthetic (left) | nearest training image (right), closest first",
              fill="black")
    for n, i in enumerate(order):
        j = int(s.indices[i, 0])
        syn = sy.read(int(i))
        if s.mirrored[i]:
            syn = np.ascontiguousarray(syn[:, ::-1])
        x = gap + (n % cols) * (2 * side + gap)
        y = 18 + gap + (n // cols) * (side + label_h + gap)
        sheet.paste(Image.fromarray(centre_fov(syn, side)[0]), (x, y))
        sheet.paste(Image.fromarray(centre_fov(tr.read(j), side)[0]), (x + side, y))
        key = report.train_keys[j] or "(no key)"
        flag = "SUSPECTED COPY" if s.suspected[i] else ("unauthentic" if s.unauthentic[i] else "")
        text = (f"{report.synthetic_names[i][-22:]}{' (mirrored)' if s.mirrored[i] else ''}\n"
                f"patient {key[:20]}\nd {s.distances[i, 0]:.3g}  d/r {s.ratio[i]:.2f} {flag}")
        draw.multiline_text((x, y + side + 2), text, fill="red" if s.suspected[i] else "black", spacing=2)
    return np.asarray(sheet)
