"""Binary classification metrics with confidence intervals: AUC (DeLong or bootstrap), Wilson CIs.

Conventions
-----------
- ``y_true``: 1-D array of 0/1 (or bool); 1 is the positive class (ERM), 0 the negative (normal).
- ``y_score``: 1-D array of finite real scores, higher meaning "more positive" (e.g. the softmax
  probability of class 1). A case is predicted positive when ``y_score >= threshold``.
- Sensitivity = TP / (TP + FN) (recall of class 1), specificity = TN / (TN + FP),
  accuracy = (TP + TN) / n.
- AUC is the Mann-Whitney statistic: the probability that a random positive scores higher than a
  random negative, ties counting one half. It equals the trapezoidal area under the ROC curve
  (scikit-learn's ``roc_auc_score``).

AUC confidence intervals
------------------------
'delong' (default): DeLong, DeLong & Clarke-Pearson (1988) variance from the structural components,
computed with the O(n log n) midrank algorithm of Sun & Xu (2014, IEEE Signal Process. Lett. 21:1389);
the interval is AUC +- z * SE, clipped to [0, 1] (as pROC's ``ci.auc(method='delong')``). Needs at
least 2 positives and 2 negatives. `paired_delong` compares two classifiers scored on the same cases
(the correlated-AUC test of the same paper).

'bootstrap': stratified bootstrap (positives and negatives resampled separately, so every replicate
keeps the class counts), percentile interval, SE = standard deviation of the replicates. Replicates are
drawn as multinomial counts and evaluated with a weighted rank sum, vectorised over replicates.

Proportions (accuracy, sensitivity, specificity) get Wilson score intervals (Wilson 1927), which stay
inside [0, 1] and behave at 0 % and 100 % where the Wald interval collapses.
"""
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri

AUC_METHODS = ("delong", "bootstrap")


# --------------------------------------------------------------------------------------- inputs


