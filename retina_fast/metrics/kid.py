"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

    real = dataset_stats("OUT/dataset.zip", net, keep_features=True)
    fake = generator_stats(G_ema, net, num_images=50000, keep_features=True)
    print(kid(real.features, fake.features))            # StyleGAN2-ADA's kid50k_full setting

KID is the unbiased estimate of the squared maximum mean discrepancy between two feature sets under
the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (d: the feature dimension). As in
StyleGAN2-ADA's ``kid50k_full`` (and Binkowski et al.'s own code), it is the mean over
`num_subsets` pairs of random subsets of m = min(n_real, n_fake, max_subset_size) vectors each, drawn
without replacement, fake subset first, from ``np.random.RandomState(seed)``. Unlike FID it has an
unbiased estimator, so values from sets of different sizes are comparable; it can come out slightly
negative when the two distributions are close.
"""
import numpy as np
import torch

from retina_fast.checks import check_int


def polynomial_kernel(x, y):
    """Cubic polynomial kernel matrix k(x_i, y_j) = (x_i . y_j / d + 1)^3.

    Parameters
    ----------
    x : (m, D) torch.Tensor
    y : (n, D) torch.Tensor
        Same dtype and device as `x`.

    Returns
    -------
    (m, n) torch.Tensor
    """
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 between samples `x` and `y` under the cubic polynomial kernel, float.

    mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j): the
    estimator of one KID subset (for equal sizes, StyleGAN2-ADA's per-subset term divided by m).

    Parameters
    ----------
    x : (m, D) array or tensor, m >= 2
    y : (n, D) array or tensor, n >= 2
        Computed in float64 on `x`'s device (numpy input: on the CPU).

    Returns
    -------
    float
    """
    x, y = _as_float64(x, "x"), _as_float64(y, "y", like=x)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature dimension, got {x.shape[1]} and {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"MMD^2 needs >= 2 vectors in each set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
              + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)))
    return float(within - 2 * kxy.sum() / (m * n))


def kid(real, fake, *, num_subsets=100, max_subset_size=1000, seed=0, device="cpu"):
    """Kernel Inception Distance [1]_ between two feature sets, as StyleGAN2-ADA's ``kid50k_full`` [2]_.

    For each of `num_subsets` rounds, m = min(len(real), len(fake), max_subset_size) fake and then m
    real vectors are drawn without replacement (``RandomState(seed).choice(n, m, replace=False)``)
    and the unbiased MMD^2 of the two subsets taken (`mmd2_unbiased`); KID is their mean. With sets
    no larger than `max_subset_size` every round uses all vectors, and KID is the MMD^2 of the sets.

    Parameters
    ----------
    real, fake : (N, D) array or tensor
        Feature vectors (e.g. `FeatureStats.features` of the same extractor), N >= 2.
    num_subsets : int
        Rounds (kid50k_full: 100).
    max_subset_size : int
        Largest subset, >= 2 (kid50k_full: 1000).
    seed : int
        Seed of the subset draws.
    device : str or torch.device
        Where the kernel matrices are computed (float64).

    Returns
    -------
    float
        KID (unitless; often reported x 10^3).

    References
    ----------
    .. [1] M. Bińkowski, D. J. Sutherland, M. Arbel and A. Gretton, "Demystifying MMD GANs",
           International Conference on Learning Representations (ICLR 2018).
           https://arxiv.org/abs/1801.01401
    .. [2] T. Karras, M. Aittala, J. Hellsten, S. Laine, J. Lehtinen and T. Aila, "Training Generative
           Adversarial Networks with Limited Data", Advances in Neural Information Processing
           Systems 33 (NeurIPS 2020), https://arxiv.org/abs/2006.06676; code (StyleGAN2-ADA's
           ``metrics/``): https://github.com/NVlabs/stylegan2-ada-pytorch
    """
    for name, v, low in (("num_subsets", num_subsets, 1), ("max_subset_size", max_subset_size, 2)):
        check_int(name, v, minimum=low)
    real, fake = _as_numpy(real, "real"), _as_numpy(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} and {fake.shape[1]}")
    m = min(len(real), len(fake), int(max_subset_size))
    if m < 2:
        raise ValueError(f"KID needs >= 2 feature vectors in each set, got {len(real)} real and {len(fake)} fake")
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(int(num_subsets)):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        total += mmd2_unbiased(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
    return total / int(num_subsets)


def _as_numpy(features, name):
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} features must be finite floats")
    return x


def _as_float64(features, name, like=None):
    if not isinstance(features, torch.Tensor):
        features = torch.from_numpy(_as_numpy(features, name))
    if features.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(features.shape)}")
    device = features.device if like is None else like.device
    return features.to(device, torch.float64)
