"""Precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020).

    real = dataset_stats("OUT/dataset.zip", net, keep_features=True)
    fake = generator_stats(G_ema, net, num_images=50000, keep_features=True)
    print(precision_recall(real.features, fake.features, k=3))    # StyleGAN2-ADA's pr50k3_full

Each feature set approximates its manifold by balls around its vectors, of radius the distance to
the vector's k-th nearest other vector of the same set. Precision is the fraction of fake vectors
inside some real ball (d <= radius), recall the fraction of real vectors inside some fake ball;
density is the mean number of real balls holding a fake vector, divided by k, and coverage the
fraction of real balls holding at least one fake vector (Naeem et al.'s strict d < radius, as their
``prdc`` package). Euclidean distances come from ``|a|^2 + |b|^2 - 2 a.b`` computed in row blocks of
at most `block_bytes`, so 50k x 50k sets never need the full distance matrix in memory; float64 by
default. StyleGAN2-ADA's pr50k3_full uses VGG16 features; these functions take any features (FID's
Inception pool3 features in `retina-fast metrics`).
"""
import numpy as np
import torch

from retina_fast.checks import check_int

BLOCK_BYTES = 256 * 2 ** 20


def squared_distances(a, b, a_sq=None, b_sq=None):
    """Squared Euclidean distances between the rows of `a` (m, D) and `b` (n, D), (m, n), >= 0.

    `a_sq`, `b_sq` are the rows' squared norms when already known.
    """
    a_sq = (a * a).sum(1) if a_sq is None else a_sq
    b_sq = (b * b).sum(1) if b_sq is None else b_sq
    return (a_sq[:, None] + b_sq[None, :] - 2 * (a @ b.T)).clamp_min_(0)


