"""Statistical analysis of an image Turing test export (Kim et al. 2022, Tables 2-3 and Figure 4).

Definitions (the paper's): accuracy = correct answers / all images; sensitivity = real images called
real / real images; specificity = synthetic images called synthetic / synthetic images. Time per
image is the server-side time (``server_ms``) in seconds.

Readers are grouped two ways (``GROUPINGS``), each compared with the residents:

- ``specialty`` (the paper's "Method 2"): resident, non_retina, retina;
- ``experience`` (the paper's "Method 1", specialty with a 5-year criterion): resident,
  non_retina <5y, non_retina >=5y, retina <5y, retina >=5y. The order and the pooling follow the
  paper's Tables 2-3: its Method 2 non-retina / retina rows are the pools of Method 1 groups 2-3 /
  4-5, and residents are not split.

Models (statsmodels GEE, readers as clusters, residents the reference level, robust sandwich
covariance like SPSS's default): logistic (Binomial, logit link) for accuracy (outcome = correct,
all images), sensitivity (outcome = answered real, real images only) and specificity (outcome =
answered synthetic, synthetic images only); Gaussian with identity link for seconds per image. Each
is fitted with an exchangeable and with an independence working correlation. Estimates are
population-averaged log odds ratios (time: differences in mean seconds) with Wald 95 % CIs.

With few readers per group (the paper had 7-14) the robust sandwich SEs are somewhat small;
``cov_type="bias_reduced"`` (Mancl-DeRouen) is offered for a more conservative check.
"""
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "EXPORT_COLUMNS",
    "GROUPINGS",
    "METRICS",
    "REQUIRED_COLUMNS",
    "TuringAnalysis",
    "add_subcommand",
    "analyze",
    "assign_groups",
    "figure4",
    "fit_gee",
    "gee_tables",
    "group_levels",
    "group_summary",
    "load_export",
    "per_reader_metrics",
    "top_synthetic_images",
]

EXPORT_COLUMNS = ("study_id", "reader_id", "reader_name", "specialty", "years", "position", "image_id", "truth",
                  "answer", "correct", "server_ms", "client_ms", "answered_at", "source")
# the columns the analysis reads; the others are carried along when present
REQUIRED_COLUMNS = ("reader_id", "specialty", "years", "image_id", "truth", "answer", "server_ms")
SPECIALTIES = ("resident", "non_retina", "retina")
ANSWERS = ("real", "synthetic")
GROUPINGS = ("specialty", "experience")
PAPER_METHOD = {"specialty": "Method 2", "experience": "Method 1"}
REFERENCE = "resident"
# metric -> (outcome column, image subset, GEE family)
METRICS = {"accuracy": ("correct", None, "binomial"),
           "sensitivity": ("called_real", "real", "binomial"),
           "specificity": ("called_synthetic", "synthetic", "binomial"),
           "time_s": ("time_s", None, "gaussian")}
RATES = ("accuracy", "sensitivity", "specificity")
COV_STRUCTS = ("exchangeable", "independence")
Z95 = 1.959963984540054


# ----------------------------------------------------------------------------------------------- input

