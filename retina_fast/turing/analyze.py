"""Statistical analysis of an image Turing test export (Kim et al. 2022, Tables 2-3 and Figure 4).

``analyze`` runs the steps in order, each in its own module:

1. ``export.load_export``: read and validate the export (one row per answer);
2. ``groups``: readers grouped two ways (``GROUPINGS``), each compared with the residents;
3. ``summary``: per-reader metrics, group means ± SD, the top synthetic images;
4. ``gee``: the GEE fits of each group against the residents;
5. ``tables`` (Markdown) and ``retina_fast.report.turing_figure.figure4`` (the plot).

Definitions (the paper's): accuracy = correct answers / all images; sensitivity = real images called
real / real images; specificity = synthetic images called synthetic / synthetic images. Time per
image is the server-side time (``server_ms``) in seconds.

Readers are grouped two ways (``GROUPINGS``), each compared with the residents:

- ``specialty`` (the paper's "Method 2"): resident, non_retina, retina;
- ``experience`` (the paper's "Method 1", specialty with a 5-year criterion): resident,
  non_retina <5y, non_retina >=5y, retina <5y, retina >=5y. The order and the pooling follow the
  paper's Tables 2-3: its Method 2 non-retina / retina rows are the pools of Method 1 groups 2-3 /
  4-5, and residents are not split.

A group without readers (real panels often lack one) is left out of that grouping's GEE and named,
with the readers per group, in the output (``analysable_groups``); a grouping is refused only when the
residents have no reader or fewer than two groups have readers.

The names other modules use are importable from here as before (``load_export``, ``fit_gee``, ...).
"""
import io
import os
from dataclasses import dataclass, field

import pandas as pd

from retina_fast.fileio import write_text_atomic
from retina_fast.report.turing_figure import figure4

from .constants import COV_STRUCTS, EXPORT_COLUMNS, GROUPINGS, METRICS, PAPER_METHOD, REQUIRED_COLUMNS
from .export import load_export
from .gee import GEEFit, fit_gee, gee_tables
from .groups import analysable_groups, assign_groups, group_levels
from .summary import group_summary, per_reader_metrics, top_synthetic_images
from .tables import gee_markdown, headline_markdown, summary_markdown, top_markdown

__all__ = [
    "COV_STRUCTS",
    "EXPORT_COLUMNS",
    "GEEFit",
    "GROUPINGS",
    "METRICS",
    "REQUIRED_COLUMNS",
    "TuringAnalysis",
    "analysable_groups",
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
    dropped_groups : dict
        grouping -> (groups left out of its GEE for having no readers, readers per group).
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
    dropped_groups: dict = field(default_factory=dict)

    def p_table(self, grouping, cov_struct="exchangeable"):
        """Table 3 shape: rows = non-reference groups, columns = metrics, values = P."""
        g = self.gee[(self.gee["grouping"] == grouping) & (self.gee["cov_struct"] == cov_struct)]
        return g.pivot(index="group", columns="metric", values="p_value").reindex(
            index=list(dict.fromkeys(g["group"])), columns=list(METRICS))


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
        Reader groupings to analyse (default both). A group without readers is left out of that
        grouping's GEE, with a line in the output naming it; a grouping whose residents have no
        reader, or with fewer than two groups with readers, is refused (ValueError).
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
    dropped = {}
    for grouping in groupings:
        _, left_out, counts = analysable_groups(readers, grouping, years_threshold)
        dropped[grouping] = (left_out, counts)
    per_reader = per_reader_metrics(df, years_threshold)
    summaries = pd.concat([group_summary(per_reader, g, years_threshold) for g in groupings], ignore_index=True)
    gee, estimates = gee_tables(df, groupings, years_threshold=years_threshold, cov_type=cov_type)
    judged_real, judged_syn = top_synthetic_images(df, top_k)

    head = headline_markdown(df, per_reader)
    md_summary = summary_markdown(summaries, estimates)
    md_gee = gee_markdown(gee, groupings, years_threshold, dropped)
    md_top = top_markdown(judged_real, judged_syn, top_k)
    result = TuringAnalysis(df, per_reader, summaries, gee, estimates, judged_real, judged_syn,
                            head + md_summary + "\n" + md_gee + "\n" + md_top,
                            dropped_groups={g: v for g, v in dropped.items() if v[0]})
    if out_dir is not None:
        result.files = _write_outputs(result, os.fspath(out_dir), md_summary, md_gee, md_top)
    return result


def _write_outputs(result, out_dir, md_summary, md_gee, md_top):
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
    files.append(figure4(result.group_summary, os.path.join(out_dir, "figure4.png"), PAPER_METHOD))
    return files


def _csv_text(df):
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()
