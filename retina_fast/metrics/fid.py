"""Frechet Inception Distance: feature statistics of image sets and generators, and the distance.

    net = load_inception("pt_inception-2015-12-05-6726825d.pth")      # local file, never downloaded
    real = dataset_stats("OUT/dataset.zip", net, cache_dir="fid-cache")
    fake = generator_stats(G_ema, net, num_images=50000)
    print(fid(real, fake))

FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) between Gaussians fitted to the 2048-D
pool3 features of two image sets (Heusel et al. 2017). Means and covariances are accumulated in
float64; the covariance is the unbiased one (divides by n - 1, as numpy.cov, pytorch-fid and
clean-fid; StyleGAN2-ADA divides by n, a relative difference of 1/n).
"""
import hashlib
import json
import os
import zipfile

import numpy as np
import torch

from ..checks import check_int
from ..data.dataset import DatasetReader, list_images
from ..fileio import atomic_write

STATS_FORMAT = "retina_fast.fid_stats/1"


# ----------------------------------------------------------------------------------------------
# The distance


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float >= 0.

    d = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sqrt(sigma1) sigma2 sqrt(sigma1))^1/2)
    (the closed form of Dowson & Landau [1]_; FID [2]_ applies it to Inception features).

    The trace term is computed from two symmetric eigendecompositions in float64: sqrt(sigma1) from
    the eigenpairs of sigma1, then the eigenvalues of the symmetric PSD matrix
    sqrt(sigma1) sigma2 sqrt(sigma1), whose square roots sum to tr((sigma1 sigma2)^1/2). Negative
    eigenvalues of sigma1 are clipped to 0, and eigenvalues of the product below its rounding level
    (largest * D * float64 eps, numpy.linalg.matrix_rank's tolerance) count as 0, so rank-deficient
    covariances (fewer images than feature dimensions) give a finite real result, ~0 for a set with
    itself, with no complex part to discard (unlike
    ``scipy.linalg.sqrtm(sigma1 @ sigma2)``, which needs an eps-offset retry on singular products).

    Parameters
    ----------
    mu1, mu2 : (D,) array_like
        Means.
    sigma1, sigma2 : (D, D) array_like
        Covariances (symmetric positive semi-definite).

    Returns
    -------
    float
        The squared Fréchet distance d (units of the features squared), >= 0.

    References
    ----------
    .. [1] D. C. Dowson and B. V. Landau, "The Fréchet distance between multivariate normal
           distributions", Journal of Multivariate Analysis 12(3), 450-455, 1982.
           https://doi.org/10.1016/0047-259X(82)90077-X
    .. [2] M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler and S. Hochreiter, "GANs Trained by a
           Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", Advances in Neural
           Information Processing Systems 30 (NIPS 2017). https://arxiv.org/abs/1706.08500
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must be vectors of equal length, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}), got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} holds NaN or inf")
    if not (np.all(np.isfinite(mu1)) and np.all(np.isfinite(mu2))):
        raise ValueError("mu1/mu2 hold NaN or inf")
    # sqrt(s1) = B V^T with B = V diag(sqrt(w)), so sqrt(s1) s2 sqrt(s1) = V (B^T s2 B) V^T has the
    # eigenvalues of B^T s2 B: one matrix product fewer than forming sqrt(s1).
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    b = v * np.sqrt(np.clip(w, 0, None))
    m = b.T @ ((s2 + s2.T) / 2) @ b
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    # Eigenvalues below the rounding level of m (numpy.linalg.matrix_rank's tolerance) are zeros of a
    # rank-deficient product: their square roots (~1e-8 * |m|^1/2 each) would otherwise add up.
    tol = max(ev.max(initial=0.0), 0.0) * d * np.finfo(np.float64).eps
    tr_covmean = np.sqrt(ev[ev > tol]).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    return float(max(value, 0.0))


# ----------------------------------------------------------------------------------------------
# Running statistics


