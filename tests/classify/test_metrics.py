"""retina_fast.classify.metrics: agreement with scikit-learn / statsmodels, DeLong vs brute force, CIs."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score, roc_curve
from statsmodels.stats.proportion import proportion_confint

from retina_fast.classify.metrics import (BinaryMetrics, _delong, _weighted_auc, auc_ci, binary_metrics,
                                          bootstrap_aucs, delong_variance, paired_delong, roc_curve_points,
                                          wilson_ci)


def _binormal(n_pos, n_neg, d, seed, decimals=None):
    """Scores: negatives N(0, 1), positives N(d, 1); true AUC = Phi(d / sqrt(2))."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    s = rng.normal(size=y.size) + d * y
    if decimals is not None:
        s = np.round(s, decimals)      # many ties
    perm = rng.permutation(y.size)
    return y[perm], s[perm]


CASES = [(40, 60, 1.0, 0, None), (25, 75, 0.5, 1, 1), (150, 50, 1.5, 2, 0), (7, 9, -0.3, 3, None),
         (30, 30, 0.0, 4, 0)]


def _brute_delong(y, scores):
    """O(n^2) structural components (DeLong 1988): psi = 1, 1/2, 0 for X > Y, X == Y, X < Y."""
    y = np.asarray(y, bool)
    scores = np.atleast_2d(scores)
    k = scores.shape[0]
    m, n = y.sum(), (~y).sum()
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        x, z = scores[r, y], scores[r, ~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        v10[r] = psi.mean(axis=1)
        v01[r] = psi.mean(axis=0)
        aucs[r] = psi.mean()
    s10 = np.array([[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1) for b in range(k)]
                    for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1) for b in range(k)]
                    for a in range(k)])
    return aucs, s10 / m + s01 / n


# --------------------------------------------------------------------------- scikit-learn agreement


@pytest.mark.parametrize("n_pos,n_neg,d,seed,decimals", CASES)
def test_point_estimates_match_sklearn(n_pos, n_neg, d, seed, decimals):
    y, s = _binormal(n_pos, n_neg, d, seed, decimals)
    for thr in (0.5, 0.0, float(np.median(s))):     # the median is a score value: >= must count it positive
        m = binary_metrics(y, s, thr)
        pred = (s >= thr).astype(int)
        assert m.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert m.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-12)
        assert m.sensitivity == pytest.approx(recall_score(y, pred, pos_label=1), abs=1e-12)
        assert m.specificity == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)
        assert (m.n, m.n_pos, m.n_neg) == (y.size, n_pos, n_neg)
        assert m.tp + m.fn == n_pos and m.tn + m.fp == n_neg


@pytest.mark.parametrize("n_pos,n_neg,d,seed,decimals", CASES)
@pytest.mark.parametrize("drop", [False, True])
def test_roc_points_match_sklearn(n_pos, n_neg, d, seed, decimals, drop):
    y, s = _binormal(n_pos, n_neg, d, seed, decimals)
    fpr, tpr, thr = roc_curve_points(y, s, drop_intermediate=drop)
    f_ref, t_ref, thr_ref = roc_curve(y, s, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, f_ref, atol=1e-12)
    np.testing.assert_allclose(tpr, t_ref, atol=1e-12)
    np.testing.assert_array_equal(thr, thr_ref)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_bool_labels_and_integer_scores():
    y = np.array([True, False, True, False, True])
    s = np.array([3, 1, 2, 2, 5])
    assert binary_metrics(y, s, 2).auc == pytest.approx(roc_auc_score(y, s))


# ------------------------------------------------------------------------------------- DeLong


@pytest.mark.parametrize("n_pos,n_neg,d,seed,decimals", CASES)
def test_delong_variance_matches_brute_force(n_pos, n_neg, d, seed, decimals):
    y, s = _binormal(n_pos, n_neg, d, seed, decimals)
    auc, var = delong_variance(y, s)
    ref_auc, ref_cov = _brute_delong(y, s)
    assert auc == pytest.approx(ref_auc[0], abs=1e-12)
    assert var == pytest.approx(ref_cov[0, 0], rel=1e-10)
    se = auc_ci(y, s)[2]
    assert se == pytest.approx(np.sqrt(ref_cov[0, 0]), rel=1e-10)