def _check_alpha(alpha):
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _check_labels(y_true):
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true is empty")
    if y.dtype == bool:
        return y.copy()
    if y.dtype.kind not in "iuf":
        raise TypeError(f"y_true must hold 0/1 integers or booleans, got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"y_true must hold only 0 and 1, got {y[bad][:5].tolist()}")
    return y.astype(bool)


def _check_scores(y_score, n, name="y_score"):
    s = np.asarray(y_score)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if s.dtype.kind not in "iufb":
        raise TypeError(f"{name} must be numeric, got dtype {s.dtype}")
    if s.shape[0] != n:
        raise ValueError(f"{name} has {s.shape[0]} values but y_true has {n}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return s


def _check_inputs(y_true, y_score):
    y = _check_labels(y_true)
    s = _check_scores(y_score, y.shape[0])
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"y_true must contain both classes, got {n_pos} positive and {n_neg} negative")
    return y, s


# ------------------------------------------------------------------------------- proportions


def wilson_ci(successes, n, alpha=0.05):
    """Wilson score confidence interval [1]_ of a binomial proportion (recommended over the Wald
    interval by Newcombe [2]_).

    Parameters
    ----------
    successes : int or array of int
        Number of successes, 0 <= successes <= n.
    n : int or array of int
        Number of trials, >= 1.
    alpha : float
        1 - confidence level (0.05 gives a 95 % interval).

    Returns
    -------
    lo, hi : float (or arrays, broadcast)
        Bounds in [0, 1]; ``lo <= successes / n <= hi``.

    References
    ----------
    .. [1] E. B. Wilson, "Probable Inference, the Law of Succession, and Statistical Inference",
           Journal of the American Statistical Association 22(158), 209-212, 1927.
           https://doi.org/10.1080/01621459.1927.10502953
    .. [2] R. G. Newcombe, "Two-sided confidence intervals for the single proportion: comparison of
           seven methods", Statistics in Medicine 17(8), 857-872, 1998.
    """
    a = _check_alpha(alpha)
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    if not (np.isfinite(k).all() and np.isfinite(m).all()):
        raise ValueError("successes and n must be finite")
    if (m < 1).any() or (m != np.round(m)).any():
        raise ValueError(f"n must be a whole number >= 1, got {np.asarray(n).tolist()}")
    if (k < 0).any() or (k > m).any() or (k != np.round(k)).any():
        raise ValueError(f"successes must be whole numbers in [0, n], got {np.asarray(successes).tolist()}")
    z = ndtri(1.0 - a / 2.0)
    p = k / m
    denom = 1.0 + z * z / m
    centre = (p + z * z / (2.0 * m)) / denom
    half = z / denom * np.sqrt(p * (1.0 - p) / m + z * z / (4.0 * m * m))
    lo = np.clip(centre - half, 0.0, 1.0)
    hi = np.clip(centre + half, 0.0, 1.0)
    # exact bounds at the ends (the formula gives them up to rounding)
    lo = np.where(k == 0, 0.0, lo)
    hi = np.where(k == m, 1.0, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


# ------------------------------------------------------------------------------------- AUC


def _midrank(x):
    """Midranks (1-based, ties share the mean of their positions) of each row of a 2-D array."""
    out = np.empty(x.shape, np.float64)
    for r in range(x.shape[0]):
        _, inv, counts = np.unique(x[r], return_inverse=True, return_counts=True)
        first = np.cumsum(counts) - counts          # 0-based position of each distinct value's first copy
        out[r] = (first + (counts + 1) / 2.0)[inv]
    return out


def _delong(pos, neg, with_cov=True):
    """AUCs and their DeLong covariance for k classifiers (Sun & Xu 2014 fast algorithm).

    pos : (k, m) scores of the m positives, neg : (k, n) scores of the n negatives.
    Returns aucs (k,), cov (k, k) (None unless with_cov), and the structural components v10 (k, m),
    v01 (k, n).
    """
    m, n = pos.shape[1], neg.shape[1]
    tx = _midrank(pos)
    ty = _midrank(neg)
    tz = _midrank(np.concatenate([pos, neg], axis=1))
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    # v10[i]: fraction of negatives below positive i (ties 1/2) = its rank among all minus its rank
    # among positives, over n; v01[j]: fraction of positives above negative j
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    if not with_cov:
        return aucs, None, v10, v01
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return aucs, s10 / m + s01 / n, v10, v01


def delong_variance(y_true, y_score):
    """AUC and its DeLong variance [1]_ (unbiased structural-component covariances, ddof=1),
    computed with the midrank algorithm of Sun & Xu [2]_.

    Parameters
    ----------
    y_true : (n,) array of 0/1
        True classes, at least 2 of each.
    y_score : (n,) array of float
        Scores, higher = more likely positive; finite.

    Returns
    -------
    auc : float
        Mann-Whitney AUC in [0, 1].
    var : float
        DeLong variance of the AUC.

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong and D. L. Clarke-Pearson, "Comparing the Areas under Two or
           More Correlated Receiver Operating Characteristic Curves: A Nonparametric Approach",
           Biometrics 44(3), 837-845, 1988. https://doi.org/10.2307/2531595
    .. [2] X. Sun and W. Xu, "Fast Implementation of DeLong's Algorithm for Comparing the Areas Under
           Correlated Receiver Operating Characteristic Curves", IEEE Signal Processing Letters
           21(11), 1389-1393, 2014. https://doi.org/10.1109/LSP.2014.2337313
    """
    y, s = _check_inputs(y_true, y_score)
    _need_two_each(y)
    aucs, cov, _, _ = _delong(s[y][None], s[~y][None])
    return float(aucs[0]), float(cov[0, 0])


def _need_two_each(y):
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos < 2 or n_neg < 2:
        raise ValueError(f"the DeLong variance needs at least 2 positives and 2 negatives, got {n_pos} "
                         f"and {n_neg}; use method='bootstrap'")


def _weighted_auc(pos, neg, w_pos, w_neg):
    """AUC of each replicate r with case weights w_pos[r] (m,) and w_neg[r] (n,) (e.g. bootstrap counts)."""
    order = np.argsort(neg, kind="stable")
    neg_sorted = neg[order]
    left = np.searchsorted(neg_sorted, pos, side="left")      # negatives strictly below each positive
    right = np.searchsorted(neg_sorted, pos, side="right")    # ... below or equal
    cum = np.zeros((w_neg.shape[0], neg.size + 1))
    np.cumsum(w_neg[:, order], axis=1, out=cum[:, 1:])
    below = cum[:, left]
    equal = cum[:, right] - below
    wins = (w_pos * (below + 0.5 * equal)).sum(axis=1)
    return wins / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


def bootstrap_aucs(y_true, y_score, n_boot=2000, seed=0):
    """AUCs of `n_boot` stratified bootstrap replicates (positives and negatives resampled separately).

    Parameters
    ----------
    y_true : (n,) array of 0/1
    y_score : (n,) array of float
    n_boot : int
        Number of replicates (>= 1).
    seed : int
        Seed of ``numpy.random.default_rng``; the result is a pure function of the arguments.

    Returns
    -------
    (n_boot,) float64 array
    """
    y, s = _check_inputs(y_true, y_score)
    n_boot = int(n_boot)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    pos, neg = s[y], s[~y]
    m, n = pos.size, neg.size
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    # replicates in chunks so that the (chunk, n) weight arrays stay near 32 MB at most
    chunk = max(1, min(n_boot, 4_000_000 // (m + n)))
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        # resampling k cases with replacement = multinomial counts over the k cases
        w_pos = rng.multinomial(m, np.full(m, 1.0 / m), size=r).astype(np.float64)
        w_neg = rng.multinomial(n, np.full(n, 1.0 / n), size=r).astype(np.float64)
        out[start:start + r] = _weighted_auc(pos, neg, w_pos, w_neg)
    return out


def auc_ci(y_true, y_score, method="delong", *, alpha=0.05, n_boot=2000, seed=0):
    """AUC with a (1 - alpha) confidence interval.

    Parameters
    ----------
    y_true : (n,) array of 0/1
        True classes, both present.
    y_score : (n,) array of float
        Scores, higher = more likely positive; finite.
    method : {'delong', 'bootstrap'}
        'delong': AUC +- z SE with the DeLong SE [1]_ (Sun & Xu's algorithm [2]_), clipped to
        [0, 1] (needs >= 2 of each class).
        'bootstrap': stratified bootstrap percentile interval [3]_, SE = SD of the replicate AUCs.
    alpha : float
        1 - confidence level.
    n_boot, seed : int
        Bootstrap replicates and seed (method 'bootstrap' only).

    Returns
    -------
    auc : float
        Mann-Whitney AUC in [0, 1].
    (lo, hi) : (float, float)
        Bounds of the interval, in [0, 1].
    se : float
        Standard error of the AUC.

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong and D. L. Clarke-Pearson, "Comparing the Areas under Two or
           More Correlated Receiver Operating Characteristic Curves: A Nonparametric Approach",
           Biometrics 44(3), 837-845, 1988. https://doi.org/10.2307/2531595
    .. [2] X. Sun and W. Xu, "Fast Implementation of DeLong's Algorithm for Comparing the Areas Under
           Correlated Receiver Operating Characteristic Curves", IEEE Signal Processing Letters
           21(11), 1389-1393, 2014. https://doi.org/10.1109/LSP.2014.2337313
    .. [3] B. Efron and R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993
           (percentile intervals: chapter 13).
    """
    a = _check_alpha(alpha)
    if method not in AUC_METHODS:
        raise ValueError(f"method must be one of {AUC_METHODS}, got {method!r}")
    y, s = _check_inputs(y_true, y_score)
    if method == "delong":
        _need_two_each(y)
        aucs, cov, _, _ = _delong(s[y][None], s[~y][None])
        auc = float(aucs[0])
        se = float(np.sqrt(max(cov[0, 0], 0.0)))
        z = ndtri(1.0 - a / 2.0)
        return auc, (float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))), se
    aucs, _, _, _ = _delong(s[y][None], s[~y][None], with_cov=False)
    auc = float(aucs[0])
    boots = bootstrap_aucs(y, s, n_boot=n_boot, seed=seed)
    lo, hi = np.quantile(boots, [a / 2.0, 1.0 - a / 2.0])
    se = float(boots.std(ddof=1)) if boots.size > 1 else 0.0
    return auc, (float(lo), float(hi)), se


class PairedDelong(NamedTuple):
    """Result of `paired_delong`: AUCs of A and B, z and p of their difference, and its interval."""
    auc_a: float
    auc_b: float
    z: float
    p: float
    diff: float
    ci: tuple


def paired_delong(y_true, score_a, score_b, *, alpha=0.05):
    """DeLong test [1]_ of two correlated AUCs (two classifiers scored on the same cases), with
    the covariance computed by Sun & Xu's algorithm [2]_.

    Parameters
    ----------
    y_true : (n,) array of 0/1
        True classes, at least 2 of each.
    score_a, score_b : (n,) arrays of float
        Scores of classifier A and B for the same cases, in the same order.
    alpha : float
        The interval of the difference is 1 - alpha (default 95 %).

    Returns
    -------
    PairedDelong
        ``auc_a``, ``auc_b``; ``z`` = (auc_a - auc_b) / SE of the difference, 0 when the AUCs are
        equal (e.g. identical scores), +-inf when the SE is 0 but the AUCs differ; ``p``, the
        two-sided p-value of H0: equal AUCs; ``diff`` = auc_a - auc_b and ``ci`` = (lo, hi), its
        Wald interval diff -+ z_(1-alpha/2) SE (not clipped: the difference lies in [-1, 1]).
        Unpacks as ``auc_a, auc_b, z, p, diff, ci``.

    References
    ----------
    .. [1] E. R. DeLong, D. M. DeLong and D. L. Clarke-Pearson, "Comparing the Areas under Two or
           More Correlated Receiver Operating Characteristic Curves: A Nonparametric Approach",
           Biometrics 44(3), 837-845, 1988. https://doi.org/10.2307/2531595
    .. [2] X. Sun and W. Xu, "Fast Implementation of DeLong's Algorithm for Comparing the Areas Under
           Correlated Receiver Operating Characteristic Curves", IEEE Signal Processing Letters
           21(11), 1389-1393, 2014. https://doi.org/10.1109/LSP.2014.2337313
    """
    z_crit = ndtri(1.0 - _check_alpha(alpha) / 2.0)
    y = _check_labels(y_true)
    a = _check_scores(score_a, y.shape[0], "score_a")
    b = _check_scores(score_b, y.shape[0], "score_b")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"y_true must contain both classes, got {n_pos} positive and {y.size - n_pos} negative")
    _need_two_each(y)
    scores = np.stack([a, b])
    aucs, cov, _, _ = _delong(scores[:, y], scores[:, ~y])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    # identical or rank-identical scores give var ~ 0 up to rounding: treat |diff| at rounding level as 0
    if abs(diff) < 1e-12:
        z = 0.0
    elif var <= 1e-15:
        z = float(np.copysign(np.inf, diff))
    else:
        z = diff / np.sqrt(var)
    p = float(2.0 * ndtr(-abs(z)))
    half = z_crit * np.sqrt(max(var, 0.0))
    return PairedDelong(float(aucs[0]), float(aucs[1]), float(z), p, diff, (diff - half, diff + half))


# ------------------------------------------------------------------------------------- ROC


def roc_curve_points(y_true, y_score, drop_intermediate=False):
    """ROC curve: false and true positive rates at every distinct score used as a threshold.

    Parameters
    ----------
    y_true : (n,) array of 0/1
    y_score : (n,) array of float
    drop_intermediate : bool
        Drop points on straight segments between their neighbours (scikit-learn's
        ``roc_curve(drop_intermediate=True)`` rule); the area is unchanged.

    Returns
    -------
    fpr, tpr : (k + 1,) float64 arrays
        Start at (0, 0) and end at (1, 1); non-decreasing.
    thresholds : (k + 1,) float64 array
        Decreasing; point i counts ``y_score >= thresholds[i]`` as positive. ``thresholds[0] = inf``
        (nothing positive), as scikit-learn >= 1.3.
    """
    y, s = _check_inputs(y_true, y_score)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last].astype(np.float64)
    fps = (last + 1) - tps
    thresholds = s_sorted[last]
    if drop_intermediate and tps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps = np.r_[0.0, tps]
    fps = np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


