"""Per-reader metrics, group means and the synthetic images most often judged real.

Definitions (the paper's): accuracy = correct answers / all images; sensitivity = real images called
real / real images; specificity = synthetic images called synthetic / synthetic images. Time per
image is the server-side time (``server_ms``) in seconds.
"""
import numpy as np
import pandas as pd

from .constants import GROUPINGS, RATES
from .groups import assign_groups

__all__ = ["group_summary", "per_reader_metrics", "top_synthetic_images"]


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