def test_delong_paired_covariance_matches_brute_force():
    y, s = _binormal(35, 45, 1.0, 7, 1)
    rng = np.random.default_rng(8)
    s2 = np.round(0.6 * s + rng.normal(size=s.size), 1)        # correlated with s, with ties
    scores = np.stack([s, s2])
    aucs, cov, _, _ = _delong(scores[:, y == 1], scores[:, y == 0])
    ref_aucs, ref_cov = _brute_delong(y, scores)
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-10)
    r = paired_delong(y, s, s2)
    var = ref_cov[0, 0] + ref_cov[1, 1] - 2 * ref_cov[0, 1]
    assert r.z == pytest.approx((ref_aucs[0] - ref_aucs[1]) / np.sqrt(var), rel=1e-9)
    assert r.p == pytest.approx(2 * norm.sf(abs(r.z)), rel=1e-9)
    assert r.diff == pytest.approx(ref_aucs[0] - ref_aucs[1], abs=1e-12)
    half = norm.ppf(0.975) * np.sqrt(var)
    np.testing.assert_allclose(r.ci, (r.diff - half, r.diff + half), rtol=1e-9)
    lo90, hi90 = paired_delong(y, s, s2, alpha=0.1).ci
    assert r.ci[0] < lo90 < r.diff < hi90 < r.ci[1]


def test_paired_delong_interval_excludes_zero_exactly_when_significant():
    rng = np.random.default_rng(21)
    outcomes = set()
    for k in range(60):
        y = (np.arange(80) < 35).astype(int)
        a = y * rng.uniform(0.3, 2.0) + rng.normal(size=80)
        b = y * rng.uniform(0.3, 2.0) + 0.5 * a + rng.normal(size=80)
        r = paired_delong(y, a, b)
        excludes = r.ci[0] > 0 or r.ci[1] < 0
        assert excludes == (r.p < 0.05), (k, r)
        outcomes.add(excludes)
    assert outcomes == {True, False}   # both kinds of case were met


def test_delong_ci_coverage_on_binormal_model():
    # 95 % intervals should cover the true AUC in about 95 % of repeated samples
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))
    hits = 0
    reps = 400
    for seed in range(reps):
        y, s = _binormal(60, 90, d, 1000 + seed)
        _, (lo, hi), _ = auc_ci(y, s)
        hits += lo <= true_auc <= hi
    assert 0.92 * reps <= hits <= 0.975 * reps


def test_paired_delong_identical_and_clearly_better():
    y, s = _binormal(50, 50, 1.0, 11)
    a, b, z, p, diff, ci = paired_delong(y, s, s)
    assert a == b and z == 0.0 and p == 1.0 and diff == 0.0 and ci[0] <= 0.0 <= ci[1]
    # a monotone transform has the same ranks: the same AUC, p = 1
    assert paired_delong(y, s, np.exp(s))[3] == 1.0
    rng = np.random.default_rng(12)
    good = y * 2.0 + rng.normal(size=y.size)          # AUC ~ 0.92
    poor = y * 0.2 + rng.normal(size=y.size)          # AUC ~ 0.56
    a, b, z, p, diff, ci = paired_delong(y, good, poor)
    assert a > b and z > 3 and p < 1e-3 and 0 < ci[0] < diff == a - b < ci[1]
    a2, b2, z2, p2, diff2, ci2 = paired_delong(y, poor, good)
    assert (a2, b2) == (b, a) and z2 == pytest.approx(-z) and p2 == pytest.approx(p)
    np.testing.assert_allclose(ci2, (-ci[1], -ci[0]), atol=1e-12)


# ------------------------------------------------------------------------------------ bootstrap


def test_weighted_auc_equals_auc_of_replicated_sample():
    y, s = _binormal(20, 30, 0.7, 21, 1)
    pos, neg = s[y == 1], s[y == 0]
    rng = np.random.default_rng(22)
    w_pos = rng.integers(0, 4, size=(5, pos.size)).astype(float)
    w_neg = rng.integers(0, 4, size=(5, neg.size)).astype(float)
    got = _weighted_auc(pos, neg, w_pos, w_neg)
    for r in range(5):
        xs = np.repeat(pos, w_pos[r].astype(int))
        zs = np.repeat(neg, w_neg[r].astype(int))
        ref = roc_auc_score(np.r_[np.ones(xs.size), np.zeros(zs.size)], np.r_[xs, zs])
        assert got[r] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_is_seeded_and_close_to_delong_on_large_sample():
    y, s = _binormal(800, 1200, 1.0, 31)
    b1 = bootstrap_aucs(y, s, n_boot=500, seed=5)
    assert np.array_equal(b1, bootstrap_aucs(y, s, n_boot=500, seed=5))
    assert not np.array_equal(b1, bootstrap_aucs(y, s, n_boot=500, seed=6))
    auc, (lo_d, hi_d), se_d = auc_ci(y, s, "delong")
    auc_b, (lo_b, hi_b), se_b = auc_ci(y, s, "bootstrap", n_boot=1000, seed=0)
    assert auc_b == auc
    assert se_b == pytest.approx(se_d, rel=0.12)
    assert lo_b == pytest.approx(lo_d, abs=0.006) and hi_b == pytest.approx(hi_d, abs=0.006)
    assert b1.mean() == pytest.approx(auc, abs=0.003)


