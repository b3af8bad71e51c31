"""Real-vs-synthetic comparison of one per-image metric: unpaired t-tests, mean difference, Cohen's d."""
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

__all__ = ["Comparison", "compare", "cohens_d", "comparison_table"]


@dataclass(frozen=True)
class Comparison:
    """Two-group comparison (real vs synthetic) of one metric.

    Attributes
    ----------
    n_real, n_synthetic : int
        Finite values used (NaNs are dropped and counted in ``n_dropped``).
    mean_real, sd_real, mean_synthetic, sd_synthetic : float
        Group means and SDs (ddof=1).
    mean_difference : float
        mean_real - mean_synthetic.
    difference_pct_of_image : float
        100 * |mean_difference| / image_size (NaN when no image_size was given), e.g. the paper's
        "0.43 % of the image size" for vessel pixels.
    difference_pct_of_real : float
        100 * |mean_difference| / |mean_real|.
    difference_pct_of_pooled : float
        100 * |mean_difference| / |mean of all values| (the paper's "3.9 % of the average vessel amount
        of both real and synthesized images").
    t_student, p_student, ci_student : float, float, (float, float)
        Student's t-test (equal variances) and the 95 % CI of mean_difference.
    t_welch, p_welch, ci_welch, df_welch : Welch's t-test (unequal variances), CI and Welch-Satterthwaite df.
    cohens_d : float
        (mean_real - mean_synthetic) / pooled SD (ddof=1 pooled, n1 + n2 - 2 denominator).
    ci_d : (float, float)
        95 % CI of d by the normal approximation, SE = sqrt((n1+n2)/(n1 n2) + d^2 / (2 (n1+n2))).
    """

    name: str
    n_real: int
    n_synthetic: int
    n_dropped: int
    mean_real: float
    sd_real: float
    mean_synthetic: float
    sd_synthetic: float
    mean_difference: float
    difference_pct_of_image: float
    difference_pct_of_real: float
    difference_pct_of_pooled: float
    t_student: float
    p_student: float
    ci_student: tuple
    t_welch: float
    p_welch: float
    df_welch: float
    ci_welch: tuple
    cohens_d: float
    ci_d: tuple
    confidence: float = 0.95

    def as_dict(self):
        d = asdict(self)
        for k in ("ci_student", "ci_welch", "ci_d"):
            lo, hi = d.pop(k)
            d[f"{k}_low"], d[f"{k}_high"] = lo, hi
        return d

    def to_markdown(self):
        """A one-metric Markdown table (see `comparison_table` for several metrics side by side)."""
        return comparison_table([self])