def _rows_per_block(n_cols, itemsize, block_bytes):
    return max(1, int(block_bytes) // max(1, n_cols * itemsize))


def knn_radii(features, k=3, *, device="cpu", dtype=torch.float64, block_bytes=BLOCK_BYTES):
    """Distance from each vector to its k-th nearest other vector of the same set.

    Parameters
    ----------
    features : (N, D) array or tensor, N > k
    k : int
    device : str or torch.device
    dtype : torch.dtype
        Precision of the distance computation (float64 default; float32 is faster on GPUs).
    block_bytes : int
        Bytes of one block of the distance matrix.

    Returns
    -------
    (N,) numpy float64
        Radii, in feature units.
    """
    x = _as_tensor(features, "features", device, dtype)
    k = _check_k(k, len(x), "features")
    return _radii_sq(x, (x * x).sum(1), k, block_bytes).sqrt().cpu().numpy().astype(np.float64)


def _radii_sq(x, x_sq, k, block_bytes):
    rows = _rows_per_block(len(x), x.element_size(), block_bytes)
    out = []
    for i in range(0, len(x), rows):
        d2 = squared_distances(x[i:i + rows], x, x_sq[i:i + rows], x_sq)
        # A vector's distance to itself is 0 exactly, whatever the rounding of the expansion: it is
        # the first of the k + 1 smallest, as in StyleGAN2-ADA's kthvalue(k + 1) and prdc.
        idx = torch.arange(d2.shape[0], device=d2.device)
        d2[idx, idx + i] = 0
        out.append(d2.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def precision_recall(real, fake, k=3, *, device="cpu", dtype=torch.float64, block_bytes=BLOCK_BYTES):
    """Improved precision and recall (Kynkaanniemi et al. 2019), as StyleGAN2-ADA's pr50k3_full.

    Precision and recall of Kynkäänniemi et al. [1]_, as computed by StyleGAN2-ADA [2]_;
    computation as `prdc`.

    Parameters
    ----------
    real, fake : (N, D) array or tensor
        Feature vectors of one extractor, each set with more than k vectors.
    k : int
        Neighbourhood size (pr50k3_full: 3).
    device : str or torch.device
        Where distances are computed.
    dtype : torch.dtype
        Precision of the distances (float64 default).
    block_bytes : int
        Bytes of one block of a distance matrix.

    Returns
    -------
    dict
        ``{'precision': float, 'recall': float}``, both in [0, 1].

    References
    ----------
    .. [1] T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen and T. Aila, "Improved Precision and
           Recall Metric for Assessing Generative Models", Advances in Neural Information Processing
           Systems 32 (NeurIPS 2019). https://arxiv.org/abs/1904.06991
    .. [2] T. Karras, M. Aittala, J. Hellsten, S. Laine, J. Lehtinen and T. Aila, "Training Generative
           Adversarial Networks with Limited Data", Advances in Neural Information Processing
           Systems 33 (NeurIPS 2020), https://arxiv.org/abs/2006.06676; code (StyleGAN2-ADA's
           ``metrics/``): https://github.com/NVlabs/stylegan2-ada-pytorch
    """
    out = prdc(real, fake, k, device=device, dtype=dtype, block_bytes=block_bytes)
    return {"precision": out["precision"], "recall": out["recall"]}


def prdc(real, fake, k=3, *, device="cpu", dtype=torch.float64, block_bytes=BLOCK_BYTES):
    """Precision, recall [1]_, density and coverage [2]_ of `fake` against `real` features.

    precision = mean over fakes of [exists real r: d(f, r) <= rad_real(r)]
    recall    = mean over reals of [exists fake f: d(r, f) <= rad_fake(f)]
    density   = mean over fakes of #{real r: d(f, r) < rad_real(r)} / k
    coverage  = mean over reals of [min over fakes d(r, f) < rad_real(r)]

    with rad the distance to the k-th nearest other vector of the same set (`knn_radii`).
    Precision and recall count a vector on the ball's surface as inside (StyleGAN2-ADA's ``<=``),
    density and coverage as outside (Naeem et al.'s ``<``); the two differ only on exact ties. Such
    ties arise when the sets share vectors (a set against itself: each vector lies exactly on the
    balls it is the k-th neighbour of), and are then decided by the rounding of the distances, here
    as in the reference implementations; precision, recall and coverage of shared vectors are not
    affected (their distance 0 is inside every ball).

    Parameters
    ----------
    real, fake : (N, D) array or tensor
        Feature vectors of one extractor, each set with more than k vectors.
    k : int
        Neighbourhood size (pr50k3_full: 3; Naeem et al. recommend 5 for density and coverage).
    device : str or torch.device
        Where distances are computed.
    dtype : torch.dtype
        Precision of the distances (float64 default).
    block_bytes : int
        Bytes of one block of a distance matrix (rows of the fake or real set against a whole set).

    Returns
    -------
    dict
        'precision', 'recall', 'density', 'coverage': floats (precision, recall, coverage in [0, 1];
        density >= 0, 1 on average for fakes distributed as the reals).

    References
    ----------
    .. [1] T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen and T. Aila, "Improved Precision and
           Recall Metric for Assessing Generative Models", Advances in Neural Information Processing
           Systems 32 (NeurIPS 2019). https://arxiv.org/abs/1904.06991
    .. [2] M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi and J. Yoo, "Reliable Fidelity and Diversity Metrics
           for Generative Models", Proceedings of the 37th International Conference on Machine
           Learning (ICML 2020), PMLR 119. https://arxiv.org/abs/2002.09797
    """
    r = _as_tensor(real, "real", device, dtype)
    f = _as_tensor(fake, "fake", device, dtype)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {r.shape[1]} and {f.shape[1]}")
    k = _check_k(k, len(r), "real")
    _check_k(k, len(f), "fake")
    r_sq, f_sq = (r * r).sum(1), (f * f).sum(1)
    rad2_r, rad2_f = _radii_sq(r, r_sq, k, block_bytes), _radii_sq(f, f_sq, k, block_bytes)
    in_real = torch.zeros(len(f), dtype=torch.bool, device=r.device)     # precision, per fake
    real_balls = torch.zeros(len(f), dtype=torch.int64, device=r.device)  # density, per fake
    in_fake = torch.zeros(len(r), dtype=torch.bool, device=r.device)     # recall, per real
    nearest_fake = torch.full((len(r),), float("inf"), dtype=r.dtype, device=r.device)  # coverage
    rows = _rows_per_block(len(r), r.element_size(), block_bytes)
    # One pass over fake-vs-real blocks serves all four: fake rows reduce along the reals, and each
    # real column accumulates over the blocks of fakes.
    for i in range(0, len(f), rows):
        d2 = squared_distances(f[i:i + rows], r, f_sq[i:i + rows], r_sq)
        in_real[i:i + rows] = (d2 <= rad2_r[None, :]).any(1)
        real_balls[i:i + rows] = (d2 < rad2_r[None, :]).sum(1)
        in_fake |= (d2 <= rad2_f[i:i + rows, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d2.min(0).values)
    return {"precision": float(in_real.double().mean()), "recall": float(in_fake.double().mean()),
            "density": float(real_balls.double().mean() / k),
            "coverage": float((nearest_fake < rad2_r).double().mean())}


def _check_k(k, n, name):
    check_int("k", k, minimum=1)
    if n <= k:
        raise ValueError(f"{name} has {n} feature vectors; k={k} nearest neighbours need more than k")
    return int(k)


def _as_tensor(features, name, device, dtype):
    if not isinstance(features, torch.Tensor):
        features = torch.from_numpy(np.asarray(features))
    if features.ndim != 2:
        raise ValueError(f"{name} features must be (N, D), got shape {tuple(features.shape)}")
    if not features.is_floating_point() or not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} features must be finite floats")
    return features.to(device, dtype)
