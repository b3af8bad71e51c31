"""Reader groups of the Turing-test analysis (the paper's Methods 1 and 2).

``specialty`` (the paper's "Method 2"): resident, non_retina, retina; ``experience`` (its "Method 1",
specialty with a years-in-practice criterion): resident, non_retina <T y, non_retina >=T y,
retina <T y, retina >=T y. Residents, the reference of every comparison, are not split.
"""
import numpy as np
import pandas as pd

from .constants import GROUPINGS, REFERENCE, SPECIALTIES

__all__ = ["analysable_groups", "assign_groups", "dropped_line", "group_levels"]


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


def analysable_groups(readers, grouping, years_threshold=5):
    """The groups of a grouping that have readers, and those left out of its GEE for having none.

    Parameters
    ----------
    readers : pandas.DataFrame
        One row per reader (or per answer) with ``specialty`` and ``years``.
    grouping : {'specialty', 'experience'}
    years_threshold : int

    Returns
    -------
    kept : list of str
        Groups with at least one reader, residents (the reference) first.
    dropped : list of str
        Groups without a reader (left out of the GEE).
    counts : dict
        Readers per group, every group of the grouping in the paper's order.

    Raises
    ------
    ValueError
        When the residents (the reference every group is compared with) have no reader, or fewer than
        two groups have readers; the message names the grouping and gives the readers per group.
    """
    if "reader_id" in readers.columns:
        readers = readers.groupby("reader_id")[["specialty", "years"]].first()
    levels = group_levels(grouping, years_threshold)
    n = assign_groups(readers, grouping, years_threshold).value_counts()
    counts = {lv: int(n.get(lv, 0)) for lv in levels}
    kept = [lv for lv in levels if counts[lv]]
    per_group = ", ".join(f"{lv} {c}" for lv, c in counts.items())
    if not counts[REFERENCE]:
        raise ValueError(f"grouping {grouping!r}: the reference group {REFERENCE!r} has no readers "
                         f"(readers per group: {per_group}); every GEE compares a group with the residents")
    if len(kept) < 2:
        raise ValueError(f"grouping {grouping!r}: only {kept} have readers (readers per group: {per_group}); "
                         f"the GEE needs the residents and at least one other group")
    return kept, [lv for lv in levels if not counts[lv]], counts


def dropped_line(grouping, dropped, counts):
    """One line naming the groups left out of a grouping's GEE and the readers per group ('' if none)."""
    if not dropped:
        return ""
    return (f"Left out of the {grouping} GEE (no readers): {', '.join(dropped)}. Readers per group: "
            + ", ".join(f"{lv} {c}" for lv, c in counts.items()) + ".")