def _clean(values, name):
    a = np.asarray(values, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a[np.isfinite(a)], int(np.count_nonzero(~np.isfinite(a)))


def cohens_d(a, b):
    """Cohen's d = (mean(a) - mean(b)) / pooled SD, pooled with n1 + n2 - 2 degrees of freedom."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    n1, n2 = len(a), len(b)
    pooled = math.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / (n1 + n2 - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else float("nan")


def compare(real_values, synthetic_values, *, name="metric", image_size=None, confidence=0.95):
    """Compare a per-image metric between real and synthetic images.

    Parameters
    ----------
    real_values, synthetic_values : array_like of float
        One value per image; NaNs (images that could not be measured) are dropped.
    name : str
        Metric name, used in tables.
    image_size : float, optional
        Size the difference is also expressed against, e.g. the number of pixels of an image
        (1024 * 1024) for vessel pixel counts.
    confidence : float
        Confidence level of the intervals.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        Fewer than 2 finite values in a group, or a bad `confidence` / `image_size`.
    """
    a, drop_a = _clean(real_values, "real_values")
    b, drop_b = _clean(synthetic_values, "synthetic_values")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{name}: need at least 2 finite values per group, got {len(a)} real and "
                         f"{len(b)} synthetic")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if image_size is not None and not (np.isfinite(image_size) and image_size > 0):
        raise ValueError(f"image_size must be a positive number, got {image_size!r}")
    n1, n2 = len(a), len(b)
    m1, m2 = float(a.mean()), float(b.mean())
    v1, v2 = float(a.var(ddof=1)), float(b.var(ddof=1))
    diff = m1 - m2
    student = stats.ttest_ind(a, b, equal_var=True)
    welch = stats.ttest_ind(a, b, equal_var=False)
    ci_s = student.confidence_interval(confidence)
    ci_w = welch.confidence_interval(confidence)
    d = cohens_d(a, b)
    z = stats.norm.ppf(0.5 + confidence / 2)
    se_d = math.sqrt((n1 + n2) / (n1 * n2) + d * d / (2.0 * (n1 + n2)))
    df_w = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1)) \
        if (v1 + v2) > 0 else float("nan")
    pooled_mean = float(np.concatenate([a, b]).mean())
    return Comparison(
        name=name, n_real=n1, n_synthetic=n2, n_dropped=drop_a + drop_b,
        mean_real=m1, sd_real=math.sqrt(v1), mean_synthetic=m2, sd_synthetic=math.sqrt(v2),
        mean_difference=diff,
        difference_pct_of_image=100.0 * abs(diff) / image_size if image_size else float("nan"),
        difference_pct_of_real=100.0 * abs(diff) / abs(m1) if m1 != 0 else float("nan"),
        difference_pct_of_pooled=100.0 * abs(diff) / abs(pooled_mean) if pooled_mean != 0 else float("nan"),
        t_student=float(student.statistic), p_student=float(student.pvalue),
        ci_student=(float(ci_s.low), float(ci_s.high)),
        t_welch=float(welch.statistic), p_welch=float(welch.pvalue), df_welch=float(df_w),
        ci_welch=(float(ci_w.low), float(ci_w.high)),
        cohens_d=d, ci_d=(d - z * se_d, d + z * se_d), confidence=confidence)


def _fmt(x, digits=4):
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def _p(p):
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(comparisons, groups=("real", "synthetic"), ks=None):
    """Markdown table like the paper's: one row per metric, both groups' mean +- SD, p, d.

    `groups` names the first (``real_values``) and second (``synthetic_values``) group in the header.
    `ks`, one (distance, p) per comparison (e.g. `scipy.stats.ks_2samp`), adds a two-sample
    Kolmogorov-Smirnov column.
    """
    a, b = groups
    if ks is not None and len(ks) != len(comparisons):
        raise ValueError(f"ks has {len(ks)} entries for {len(comparisons)} comparisons")
    lines = [(f"| metric | {a} (mean ± SD) | {b} (mean ± SD) | difference (95 % CI, Welch) "
              f"| % of {a} | p (Student) | p (Welch) | Cohen's d (95 % CI) | n {a} / {b} |"
              + (" KS distance (p) |" if ks is not None else "")),
             "|---|---|---|---|---:|---:|---:|---|---|" + ("---|" if ks is not None else "")]
    for i, c in enumerate(comparisons):
        lines.append(
            f"| {c.name} | {_fmt(c.mean_real)} ± {_fmt(c.sd_real)} | {_fmt(c.mean_synthetic)} ± "
            f"{_fmt(c.sd_synthetic)} | {_fmt(c.mean_difference)} ({_fmt(c.ci_welch[0])}, {_fmt(c.ci_welch[1])}) "
            f"| {_fmt(c.difference_pct_of_real, 3)} | {_p(c.p_student)} | {_p(c.p_welch)} | "
            f"{c.cohens_d:.2f} ({c.ci_d[0]:.2f}, {c.ci_d[1]:.2f}) | {c.n_real} / {c.n_synthetic} |"
            + (f" {ks[i][0]:.3f} ({_p(ks[i][1])}) |" if ks is not None else ""))
    return "\n".join(lines) + "\n"