class FeatureStats:
    """Running mean and covariance of feature vectors, sums in float64; optionally the vectors too.

    ``FeatureStats()`` starts empty; `append` adds a batch [N, D]. ``FeatureStats(mu, sigma, n)``
    holds given moments (e.g. loaded from a file) and can still be appended to. Sums are taken
    around a shift (the first batch's mean) so that the covariance does not lose digits when the
    mean is large compared with the spread.

    With ``keep_features=True`` every appended vector is kept as well (float32, or float64 when
    given so), for the metrics that need the features themselves (KID, precision/recall), so that
    one feature pass serves them and FID alike. ``FeatureStats(mu, sigma, n, features=X)`` holds
    given moments with the n vectors they came from.

    Attributes
    ----------
    n : int
        Number of feature vectors.
    mu : (D,) float64
    sigma : (D, D) float64
        Unbiased covariance (divides by n - 1); needs n >= 2.
    features : (n, D) float32 or float64
        The feature vectors (only with ``keep_features``); `has_features` says whether they are kept.
    """

    def __init__(self, mu=None, sigma=None, n=None, *, keep_features=False, features=None):
        self.n = 0
        self._shift = self._sum = self._sum2 = None
        self._kept = [] if (keep_features or features is not None) else None
        if mu is None and sigma is None and n is None:
            if features is not None:
                raise ValueError("features given without mu, sigma and n: append them to an empty "
                                 "FeatureStats(keep_features=True) instead")
            return
        if keep_features and features is None:
            raise ValueError("keep_features with given moments needs the features they came from")
        if mu is None or sigma is None or n is None:
            raise ValueError("give all of mu, sigma and n, or none of them")
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
            raise ValueError(f"mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
        if int(n) < 2:
            raise ValueError(f"n must be >= 2 for a covariance, got {n!r}")
        self.n = int(n)
        self._shift = mu.copy()
        self._sum = np.zeros_like(mu)
        self._sum2 = sigma * (self.n - 1)
        if features is not None:
            self._kept.append(_feature_array(features, "features"))
            if self._kept[0].shape != (self.n, mu.size):
                raise ValueError(f"features must be (n, D) = ({self.n}, {mu.size}), got {self._kept[0].shape}")

    @property
    def dim(self):
        return None if self._shift is None else self._shift.size

    @property
    def has_features(self):
        return self._kept is not None

    @property
    def features(self):
        if self._kept is None:
            raise ValueError("these statistics were computed without keep_features=True: the features "
                             "themselves were not kept")
        if len(self._kept) != 1:
            dim = 0 if self.dim is None else self.dim
            self._kept = [np.concatenate(self._kept) if self._kept else np.zeros((0, dim), np.float32)]
        return self._kept[0]

    def append(self, features):
        """Add feature vectors: (N, D) numpy array or torch tensor (any float dtype)."""
        if self._kept is not None:
            kept = _feature_array(features, "features")
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float64).numpy()
        x = np.asarray(features, np.float64)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("features hold NaN or inf")
        if x.shape[0] == 0:
            return self
        if self._shift is None:
            self._shift = x.mean(0)
            self._sum = np.zeros(x.shape[1])
            self._sum2 = np.zeros((x.shape[1], x.shape[1]))
        elif x.shape[1] != self._shift.size:
            raise ValueError(f"features have {x.shape[1]} dimensions, these statistics {self._shift.size}")
        y = x - self._shift
        self._sum += y.sum(0)
        self._sum2 += y.T @ y
        self.n += x.shape[0]
        if self._kept is not None:
            self._kept.append(kept)
        return self

    @property
    def mu(self):
        if self.n == 0:
            raise ValueError("no features appended")
        return self._shift + self._sum / self.n

    @property
    def sigma(self):
        if self.n < 2:
            raise ValueError(f"a covariance needs >= 2 feature vectors, have {self.n}")
        m = self._sum / self.n
        s = (self._sum2 - self.n * np.outer(m, m)) / (self.n - 1)
        return (s + s.T) / 2

    def save(self, path, meta=None):
        """Write mu, sigma, n, the features when kept (and a JSON `meta` dict) to an .npz, atomically
        (`retina_fast.fileio.atomic_write`)."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with atomic_write(path) as f:
            extra = {"features": self.features} if self.has_features else {}
            np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n),
                     format=np.str_(STATS_FORMAT), meta=np.str_(json.dumps(meta or {})), **extra)
        return path

    @classmethod
    def load(cls, path, *, with_features=True):
        """Read statistics written by `save` (or any .npz with mu, sigma, n), with their features when
        the file holds them and `with_features` (False skips reading them: they may be large)."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                features = z["features"] if with_features and "features" in z.files else None
                return cls(z["mu"], z["sigma"], int(z["n"]), features=features)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a FID statistics file: {e}") from None

    def __repr__(self):
        return f"FeatureStats(n={self.n}, dim={self.dim}{', features kept' if self.has_features else ''})"