def test_bootstrap_needs_only_one_of_each_class_delong_two():
    y = np.array([1, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.95, 0.3])
    auc, (lo, hi), _ = auc_ci(y, s, "bootstrap", n_boot=50)
    assert auc == pytest.approx(2 / 3) and lo <= auc <= hi
    with pytest.raises(ValueError, match="at least 2 positives"):
        auc_ci(y, s, "delong")


# ------------------------------------------------------------------------------------ intervals


def test_wilson_matches_statsmodels():
    for n in (1, 2, 7, 30, 500):
        k = np.arange(n + 1)
        for alpha in (0.05, 0.1, 0.01):
            lo, hi = wilson_ci(k, n, alpha)
            ref_lo, ref_hi = proportion_confint(k, n, alpha=alpha, method="wilson")
            np.testing.assert_allclose(lo, ref_lo, atol=1e-12)
            np.testing.assert_allclose(hi, ref_hi, atol=1e-12)
    lo, hi = wilson_ci(7, 20)
    assert isinstance(lo, float) and lo < 7 / 20 < hi


def test_wilson_closed_form():
    k, n, z = 13, 40, norm.ppf(0.975)
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(k, n) == pytest.approx((c - h, c + h), abs=1e-14)


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_cis_contain_estimate_and_shrink_with_n(method):
    widths = []
    for n in (40, 160, 640):
        y, s = _binormal(n // 2, n // 2, 1.0, 41 + n)
        m = binary_metrics(y, s, 0.5, auc_method=method, n_boot=400, seed=1)
        w = []
        for name in ("auc", "accuracy", "sensitivity", "specificity"):
            lo, hi = getattr(m, name + "_ci")
            assert 0.0 <= lo <= getattr(m, name) <= hi <= 1.0
            w.append(hi - lo)
        widths.append(w)
    widths = np.array(widths)
    # quadrupling n should roughly halve every width
    assert (widths[1:] < 0.75 * widths[:-1]).all()


def test_alpha_changes_width():
    y, s = _binormal(50, 50, 1.0, 51)
    w90 = np.diff(binary_metrics(y, s, alpha=0.10).auc_ci)[0]
    w99 = np.diff(binary_metrics(y, s, alpha=0.01).auc_ci)[0]
    assert w99 > w90 * 1.4


def test_as_dict_is_flat():
    y, s = _binormal(20, 20, 1.0, 61)
    m = binary_metrics(y, s)
    assert isinstance(m, BinaryMetrics)
    d = m.as_dict()
    assert d["auc_ci_lo"] == m.auc_ci[0] and d["specificity_ci_hi"] == m.specificity_ci[1]
    assert all(not isinstance(v, tuple) for v in d.values())
    assert all(type(d[k]) in (int, float, str) for k in d)


# --------------------------------------------------------------------------------------- errors


def test_errors():
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([0.1, 0.8, 0.3, 0.6, 0.9])
    with pytest.raises(ValueError, match="both classes"):
        binary_metrics(np.ones(5, int), s)
    with pytest.raises(ValueError, match="both classes"):
        roc_curve_points(np.zeros(5, int), s)
    with pytest.raises(ValueError, match="y_score has 4 values but y_true has 5"):
        binary_metrics(y, s[:4])
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(y, np.r_[s[:4], np.nan])
    with pytest.raises(ValueError, match="NaN"):
        auc_ci(y, np.r_[np.inf, s[1:]])
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics(np.array([0, 1, 2, 1, 0]), s)
    with pytest.raises(ValueError, match="1-D"):
        binary_metrics(y[None], s[None])
    with pytest.raises(TypeError, match="y_score"):
        binary_metrics(y, np.array(list("abcde")))
    with pytest.raises(ValueError, match="method"):
        auc_ci(y, s, "wald")
    with pytest.raises(ValueError, match="alpha"):
        binary_metrics(y, s, alpha=1.5)
    with pytest.raises(ValueError, match="threshold"):
        binary_metrics(y, s, float("nan"))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_aucs(y, s, n_boot=0)
    with pytest.raises(ValueError, match="score_b has 4"):
        paired_delong(y, s, s[:4])
    with pytest.raises(ValueError, match="alpha"):
        paired_delong(y, s, s, alpha=0)
    with pytest.raises(ValueError, match="successes"):
        wilson_ci(6, 5)
    with pytest.raises(ValueError, match="n must be"):
        wilson_ci(0, 0)
