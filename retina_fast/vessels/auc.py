"""Pixel-level AUC of a vessel probability map against a ground-truth mask."""
import numpy as np

__all__ = ["pixel_auc"]


def pixel_auc(prob, truth_mask, valid=None):
    """Area under the ROC curve of `prob` as a pixel classifier of `truth_mask`.

    Rank-based (Mann-Whitney U): the probability that a random vessel pixel scores higher than a
    random background pixel, ties counting one half.

    Parameters
    ----------
    prob : (H, W) float array
    truth_mask : (H, W) bool array
    valid : (H, W) bool array, optional
        Only these pixels are counted (e.g. the FOV).

    Returns
    -------
    float in [0, 1]
    """
    p = np.asarray(prob)
    t = np.asarray(truth_mask)
    if p.shape != t.shape:
        raise ValueError(f"prob {p.shape} and truth_mask {t.shape} must have the same shape")
    if p.dtype.kind not in "uifb":
        raise TypeError(f"prob must be numeric, got {p.dtype}")
    if valid is not None:
        v = np.asarray(valid)
        if v.shape != p.shape:
            raise ValueError(f"valid {v.shape} must have prob's shape {p.shape}")
        p, t = p[v.astype(bool)], t[v.astype(bool)]
    p = p.ravel()
    t = t.ravel().astype(bool)
    if p.dtype.kind == "f" and not np.isfinite(p).all():
        raise ValueError("prob contains NaN or infinite values")
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes: {n_pos} positive and {n_neg} negative pixels")
    # per distinct score: positives and negatives with that score; each positive beats every negative
    # with a lower score and half of those with the same score
    _, inv = np.unique(p, return_inverse=True)
    pos = np.bincount(inv, weights=t, minlength=inv.max() + 1)
    neg = np.bincount(inv, minlength=inv.max() + 1) - pos
    neg_below = np.cumsum(neg) - neg
    u = float(np.dot(pos, neg_below) + 0.5 * np.dot(pos, neg))
    return u / (float(n_pos) * float(n_neg))