def _read_export_file(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"export file {path!r} does not exist")
    if path.lower().endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"export file {path!r} is not valid JSON: {e}") from None
        if isinstance(data, dict):  # tolerate {"rows": [...]} / {"answers": [...]}: one list of records
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"export file {path!r}: expected a list of answer records (or an object "
                                 f"holding exactly one such list)")
            data = lists[0]
        if not isinstance(data, list):
            raise ValueError(f"export file {path!r}: expected a list of answer records")
        return pd.DataFrame.from_records(data)
    try:
        # ids and names stay text (an all-digit id must keep its leading zeros)
        return pd.read_csv(path, dtype={"image_id": str, "reader_name": str, "source": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"export file {path!r} is not a readable CSV: {e}") from None


def _bad_values(df, col, mask, allowed):
    bad = df.loc[mask, col]
    shown = sorted({repr(v) for v in bad.tolist()})[:5]
    first = int(np.flatnonzero(mask.to_numpy())[0])
    return ValueError(f"column {col!r}: {int(mask.sum())} row(s) with values other than {list(allowed)}: "
                      f"{', '.join(shown)} (first at data row {first})")


def _py(v):
    """numpy scalar -> Python scalar, so that messages show 7, not np.int64(7)."""
    return v.item() if isinstance(v, np.generic) else v


def _labels(df, col, allowed):
    s = df[col].astype("string").str.strip().str.lower()
    bad = s.isna() | ~s.isin(allowed)
    if bad.any():
        raise _bad_values(df, col, bad, allowed)
    return s.astype(str)


def _numeric(df, col, *, allow_nan):
    s = pd.to_numeric(df[col], errors="coerce")
    bad = (s.isna() & df[col].notna()) | (s < 0)
    if not allow_nan:
        bad |= s.isna()
    if bad.any():
        raise _bad_values(df, col, bad, ["a number >= 0"])
    return s.astype(float)


def _parse_bool(df, col):
    s = df[col]
    if s.dtype == bool:
        return s.astype(int)
    t = s.astype("string").str.strip().str.lower()
    mapping = {"true": 1, "1": 1, "1.0": 1, "yes": 1, "false": 0, "0": 0, "0.0": 0, "no": 0}
    out = t.map(mapping)
    bad = out.isna()
    if bad.any():
        raise _bad_values(df, col, bad, ["true", "false"])
    return out.astype(int)


def load_export(export):
    """Read and validate a Turing-test export (one row per answer).

    Parameters
    ----------
    export : str, os.PathLike or pandas.DataFrame
        The app's export (``GET /api/admin/studies/{id}/export``): a ``.csv`` file, a ``.json`` file
        (a list of records), or a DataFrame with the same columns (``EXPORT_COLUMNS``; at least
        ``REQUIRED_COLUMNS``).

    Returns
    -------
    pandas.DataFrame
        A validated copy: ``truth``, ``answer`` and ``specialty`` lower-cased and stripped, plus integer
        columns ``correct``, ``called_real``, ``called_synthetic`` and float ``time_s``
        (``server_ms / 1000``, NaN where the time is missing).

    Raises
    ------
    ValueError
        Naming the file or the column: missing file or columns, values of ``truth`` / ``answer`` other
        than 'real' / 'synthetic', unknown ``specialty``, negative or non-numeric ``years`` /
        ``server_ms``, a ``correct`` column that disagrees with ``truth == answer``, two answers of a
        reader to one image, a reader with two specialties or years, an image with two truths.
    """
    if isinstance(export, pd.DataFrame):
        df = export.copy()
        what = "export DataFrame"
    elif isinstance(export, (str, os.PathLike)):
        df = _read_export_file(export)
        what = f"export file {os.fspath(export)!r}"
    else:
        raise TypeError(f"export must be a path or a pandas DataFrame, got {type(export).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing} (has {list(df.columns)})")
    if len(df) == 0:
        raise ValueError(f"{what} has no answers")
    df = df.reset_index(drop=True)
    df["truth"] = _labels(df, "truth", ANSWERS)
    df["answer"] = _labels(df, "answer", ANSWERS)
    df["specialty"] = _labels(df, "specialty", SPECIALTIES)
    df["years"] = _numeric(df, "years", allow_nan=False)
    df["server_ms"] = _numeric(df, "server_ms", allow_nan=True)
    if df["reader_id"].isna().any() or df["image_id"].isna().any():
        col = "reader_id" if df["reader_id"].isna().any() else "image_id"
        raise _bad_values(df, col, df[col].isna(), ["a non-empty id"])
    correct = (df["truth"] == df["answer"]).astype(int)
    if "correct" in df.columns:
        given = _parse_bool(df, "correct")
        if (given != correct).any():
            raise _bad_values(df, "correct", given != correct, ["truth == answer"])
    df["correct"] = correct
    df["called_real"] = (df["answer"] == "real").astype(int)
    df["called_synthetic"] = 1 - df["called_real"]
    df["time_s"] = df["server_ms"] / 1000.0
    dup = df.duplicated(["reader_id", "image_id"])
    if dup.any():
        r = df.loc[dup].iloc[0]
        raise ValueError(f"{what}: reader_id {_py(r['reader_id'])!r} answered image_id {_py(r['image_id'])!r} more than "
                         f"once ({int(dup.sum())} duplicate row(s))")
    for col in ("specialty", "years"):
        n = df.groupby("reader_id")[col].nunique()
        if (n > 1).any():
            raise ValueError(f"column {col!r}: reader_id {_py(n.index[n > 1][0])!r} has more than one value")
    n = df.groupby("image_id")["truth"].nunique()
    if (n > 1).any():
        raise ValueError(f"column 'truth': image_id {_py(n.index[n > 1][0])!r} is both real and synthetic")
    return df


# ------------------------------------------------------------------------------------------- groups

def group_levels(grouping, years_threshold=5):
    """Group labels of a grouping, reference (residents) first, in the paper's order.

    Parameters
    ----------
    grouping : {'specialty', 'experience'}
    years_threshold : int
        Years in practice separating the experience subgroups (``<T y`` vs ``>=T y``).

    Returns
    -------
    list of str
    """
    if grouping == "specialty":
        return list(SPECIALTIES)
    if grouping == "experience":
        t = _fmt_years(years_threshold)
        return [REFERENCE, f"non_retina <{t}y", f"non_retina >={t}y", f"retina <{t}y", f"retina >={t}y"]
    raise ValueError(f"grouping must be one of {list(GROUPINGS)}, got {grouping!r}")


def _fmt_years(t):
    return f"{int(t)}" if float(t).is_integer() else f"{t:g}"


def assign_groups(df, grouping, years_threshold=5):
    """Group label of each row (reader) of `df` (columns ``specialty`` and ``years``).

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with a validated ``specialty`` and numeric ``years`` (years in practice).
    grouping : {'specialty', 'experience'}
    years_threshold : int
        Readers with ``years < years_threshold`` form the ``<T y`` subgroups; residents are not split.

    Returns
    -------
    pandas.Series
        Categorical with the categories of ``group_levels`` (residents first).
    """
    levels = group_levels(grouping, years_threshold)
    if grouping == "specialty":
        lab = df["specialty"].astype(str)
    else:
        t = _fmt_years(years_threshold)
        split = np.where(df["years"].to_numpy(float) < years_threshold, f" <{t}y", f" >={t}y")
        lab = pd.Series(np.where(df["specialty"] == REFERENCE, REFERENCE, df["specialty"].astype(str) + split),
                        index=df.index)
    return pd.Series(pd.Categorical(lab, categories=levels), index=df.index, name="group")


def _require_groups(readers, grouping, years_threshold):
    counts = assign_groups(readers, grouping, years_threshold).value_counts()
    empty = [g for g in group_levels(grouping, years_threshold) if counts.get(g, 0) == 0]
    if empty:
        raise ValueError(f"grouping {grouping!r}: group(s) {empty} have no readers (readers per group: "
                         f"{ {k: int(v) for k, v in counts.items()} }); every group, residents (the "
                         f"reference) included, needs at least one reader, or leave this grouping out")


# ---------------------------------------------------------------------------------------- per reader

def per_reader_metrics(df, years_threshold=5):
    """Accuracy, sensitivity, specificity and time per image of each reader.

    Parameters
    ----------
    df : pandas.DataFrame
        A validated export (``load_export``).
    years_threshold : int
        For the ``group_experience`` column.

    Returns
    -------
    pandas.DataFrame
        One row per reader (sorted by ``reader_id``): ``reader_id, reader_name, specialty, years,
        group_specialty, group_experience, n_images, n_real, n_synthetic, accuracy, sensitivity``
        (real called real / real), ``specificity`` (synthetic called synthetic / synthetic),
        ``mean_time_s, median_time_s`` (NaN where no time was recorded). Rates are fractions (0-1);
        a rate with no image of its kind is NaN.
    """
    g = df.groupby("reader_id", sort=True)
    real = df["truth"] == "real"
    out = pd.DataFrame({
        "reader_name": g["reader_name"].first() if "reader_name" in df.columns else g["reader_id"].first().astype(str),
        "specialty": g["specialty"].first(),
        "years": g["years"].first(),
        "n_images": g.size(),
        "n_real": real.groupby(df["reader_id"]).sum(),
        "n_synthetic": (~real).groupby(df["reader_id"]).sum(),
        "accuracy": g["correct"].mean(),
        "sensitivity": df.loc[real].groupby("reader_id")["called_real"].mean(),
        "specificity": df.loc[~real].groupby("reader_id")["called_synthetic"].mean(),
        "mean_time_s": g["time_s"].mean(),
        "median_time_s": g["time_s"].median(),
    })
    out.index.name = "reader_id"
    out = out.reset_index()
    for grouping in GROUPINGS:
        out.insert(4 if grouping == "specialty" else 5, f"group_{grouping}",
                   assign_groups(out, grouping, years_threshold).astype(str))
    out[["n_real", "n_synthetic"]] = out[["n_real", "n_synthetic"]].astype(int)
    return out


def group_summary(per_reader, grouping, years_threshold=5):
    """Reader-level mean and SD of each metric per group (the paper's Figure 4 values).

    Parameters
    ----------
    per_reader : pandas.DataFrame
        From ``per_reader_metrics``.
    grouping : {'specialty', 'experience'}
    years_threshold : int

    Returns
    -------
    pandas.DataFrame
        One row per group (paper order) and a last row ``all readers``: ``grouping, group, n_readers``
        and ``<metric>_mean``, ``<metric>_sd`` (SD across readers, ddof=1; NaN for one reader) for
        accuracy, sensitivity, specificity (fractions) and time_s (mean seconds per image).
    """
    groups = assign_groups(per_reader, grouping, years_threshold)
    cols = list(RATES) + ["mean_time_s"]
    rows = []
    parts = [(str(lv), per_reader[groups == lv]) for lv in groups.cat.categories] + [("all readers", per_reader)]
    for name, part in parts:
        row = {"grouping": grouping, "group": name, "n_readers": len(part)}
        for c in cols:
            key = "time_s" if c == "mean_time_s" else c
            v = part[c].dropna()
            row[f"{key}_mean"] = v.mean() if len(v) else np.nan
            row[f"{key}_sd"] = v.std(ddof=1) if len(v) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- GEE

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
    """GEE of `outcome` on group indicators (treatment coding, `reference` the base level).

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
        statsmodels' covariance of the estimates (robust sandwich by default).

    Returns
    -------
    GEEFit
        Equal to ``smf.gee(f"{outcome} ~ C({group_col}, Treatment(reference={reference!r}))", cluster,
        data, family=..., cov_struct=...).fit(cov_type=cov_type)``, tidied.
    """
    import statsmodels.formula.api as smf
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
    levels = [reference] + [lv for lv in levels if lv != reference]
    fam = _family(family)
    formula = f"{outcome} ~ C({group_col}, Treatment(reference={reference!r}))"
    note = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = smf.gee(formula, cluster, d, family=fam, cov_struct=_cov_struct(cov_struct)).fit(cov_type=cov_type)
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, FloatingPointError) as e:
            res, note = None, f"fit failed: {type(e).__name__}: {e}"
    msgs = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught
                   if not issubclass(w.category, (DeprecationWarning, FutureWarning))})
    # A group whose outcomes are all 0 or all 1 has an infinite log odds: the fit returns a huge estimate
    # with a meaningless sandwich SE (P ~ 0), so its Wald numbers are withheld.
    separated = []
    if family == "binomial":
        means = d.groupby(group_col, observed=True)[outcome].mean()
        separated = [lv for lv in levels if means.get(lv, 0.5) in (0.0, 1.0)]
        if separated:
            msgs.insert(0, f"group(s) {separated}: every {outcome!r} is 0 or every one is 1 (complete "
                           f"separation): no finite log odds, Wald estimate / CI / P withheld")
    note = "; ".join([note] * bool(note) + msgs)
    coef_rows, est_rows = [], []
    if res is not None:
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
    else:
        coef_rows = [{"group": lv, **{k: np.nan for k in ("estimate", "se", "z", "p_value", "ci_lo", "ci_hi")}}
                     for lv in levels[1:]]
        est_rows = [{"group": lv, "estimate": np.nan, "ci_lo": np.nan, "ci_hi": np.nan} for lv in levels]
    return GEEFit(pd.DataFrame(coef_rows), pd.DataFrame(est_rows), res, note)