def _feature_array(features, name):
    """(N, D) features as a numpy copy: float64 stays float64, other floats become float32."""
    if isinstance(features, torch.Tensor):
        t = features.detach()
        t = t if t.dtype in (torch.float32, torch.float64) else t.float()
        x = t.to("cpu").numpy().copy()
    else:
        x = np.array(features, copy=True)
        x = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {x.shape}")
    return x


def fid(stats_a, stats_b):
    """FID [1]_ between two `FeatureStats` (or (mu, sigma) pairs), float >= 0.

    Parameters
    ----------
    stats_a, stats_b : FeatureStats or (mu, sigma)
        Moments of the Inception pool3 features of the two image sets, (D,) and (D, D).

    Returns
    -------
    float
        :func:`frechet_distance` of the two Gaussians, >= 0.

    Raises
    ------
    TypeError
        An argument that is neither `FeatureStats` nor a (mu, sigma) pair.

    References
    ----------
    .. [1] M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler and S. Hochreiter, "GANs Trained by a
           Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", Advances in Neural
           Information Processing Systems 30 (NIPS 2017). https://arxiv.org/abs/1706.08500
    """
    def moments(s, name):
        if isinstance(s, FeatureStats):
            return s.mu, s.sigma
        if isinstance(s, (tuple, list)) and len(s) == 2:
            return s
        raise TypeError(f"{name} must be FeatureStats or (mu, sigma), got {type(s).__name__}")
    return frechet_distance(*moments(stats_a, "stats_a"), *moments(stats_b, "stats_b"))


# ----------------------------------------------------------------------------------------------
# Features of images


def extractor_identity(extractor):
    """String identifying a feature extractor for the statistics cache.

    Its `identity` attribute when it has one (`InceptionV3FID`, `load_inception`'s networks); for
    another torch module, its class name plus a hash of its state_dict; None otherwise (a plain
    callable cannot be identified: pass `extractor_id` to cache with it).
    """
    ident = getattr(extractor, "identity", None)
    if isinstance(ident, str):
        return ident
    if isinstance(extractor, torch.nn.Module):
        h = hashlib.sha256()
        for k, v in extractor.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"{type(extractor).__module__}.{type(extractor).__qualname__}(state={h.hexdigest()[:16]})"
    return None


def _as_nchw_uint8(batch):
    if isinstance(batch, np.ndarray):
        if batch.ndim == 4 and batch.shape[-1] == 3 and batch.shape[1] != 3:
            batch = batch.transpose(0, 3, 1, 2)
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"image batches must be numpy arrays or torch tensors, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"image batches must be [N, 3, H, W] (or numpy [N, H, W, 3]), got {tuple(batch.shape)}")
    if batch.dtype != torch.uint8:
        raise TypeError(f"image batches must be uint8 (0-255), got {batch.dtype}")
    return batch


def _extract(extractor, batch, device):
    with torch.no_grad():
        feats = extractor(batch.to(device))
    if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"extractor must map [N, 3, H, W] images to [N, D] features, got {shape}")
    return feats


def _prepare_extractor(extractor, device):
    if not callable(extractor):
        raise TypeError(f"extractor must be callable (images -> features), got {type(extractor).__name__}")
    if isinstance(extractor, torch.nn.Module):
        extractor.to(device).eval()
    return extractor


def compute_stats(images, extractor, *, batch_size=32, device="cpu", max_items=None, progress=False,
                  keep_features=False):
    """Feature statistics of images.

    Parameters
    ----------
    images : array or iterable of arrays
        uint8 images: one array (numpy [N, H, W, 3] or torch [N, 3, H, W]), split into batches of
        `batch_size`, or an iterable of such batches (used as they come).
    extractor : callable
        Maps uint8 [N, 3, H, W] on `device` to [N, D] features (e.g. `InceptionV3FID`). A torch
        module is moved to `device` and put in eval mode.
    device : str or torch.device
    max_items : int, optional
        Stop after this many images.
    progress : bool
        Show a tqdm bar.
    keep_features : bool
        Keep the feature vectors too (`FeatureStats.features`), for KID and precision/recall.

    Returns
    -------
    FeatureStats
    """
    extractor = _prepare_extractor(extractor, device)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = images
        batches = (arr[i:i + batch_size] for i in range(0, len(arr), batch_size))
        total = len(arr) if max_items is None else min(len(arr), max_items)
    else:
        batches, total = images, max_items
    stats = FeatureStats(keep_features=keep_features)
    from tqdm.auto import tqdm
    with tqdm(total=total, unit="img", desc="features", disable=not progress) as bar:
        for batch in batches:
            batch = _as_nchw_uint8(batch)
            if max_items is not None:
                batch = batch[:max_items - stats.n]
            if len(batch):
                stats.append(_extract(extractor, batch, device))
                bar.update(len(batch))
            if max_items is not None and stats.n >= max_items:
                break
    return stats


