"""GEE fits of the Turing-test analysis: each reader group against the residents.

Models (statsmodels GEE, readers as clusters, residents the reference level, robust sandwich
covariance like SPSS's default): logistic (Binomial, logit link) for accuracy (outcome = correct,
all images), sensitivity (outcome = answered real, real images only) and specificity (outcome =
answered synthetic, synthetic images only); Gaussian with identity link for seconds per image. Each
is fitted with an exchangeable and with an independence working correlation. Estimates are
population-averaged log odds ratios (time: differences in mean seconds) with Wald 95 % CIs.

With few readers per group (the paper had 7-14) the robust sandwich SEs are somewhat small;
``cov_type="bias_reduced"`` (Mancl-DeRouen) is offered for a more conservative check.
"""
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .constants import COV_STRUCTS, GROUPINGS, METRICS, REFERENCE
from .groups import analysable_groups, assign_groups

__all__ = ["GEEFit", "fit_gee", "gee_tables"]

Z95 = 1.959963984540054


def gee_tables(df, groupings=GROUPINGS, *, years_threshold=5, cov_structs=COV_STRUCTS, cov_type="robust"):
    """Every GEE of the analysis: each grouping x metric x working correlation.

    Parameters
    ----------
    df : pandas.DataFrame
        A validated export (``load_export``).
    groupings : sequence of {'specialty', 'experience'}
        A group without readers is left out of its grouping's GEEs (``analysable_groups``, which
        raises ValueError when the residents have none or fewer than two groups have readers).
    years_threshold : int
    cov_structs : sequence of {'exchangeable', 'independence'}
    cov_type : {'robust', 'bias_reduced', 'naive'}

    Returns
    -------
    gee : pandas.DataFrame
        One row per (grouping, cov_struct, metric, non-reference group): ``estimate`` (log odds ratio vs
        residents; time_s: difference of mean seconds), ``se, z, p_value, ci_lo, ci_hi``, and for the
        rates ``odds_ratio, or_ci_lo, or_ci_hi``; ``n_readers, n_obs`` of that group; ``note``.
    estimates : pandas.DataFrame
        Model-based estimate of each group (probability, or mean seconds) with its 95 % CI: the
        paper's Table 2 form.
    """
    rows, est = [], []
    for grouping in groupings:
        _, dropped, _ = analysable_groups(df, grouping, years_threshold)
        # a group without readers has no rows: its level is left out (fit_gee refuses empty levels)
        d0 = df.assign(group=assign_groups(df, grouping, years_threshold).cat.remove_categories(dropped))
        for cs in cov_structs:
            for metric in METRICS:
                d, outcome, family = _metric_data(d0, metric)
                fit = fit_gee(d, outcome, family=family, cov_struct=cs, cov_type=cov_type)
                n_obs = d.dropna(subset=[outcome]).groupby("group", observed=False).size()
                n_rd = d.groupby("group", observed=False)["reader_id"].nunique()
                for r in fit.coefficients.to_dict("records"):
                    row = {"grouping": grouping, "cov_struct": cs, "cov_type": cov_type, "metric": metric,
                           "reference": REFERENCE, **r, "n_readers": int(n_rd[r["group"]]),
                           "n_obs": int(n_obs[r["group"]]), "note": fit.note}
                    if family == "binomial":
                        row.update(odds_ratio=np.exp(r["estimate"]), or_ci_lo=np.exp(r["ci_lo"]),
                                   or_ci_hi=np.exp(r["ci_hi"]))
                    rows.append(row)
                for r in fit.group_estimates.to_dict("records"):
                    est.append({"grouping": grouping, "cov_struct": cs, "metric": metric, **r})
    cols = ["grouping", "cov_struct", "cov_type", "metric", "group", "reference", "n_readers", "n_obs", "estimate",
            "se", "z", "ci_lo", "ci_hi", "p_value", "odds_ratio", "or_ci_lo", "or_ci_hi", "note"]
    return pd.DataFrame(rows).reindex(columns=cols), pd.DataFrame(est)



def _metric_data(df, metric):
    outcome, subset, family = METRICS[metric]
    d = df if subset is None else df[df["truth"] == subset]
    return d, outcome, family



