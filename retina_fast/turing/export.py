"""Reading and validating an image Turing test export (one row per answer).

The export is the app's ``GET /api/admin/studies/{id}/export`` (CSV or JSON) or a DataFrame with its
columns (``EXPORT_COLUMNS``; at least ``REQUIRED_COLUMNS``). Every check names the file or the column,
in one line.
"""
import json
import os

import numpy as np
import pandas as pd

from .constants import ANSWERS, REQUIRED_COLUMNS, SPECIALTIES

__all__ = ["load_export"]


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
        raise ValueError(f"{what}: reader_id {_py(r['reader_id'])!r} answered image_id {_py(r['image_id'])!r} "
                         f"more than once ({int(dup.sum())} duplicate row(s))")
    for col in ("specialty", "years"):
        n = df.groupby("reader_id")[col].nunique()
        if (n > 1).any():
            raise ValueError(f"column {col!r}: reader_id {_py(n.index[n > 1][0])!r} has more than one value")
    n = df.groupby("image_id")["truth"].nunique()
    if (n > 1).any():
        raise ValueError(f"column 'truth': image_id {_py(n.index[n > 1][0])!r} is both real and synthetic")
    return df



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