class _DatasetImages(torch.utils.data.Dataset):
    """uint8 [3, H, W] tensors of a dataset's images, by index into `names`.

    One `DatasetReader` serves every item, so a zip is opened once per process, not once per image.
    """

    def __init__(self, source, names):
        self.reader, self.names = DatasetReader(source), names

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        a = self.reader.read(self.names[i])
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))), i


class _Collate:
    # A class, not a closure, so DataLoader workers can be spawned as well as forked.
    def __init__(self, source, names):
        self.source, self.names = source, names

    def __call__(self, items):
        shapes = {tuple(x.shape) for x, _ in items}
        if len(shapes) > 1:
            raise ValueError(f"{self.source}: images of one batch differ in size ({sorted(shapes)[:2]}, "
                             f"e.g. {self.names[items[0][1]]}); FID needs equally sized images")
        return torch.stack([x for x, _ in items])


def dataset_fingerprint(source, names=None):
    """sha256 hex of a dataset's content listing: names with sizes and mtimes (folder) or CRCs (zip)."""
    path = os.fspath(source)
    names = [n for n, _ in list_images(path)] if names is None else list(names)
    h = hashlib.sha256()
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for n in names:
                info = z.getinfo(n)
                h.update(f"{n}\0{info.file_size}\0{info.CRC}\n".encode())
    else:
        for n in names:
            st = os.stat(os.path.join(path, n))
            h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _subset(names, max_items):
    if max_items is None or max_items >= len(names):
        return list(names)
    # A seeded random subset (kept in dataset order): the first items of a dataset sorted by label
    # or by source would not be representative.
    keep = np.sort(np.random.RandomState(0).choice(len(names), int(max_items), replace=False))
    return [names[i] for i in keep]