@dataclass
class GEEFit:
    """One GEE fit: coefficients vs the reference group, and the model-based estimate of each group.

    Attributes
    ----------
    coefficients : pandas.DataFrame
        One row per non-reference group: ``group, estimate`` (log odds ratio vs the reference; for the
        Gaussian family the difference of means), ``se, z, p_value, ci_lo, ci_hi`` (Wald 95 %).
    group_estimates : pandas.DataFrame
        One row per group: ``group, estimate`` (probability, or mean for Gaussian) and its Wald 95 % CI
        ``ci_lo, ci_hi`` (computed on the link scale and transformed back: the paper's Table 2 form).
    result : statsmodels GEEResults or None
    note : str
        Convergence / separation warnings, or the error that stopped the fit ('' if none).
    """

    coefficients: pd.DataFrame
    group_estimates: pd.DataFrame
    result: object = None
    note: str = ""


def _cov_struct(name):
    import statsmodels.api as sm
    if name == "exchangeable":
        return sm.cov_struct.Exchangeable()
    if name == "independence":
        return sm.cov_struct.Independence()
    raise ValueError(f"cov_struct must be one of {list(COV_STRUCTS)}, got {name!r}")


def _family(name):
    import statsmodels.api as sm
    if name == "binomial":
        return sm.families.Binomial()
    if name == "gaussian":
        return sm.families.Gaussian()
    raise ValueError(f"family must be 'binomial' or 'gaussian', got {name!r}")


def fit_gee(data, outcome, *, group_col="group", cluster="reader_id", reference=REFERENCE, family="binomial",
            cov_struct="exchangeable", cov_type="robust"):
    """GEE [1]_ of `outcome` on group indicators (treatment coding, `reference` the base level).

    Parameters
    ----------
    data : pandas.DataFrame
        One row per answer with columns `outcome`, `group_col` and `cluster`.
    outcome : str
        0/1 column for ``family='binomial'`` (logit link), numeric for ``'gaussian'`` (identity link).
    group_col : str
        Group labels; a categorical column keeps its category order (levels with no rows are an error).
    cluster : str
        Cluster column (readers).
    reference : str
        Reference level.
    family : {'binomial', 'gaussian'}
    cov_struct : {'exchangeable', 'independence'}
        Working correlation within a cluster.
    cov_type : {'robust', 'bias_reduced', 'naive'}
        statsmodels' covariance of the estimates: the robust sandwich of [1]_ (default), its
        bias-reduced form [2]_ for few clusters, or the model-based one.

    Returns
    -------
    GEEFit
        Equal to ``smf.gee(f"{outcome} ~ C({group_col}, Treatment(reference={reference!r}))", cluster,
        data, family=..., cov_struct=...).fit(cov_type=cov_type)``, tidied.

    References
    ----------
    .. [1] K.-Y. Liang and S. L. Zeger, "Longitudinal data analysis using generalized linear models",
           Biometrika 73(1), 13-22, 1986. https://doi.org/10.1093/biomet/73.1.13
    .. [2] L. A. Mancl and T. A. DeRouen, "A covariance estimator for GEE with improved small-sample
           properties", Biometrics 57(1), 126-134, 2001.
           https://doi.org/10.1111/j.0006-341X.2001.00126.x
    """
    d, levels = _gee_data(data, outcome, group_col, cluster, reference)
    res, note, caught = _fit(d, outcome, group_col, cluster, reference, family, cov_struct, cov_type)
    msgs = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught
                   if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
    # A group whose outcomes are all 0 or all 1 has an infinite log odds: the fit returns a huge estimate
    # with a meaningless sandwich SE (P ~ 0), so its Wald numbers are withheld.
    separated, means = [], None
    if family == "binomial":
        means = d.groupby(group_col, observed=True)[outcome].mean()
        separated = [lv for lv in levels if means.get(lv, 0.5) in (0.0, 1.0)]
        if separated:
            msgs.insert(0, f"group(s) {separated}: every {outcome!r} is 0 or every one is 1 (complete "
                           f"separation): no finite log odds, Wald estimate / CI / P withheld")
    note = "; ".join([note] * bool(note) + msgs)
    if res is None:
        coef_rows = [{"group": lv, **{k: np.nan for k in ("estimate", "se", "z", "p_value", "ci_lo", "ci_hi")}}
                     for lv in levels[1:]]
        est_rows = [{"group": lv, "estimate": np.nan, "ci_lo": np.nan, "ci_hi": np.nan} for lv in levels]
    else:
        coef_rows, est_rows = _tidy(res, levels, reference, family, separated, means)
    return GEEFit(pd.DataFrame(coef_rows), pd.DataFrame(est_rows), res, note)