# ------------------------------------------------------------------------------ all together


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one binary classifier on one test set; CIs are (lo, hi) at level 1 - alpha.

    Proportions are fractions in [0, 1] (not percent).
    """
    n: int
    n_pos: int
    n_neg: int
    auc: float
    auc_ci: tuple
    accuracy: float
    accuracy_ci: tuple
    sensitivity: float
    sensitivity_ci: tuple
    specificity: float
    specificity_ci: tuple
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    auc_se: float
    auc_method: str
    alpha: float

    def as_dict(self):
        """Flat dict for a CSV row: each CI ``x_ci`` becomes ``x_ci_lo`` and ``x_ci_hi``."""
        out = {}
        for key, value in asdict(self).items():
            if key.endswith("_ci"):
                out[key + "_lo"], out[key + "_hi"] = value
            else:
                out[key] = value
        return out


def binary_metrics(y_true, y_score, threshold=0.5, *, auc_method="delong", n_boot=2000, seed=0, alpha=0.05):
    """AUC, accuracy, sensitivity and specificity with confidence intervals.

    Parameters
    ----------
    y_true : (n,) array of 0/1 or bool
        True classes (1 = positive, e.g. ERM); both classes must be present.
    y_score : (n,) array of float
        Scores, higher = more positive (e.g. P(class 1)); finite.
    threshold : float
        A case is predicted positive when ``y_score >= threshold``.
    auc_method : {'delong', 'bootstrap'}
        AUC interval, see `auc_ci`.
    n_boot, seed : int
        Bootstrap replicates and seed (auc_method 'bootstrap').
    alpha : float
        1 - confidence level of every interval (0.05: 95 %).

    Returns
    -------
    BinaryMetrics
        Proportion CIs are Wilson score intervals.
    """
    y, s = _check_inputs(y_true, y_score)
    t = float(threshold)
    if not np.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    auc, auc_lo_hi, se = auc_ci(y, s, auc_method, alpha=alpha, n_boot=n_boot, seed=seed)
    pred = s >= t
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    tn = int((~pred & ~y).sum())
    fn = int((~pred & y).sum())
    n, n_pos, n_neg = y.size, tp + fn, tn + fp
    return BinaryMetrics(
        n=n, n_pos=n_pos, n_neg=n_neg, auc=auc, auc_ci=auc_lo_hi,
        accuracy=(tp + tn) / n, accuracy_ci=wilson_ci(tp + tn, n, alpha),
        sensitivity=tp / n_pos, sensitivity_ci=wilson_ci(tp, n_pos, alpha),
        specificity=tn / n_neg, specificity_ci=wilson_ci(tn, n_neg, alpha),
        threshold=t, tp=tp, fp=fp, tn=tn, fn=fn, auc_se=se, auc_method=auc_method, alpha=float(alpha))