def _metric_data(df, metric):
    outcome, subset, family = METRICS[metric]
    d = df if subset is None else df[df["truth"] == subset]
    return d, outcome, family


def gee_tables(df, groupings=GROUPINGS, *, years_threshold=5, cov_structs=COV_STRUCTS, cov_type="robust"):
    """Every GEE of the analysis: each grouping x metric x working correlation.

    Parameters
    ----------
    df : pandas.DataFrame
        A validated export (``load_export``).
    groupings : sequence of {'specialty', 'experience'}
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
        d0 = df.assign(group=assign_groups(df, grouping, years_threshold))
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


# ------------------------------------------------------------------------------------------- images

def top_synthetic_images(df, k=3):
    """Synthetic images most often judged real and most often judged synthetic (the paper's Fig. 2 picks).

    Parameters
    ----------
    df : pandas.DataFrame
        A validated export.
    k : int
        How many of each; images tied with the k-th are kept too (so a list may be longer than k).

    Returns
    -------
    judged_real, judged_synthetic : pandas.DataFrame
        Columns ``rank, image_id, source`` (admin-only; '' if the export has none), ``position``
        (first display position, or NaN), ``n_readers, n_called_real, pct_called_real``.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = df[df["truth"] == "synthetic"]
    if s.empty:
        empty = pd.DataFrame(columns=["rank", "image_id", "source", "position", "n_readers", "n_called_real",
                                      "pct_called_real"])
        return empty, empty.copy()
    g = s.groupby("image_id", sort=False)
    t = pd.DataFrame({"source": g["source"].first() if "source" in s.columns else "",
                      "position": g["position"].min() if "position" in s.columns else np.nan,
                      "n_readers": g.size(), "n_called_real": g["called_real"].sum()})
    t["pct_called_real"] = 100.0 * t["n_called_real"] / t["n_readers"]
    t = t.reset_index()
    out = []
    for ascending in (False, True):
        r = t["pct_called_real"].rank(method="min", ascending=ascending)
        part = t.assign(rank=r.astype(int))[r <= k].sort_values(["rank", "position", "image_id"])
        out.append(part[["rank", "image_id", "source", "position", "n_readers", "n_called_real",
                         "pct_called_real"]].reset_index(drop=True))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ figure

def figure4(summaries, path):
    """Grouped bar chart like the paper's Figure 4: per-group mean +- SD of each metric.

    Parameters
    ----------
    summaries : pandas.DataFrame
        ``group_summary`` rows of one or more groupings (the ``all readers`` rows are skipped).
    path : str or os.PathLike
        PNG to write (atomically).

    Returns
    -------
    str
        `path`. One row of panels per grouping: left, accuracy / sensitivity / specificity (%) with SD
        error bars and the values printed; right, seconds per image.
    """
    from retina_fast.report.plots import _pyplot, save_figure
    plt = _pyplot()
    groupings = list(dict.fromkeys(summaries["grouping"]))
    fig, axes = plt.subplots(len(groupings), 2, figsize=(13, 4.2 * len(groupings)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3]})
    colors = {"accuracy": "#4C72B0", "sensitivity": "#55A868", "specificity": "#C44E52"}
    for row, grouping in enumerate(groupings):
        s = summaries[(summaries["grouping"] == grouping) & (summaries["group"] != "all readers")]
        x = np.arange(len(s))
        ax = axes[row, 0]
        w = 0.26
        for j, m in enumerate(RATES):
            mean, sd = 100 * s[f"{m}_mean"].to_numpy(float), 100 * s[f"{m}_sd"].to_numpy(float)
            bars = ax.bar(x + (j - 1) * w, mean, w, yerr=np.nan_to_num(sd), capsize=3, label=m,
                          color=colors[m], error_kw={"elinewidth": 0.8})
            for b, mu, sg in zip(bars, mean, sd):
                txt = f"{mu:.1f}" + ("" if np.isnan(sg) else f"\n±{sg:.1f}")
                ax.text(b.get_x() + b.get_width() / 2, 2, txt, ha="center", va="bottom", fontsize=6.5,
                        color="white")
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(s["group"], s["n_readers"])], fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("% (mean ± SD over readers)")
        ax.set_title(f"{grouping} ({PAPER_METHOD[grouping]}): accuracy, sensitivity, specificity")
        ax.legend(fontsize=8, loc="upper left", ncol=3)
        ax = axes[row, 1]
        mean, sd = s["time_s_mean"].to_numpy(float), s["time_s_sd"].to_numpy(float)
        bars = ax.bar(x, mean, 0.6, yerr=np.nan_to_num(sd), capsize=3, color="#8172B2")
        for b, mu, sg in zip(bars, mean, sd):
            ax.text(b.get_x() + b.get_width() / 2, mu + (0 if np.isnan(sg) else sg), f"{mu:.1f}"
                    + ("" if np.isnan(sg) else f"±{sg:.1f}"), ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(x, list(s["group"]), fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("seconds per image")
        ax.set_title("elapsed time per image")
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ tables

def _fmt_p(p):
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _pm(mean, sd, scale=100.0, digits=1):
    if not np.isfinite(mean):
        return "n/a"
    return f"{scale * mean:.{digits}f}" + ("" if not np.isfinite(sd) else f" ± {scale * sd:.{digits}f}")


def _summary_markdown(summaries, estimates):
    out = ["## Reader performance by group (paper Table 2 / Figure 4)\n\n",
           ("Mean ± SD over readers; accuracy, sensitivity (real images called real) and specificity "
            "(synthetic images called synthetic) in %, time in seconds per image.\n")]
    for grouping in dict.fromkeys(summaries["grouping"]):
        s = summaries[summaries["grouping"] == grouping]
        out.append(f"\n### By {grouping} ({PAPER_METHOD[grouping]})\n\n")
        out.append(_md_table(["Group", "Readers", "Accuracy %", "Sensitivity %", "Specificity %", "Time (s)"],
                             [[r.group, r.n_readers, _pm(r.accuracy_mean, r.accuracy_sd),
                               _pm(r.sensitivity_mean, r.sensitivity_sd), _pm(r.specificity_mean, r.specificity_sd),
                               _pm(r.time_s_mean, r.time_s_sd, 1.0, 2)] for r in s.itertuples()]))
        e = estimates[(estimates["grouping"] == grouping) & (estimates["cov_struct"] == "exchangeable")]
        if len(e):
            out.append("\nGEE estimate (95 % CI), exchangeable working correlation, as in the paper's Table 2:\n\n")
            rows = []
            for g in dict.fromkeys(e["group"]):
                cell = []
                for m in RATES:
                    r = e[(e["group"] == g) & (e["metric"] == m)].iloc[0]
                    if not np.isfinite(r.estimate):
                        cell.append("n/a")
                    elif not np.isfinite(r.ci_lo):
                        cell.append(f"{r.estimate:.2f} (no CI)")
                    else:
                        cell.append(f"{r.estimate:.2f} ({r.ci_lo:.2f}–{r.ci_hi:.2f})")
                rows.append([g] + cell)
            out.append(_md_table(["Group", "Accuracy (95% CI)", "Sensitivity (95% CI)", "Specificity (95% CI)"],
                                 rows))
    return "".join(out)


def _gee_markdown(gee, groupings, years_threshold):
    out = ["## Logistic GEE vs residents: P values (paper Table 3)\n\n",
           ("Readers are the clusters; accuracy, sensitivity, specificity: logistic GEE; elapsed time: "
            "identity-link (Gaussian) GEE on seconds per image. Estimates (log odds ratios / seconds) and "
            "95 % CIs are in gee.csv. With only group indicators in the model and every reader answering every "
            "image, the exchangeable and independence fits coincide exactly (same estimating equations); "
            "they differ when readers answered different numbers of images.\n")]
    cov_type = gee["cov_type"].iloc[0] if len(gee) else "robust"
    for grouping in groupings:
        for cs in dict.fromkeys(gee["cov_struct"]):
            g = gee[(gee["grouping"] == grouping) & (gee["cov_struct"] == cs)]
            out.append(f"\n### By {grouping} ({PAPER_METHOD[grouping]}), {cs} working correlation, "
                       f"{cov_type} SE\n\n")
            rows = [[REFERENCE, "Ref", "Ref", "Ref", "Ref"]]
            for lv in group_levels(grouping, years_threshold)[1:]:
                cells = []
                for m in METRICS:
                    r = g[(g["group"] == lv) & (g["metric"] == m)]
                    cells.append(_fmt_p(r["p_value"].iloc[0]) if len(r) else "n/a")
                rows.append([lv] + cells)
            out.append(_md_table(["Group", "Accuracy P", "Sensitivity P", "Specificity P", "Elapsed time P"], rows))
            notes = sorted({n for n in g["note"] if isinstance(n, str) and n})
            if notes:
                out.append("\nNotes: " + " | ".join(notes) + "\n")
    return "".join(out)


def _top_markdown(judged_real, judged_synthetic, k):
    out = [f"## Synthetic images most often judged real / synthetic (top {k}, ties kept)\n\n",
           "`source` is the original file name: admin-only, do not share with readers.\n"]
    for title, t in (("Most often judged REAL (readers fooled)", judged_real),
                     ("Most often judged SYNTHETIC (readers not fooled)", judged_synthetic)):
        out.append(f"\n### {title}\n\n")
        out.append(_md_table(["Rank", "image_id", "source", "Readers", "Called real", "% called real"],
                             [[r.rank, r.image_id, r.source, r.n_readers, r.n_called_real,
                               f"{r.pct_called_real:.1f}"] for r in t.itertuples()]))
    return "".join(out)


# ------------------------------------------------------------------------------------------ analyze

@dataclass
class TuringAnalysis:
    """Everything ``analyze`` computed.

    Attributes
    ----------
    export : pandas.DataFrame
        The validated export.
    per_reader : pandas.DataFrame
        ``per_reader_metrics``.
    group_summary : pandas.DataFrame
        ``group_summary`` of each grouping, concatenated.
    gee : pandas.DataFrame
        ``gee_tables`` coefficients (both working correlations).
    gee_estimates : pandas.DataFrame
        Model-based group estimates with 95 % CIs.
    top_judged_real, top_judged_synthetic : pandas.DataFrame
        ``top_synthetic_images``.
    markdown : str
        All tables as Markdown (what the command prints).
    files : list of str
        Files written (empty without ``out_dir``).
    """

    export: pd.DataFrame
    per_reader: pd.DataFrame
    group_summary: pd.DataFrame
    gee: pd.DataFrame
    gee_estimates: pd.DataFrame
    top_judged_real: pd.DataFrame
    top_judged_synthetic: pd.DataFrame
    markdown: str
    files: list = field(default_factory=list)

    def p_table(self, grouping, cov_struct="exchangeable"):
        """Table 3 shape: rows = non-reference groups, columns = metrics, values = P."""
        g = self.gee[(self.gee["grouping"] == grouping) & (self.gee["cov_struct"] == cov_struct)]
        return g.pivot(index="group", columns="metric", values="p_value").reindex(
            index=list(dict.fromkeys(g["group"])), columns=list(METRICS))


def _csv_text(df):
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


def analyze(export, out_dir=None, *, groupings=GROUPINGS, years_threshold=5, top_k=3, cov_type="robust"):
    """Full analysis of a Turing-test export: per-reader metrics, group summaries, GEEs, top images, plot.

    Parameters
    ----------
    export : str, os.PathLike or pandas.DataFrame
        The export (CSV/JSON file or DataFrame), see ``load_export``.
    out_dir : str or os.PathLike, optional
        Write ``per_reader.csv, group_summary.csv, group_summary.md, gee.csv, gee.md, figure4.png,
        top_images.md`` here (each atomically: temp name, then rename; nothing is written unless the
        whole analysis succeeded).
    groupings : sequence of {'specialty', 'experience'}
        Reader groupings to analyse (default both; every group of each needs at least one reader).
    years_threshold : int
        Years in practice separating the experience subgroups (the paper: 5).
    top_k : int
        Length of the top-image lists.
    cov_type : {'robust', 'bias_reduced', 'naive'}
        Covariance of the GEE estimates.

    Returns
    -------
    TuringAnalysis
    """
    groupings = tuple(groupings)
    if not groupings or any(g not in GROUPINGS for g in groupings):
        raise ValueError(f"groupings must be a non-empty subset of {list(GROUPINGS)}, got {list(groupings)}")
    if cov_type not in ("robust", "bias_reduced", "naive"):
        raise ValueError(f"cov_type must be 'robust', 'bias_reduced' or 'naive', got {cov_type!r}")
    df = load_export(export)
    readers = df.groupby("reader_id")[["specialty", "years"]].first()
    for grouping in groupings:
        _require_groups(readers, grouping, years_threshold)
    per_reader = per_reader_metrics(df, years_threshold)
    summaries = pd.concat([group_summary(per_reader, g, years_threshold) for g in groupings], ignore_index=True)
    gee, estimates = gee_tables(df, groupings, years_threshold=years_threshold, cov_type=cov_type)
    judged_real, judged_syn = top_synthetic_images(df, top_k)

    n_img = df["image_id"].nunique()
    incomplete = int((per_reader["n_images"] < n_img).sum())
    head = (f"# Image Turing test analysis\n\n{len(per_reader)} readers, {n_img} images "
            f"({df.loc[df.truth == 'real', 'image_id'].nunique()} real, "
            f"{df.loc[df.truth == 'synthetic', 'image_id'].nunique()} synthetic), {len(df)} answers"
            + (f"; {incomplete} reader(s) did not answer every image" if incomplete else "") + ". "
            f"All readers: accuracy {_pm(per_reader.accuracy.mean(), per_reader.accuracy.std())} %, "
            f"sensitivity {_pm(per_reader.sensitivity.mean(), per_reader.sensitivity.std())} %, "
            f"specificity {_pm(per_reader.specificity.mean(), per_reader.specificity.std())} % "
            f"(mean ± SD over readers).\n\n")
    md_summary = _summary_markdown(summaries, estimates)
    md_gee = _gee_markdown(gee, groupings, years_threshold)
    md_top = _top_markdown(judged_real, judged_syn, top_k)
    result = TuringAnalysis(df, per_reader, summaries, gee, estimates, judged_real, judged_syn,
                            head + md_summary + "\n" + md_gee + "\n" + md_top)
    if out_dir is not None:
        result.files = _write_outputs(result, os.fspath(out_dir), md_summary, md_gee, md_top)
    return result


def _write_outputs(result, out_dir, md_summary, md_gee, md_top):
    from retina_fast.data.dataset import write_text_atomic
    os.makedirs(out_dir, exist_ok=True)
    summary_csv = result.group_summary.merge(
        result.gee_estimates[result.gee_estimates["cov_struct"] == "exchangeable"]
        .pivot_table(index=["grouping", "group"], columns="metric", values=["estimate", "ci_lo", "ci_hi"])
        .pipe(lambda t: t.set_axis([f"{m}_gee_{v}" for v, m in t.columns], axis=1)).reset_index(),
        on=["grouping", "group"], how="left")
    gee_cols = [f"{m}_gee_{v}" for m in METRICS for v in ("estimate", "ci_lo", "ci_hi")]
    summary_csv = summary_csv.reindex(columns=list(result.group_summary.columns) + gee_cols)
    texts = {"per_reader.csv": _csv_text(result.per_reader), "group_summary.csv": _csv_text(summary_csv),
             "group_summary.md": md_summary, "gee.csv": _csv_text(result.gee), "gee.md": md_gee,
             "top_images.md": md_top}
    files = []
    for name, text in texts.items():
        p = os.path.join(out_dir, name)
        write_text_atomic(p, text)
        files.append(p)
    files.append(figure4(result.group_summary, os.path.join(out_dir, "figure4.png")))
    return files


# ----------------------------------------------------------------------------------------------- CLI

def add_subcommand(turing_subparsers):
    """Add ``analyze`` to the ``retina-fast turing`` sub-parsers (its ``func`` runs the analysis).

    Parameters
    ----------
    turing_subparsers : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned for ``retina-fast turing``.

    Returns
    -------
    argparse.ArgumentParser
        The ``analyze`` parser.
    """
    p = turing_subparsers.add_parser(
        "analyze", help="analyse a Turing-test export: per-reader metrics, GEE vs residents, Figure 4",
        description="Per-reader accuracy / sensitivity / specificity, group means ± SD (paper Table 2), "
                    "logistic GEE vs residents with exchangeable and independence working correlations "
                    "(paper Table 3), a Figure-4-style bar chart and the top synthetic images.")
    p.add_argument("export", help="export file from the app (CSV or JSON, one row per answer)")
    p.add_argument("--out", default="turing_analysis", help="output folder (default: %(default)s)")
    p.add_argument("--years-threshold", type=float, default=5,
                   help="years in practice splitting the experience groups (default: %(default)s)")
    p.add_argument("--groupings", nargs="+", choices=GROUPINGS, default=list(GROUPINGS),
                   help="reader groupings to analyse (default: both)")
    p.add_argument("--top-k", type=int, default=3, help="length of the top-image lists (default: 3)")
    p.add_argument("--cov-type", choices=("robust", "bias_reduced", "naive"), default="robust",
                   help="covariance of the GEE estimates (default: robust sandwich)")
    p.set_defaults(func=_analyze_command)
    return p


def _analyze_command(args):
    try:
        result = analyze(args.export, args.out, groupings=args.groupings, years_threshold=args.years_threshold,
                         top_k=args.top_k, cov_type=args.cov_type)
    except ValueError as e:
        print(f"turing analyze: {e}", file=sys.stderr)
        return 2
    print(result.markdown)
    print(f"wrote {', '.join(os.path.basename(f) for f in result.files)} to {args.out}")
    return 0