def _gee_data(data, outcome, group_col, cluster, reference):
    """The rows with an outcome, and the group levels, reference first (empty levels refused)."""
    for c in (outcome, group_col, cluster):
        if c not in data.columns:
            raise ValueError(f"fit_gee: data lacks column {c!r}")
    d = data[[outcome, group_col, cluster]].dropna(subset=[outcome])
    if isinstance(d[group_col].dtype, pd.CategoricalDtype):
        levels = [str(c) for c in d[group_col].cat.categories]
    else:
        levels = sorted(map(str, d[group_col].unique()))
    if reference not in levels:
        raise ValueError(f"fit_gee: reference group {reference!r} is not among the groups {levels}")
    present = set(map(str, d[group_col].unique()))
    empty = [lv for lv in levels if lv not in present]
    if empty:
        raise ValueError(f"fit_gee: group(s) {empty} have no rows with {outcome!r}")
    return d, [reference] + [lv for lv in levels if lv != reference]


def _fit(d, outcome, group_col, cluster, reference, family, cov_struct, cov_type):
    """``(statsmodels result or None, note of the error that stopped the fit, warnings caught)``."""
    import statsmodels.formula.api as smf
    fam = _family(family)
    formula = f"{outcome} ~ C({group_col}, Treatment(reference={reference!r}))"
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = smf.gee(formula, cluster, d, family=fam, cov_struct=_cov_struct(cov_struct)).fit(cov_type=cov_type)
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as e:
            res, note = None, f"fit failed: {type(e).__name__}: {e}"
    return res, note, caught


def _tidy(res, levels, reference, family, separated, means):
    """Coefficient rows (vs the reference) and group-estimate rows of a fitted GEE."""
    coef_rows, est_rows = [], []
    names = list(res.model.exog_names)
    beta, cov = np.asarray(res.params, float), np.asarray(res.cov_params(), float)
    col_of = {}
    for lv in levels[1:]:
        hits = [i for i, n in enumerate(names) if n.endswith(f"[T.{lv}]")]
        if len(hits) != 1:  # the formula API names treatment columns "...[T.level]"
            raise RuntimeError(f"fit_gee: cannot find the coefficient of group {lv!r} in {names}")
        col_of[lv] = hits[0]
    for lv in levels:
        c = np.zeros(len(beta))
        c[0] = 1.0
        if lv != reference:
            c[col_of[lv]] = 1.0
            i = col_of[lv]
            if lv in separated or reference in separated:
                coef_rows.append({"group": lv, **dict.fromkeys(("estimate", "se", "z", "p_value", "ci_lo",
                                                                "ci_hi"), np.nan)})
            else:
                est, se = beta[i], math.sqrt(max(cov[i, i], 0.0))
                z = est / se if se > 0 else np.nan
                coef_rows.append({"group": lv, "estimate": est, "se": se, "z": z,
                                  "p_value": float(res.pvalues.iloc[i]), "ci_lo": est - Z95 * se,
                                  "ci_hi": est + Z95 * se})
        if lv in separated:
            est_rows.append({"group": lv, "estimate": float(means[lv]), "ci_lo": np.nan, "ci_hi": np.nan})
            continue
        eta, se = float(c @ beta), math.sqrt(max(float(c @ cov @ c), 0.0))
        lo, hi = eta - Z95 * se, eta + Z95 * se
        inv = (lambda x: 1.0 / (1.0 + math.exp(-x))) if family == "binomial" else (lambda x: x)
        est_rows.append({"group": lv, "estimate": inv(eta), "ci_lo": inv(lo), "ci_hi": inv(hi)})
    return coef_rows, est_rows