def dataset_stats(source, extractor, *, max_items=None, batch_size=32, device="cpu", cache_dir=None,
                  num_workers=0, extractor_id=None, progress=False, keep_features=False):
    """Feature statistics of a dataset folder, .zip, or folder of images (e.g. generated PNGs).

    Images are listed with `retina_fast.data.dataset.list_images` and read with its `DatasetReader`
    (RGB uint8 at their stored size; the extractor does any resizing). All images of
    the set must have the same size.

    Parameters
    ----------
    source : path
        Dataset folder or .zip (StyleGAN2-ADA layout), or a folder of images.
    extractor : callable
        uint8 [N, 3, H, W] -> [N, D] (e.g. `load_inception(path)`).
    max_items : int, optional
        Use at most this many images: a seeded (seed 0) random subset, kept in dataset order.
    batch_size : int
    device : str or torch.device
    cache_dir : path, optional
        Statistics are cached here as ``fid-stats-<key>.npz``, the key hashing the dataset's
        fingerprint (`dataset_fingerprint`: image names with sizes and mtimes, or zip CRCs), the
        extractor's identity (`extractor_identity`) and `max_items`. A later call with the same key
        loads the file; any change of the images, the extractor or `max_items` computes afresh. With
        `keep_features` the file holds the features as well, and a cached file without them is
        computed afresh (once) and replaced.
    num_workers : int
        DataLoader processes decoding images (0: in this process).
    extractor_id : str, optional
        Identity of the extractor for the cache key, when it has no `identity` attribute and is not
        a torch module.
    progress : bool
        Show a tqdm bar.
    keep_features : bool
        Keep (and cache) the feature vectors too, for KID and precision/recall.

    Returns
    -------
    FeatureStats
    """
    max_items = check_int("max_items", max_items, minimum=1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ValueError(f"source {path!r} does not exist")
    names = _subset([n for n, _ in list_images(path)], max_items)
    if len(names) < 2:
        raise ValueError(f"source {path!r} holds {len(names)} images; FID statistics need >= 2")
    cache_file = None
    if cache_dir is not None:
        ident = extractor_id or extractor_identity(extractor)
        if ident is None:
            raise ValueError("cache_dir given but the extractor has no identity: pass extractor_id")
        key_text = json.dumps({"dataset": dataset_fingerprint(path, names), "extractor": ident,
                               "max_items": max_items}, sort_keys=True)
        key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
        cache_file = os.path.join(os.fspath(cache_dir), f"fid-stats-{key}.npz")
        if os.path.isfile(cache_file):
            try:
                cached = FeatureStats.load(cache_file, with_features=keep_features)
            except ValueError:
                cached = None  # damaged cache file: recompute and overwrite it
            if cached is not None and (cached.has_features or not keep_features):
                return cached
    images = _DatasetImages(path, names)
    loader = torch.utils.data.DataLoader(
        images, batch_size=batch_size, shuffle=False, num_workers=int(num_workers),
        collate_fn=_Collate(path, names))
    try:
        stats = compute_stats(loader, extractor, device=device, max_items=len(names), progress=progress,
                              keep_features=keep_features)
    finally:
        images.reader.close()  # the zip this process opened (workers' copies end with them)
    if stats.n != len(names):
        raise RuntimeError(f"{path}: read {stats.n} of {len(names)} images")
    if cache_file is not None:
        stats.save(cache_file, meta={"source": os.path.abspath(path), "extractor": ident,
                                     "max_items": max_items, "n": stats.n})
    return stats


# ----------------------------------------------------------------------------------------------
# Features of a generator


def images_to_uint8(images):
    """Generator output [N, C, H, W] float in [-1, 1] -> uint8 0-255 (x * 127.5 + 128, clamped), as
    StyleGAN2-ADA. One channel is repeated to RGB."""
    x = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _module_device(module, device):
    if device is not None:
        return torch.device(device)
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def generator_stats(G, extractor, *, num_images=50000, batch_size=32, truncation_psi=1.0, seed=0,
                    noise_mode="random", class_labels=None, device=None, progress=False, keep_features=False):
    """Feature statistics of `num_images` images drawn from generator `G`.

    Latents are drawn from ``np.random.RandomState(seed)`` in order (batch after batch), so the set
    of images does not depend on `batch_size`; with ``noise_mode='random'`` (StyleGAN2-ADA's metric
    setting) the per-layer noise comes from the torch generator seeded with `seed` inside a forked RNG
    state (the caller's RNG is left as it was). The call is made under ``torch.no_grad()``.

    Parameters
    ----------
    G : callable
        ``G(z, c, truncation_psi=..., noise_mode=...)`` -> images [N, C, H, W] float in [-1, 1]
        (`retina_fast.gan.networks.Generator`), with attributes `z_dim` and `c_dim`.
    extractor : callable
        uint8 [N, 3, H, W] -> [N, D].
    num_images, batch_size : int
    truncation_psi : float
    seed : int
    noise_mode : {'random', 'const', 'none'}
    class_labels : sequence of int, optional
        For a conditional G (c_dim > 0): classes to draw the one-hot labels from, uniformly per image
        (e.g. the training set's labels, so classes come in their dataset proportions).
    device : str or torch.device, optional
        Device of G's inputs and of the extractor; default: G's device.
    progress : bool
    keep_features : bool
        Keep the feature vectors too, for KID and precision/recall.

    Returns
    -------
    FeatureStats
    """
    num_images = check_int("num_images", num_images, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2 for a covariance, got {num_images}")
    z_dim, c_dim = int(G.z_dim), int(getattr(G, "c_dim", 0))
    if c_dim > 0 and not class_labels:
        raise ValueError(f"G is conditional (c_dim={c_dim}): pass class_labels to draw labels from")
    device = _module_device(G, device)
    rng = np.random.RandomState(seed)
    labels = None if c_dim == 0 else np.asarray(list(class_labels), np.int64)
    if labels is not None and (labels.min() < 0 or labels.max() >= c_dim):
        raise ValueError(f"class_labels must be in 0..{c_dim - 1}")

    def batches():
        done = 0
        while done < num_images:
            b = min(batch_size, num_images - done)
            z = torch.from_numpy(rng.randn(b, z_dim).astype(np.float32)).to(device)
            c = None
            if labels is not None:
                c = torch.zeros(b, c_dim, device=device)
                c[torch.arange(b), torch.from_numpy(labels[rng.randint(len(labels), size=b)]).to(device)] = 1
            img = G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
            done += b
            yield images_to_uint8(img)

    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(devices[0]):
                torch.cuda.manual_seed(seed)
        return compute_stats(batches(), extractor, device=device, max_items=num_images, progress=progress,
                             keep_features=keep_features)
