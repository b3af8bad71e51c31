"""Markdown tables of the Turing-test analysis (the paper's Tables 2-3 and the top-image lists)."""
import numpy as np

from .constants import METRICS, PAPER_METHOD, RATES, REFERENCE
from .groups import dropped_line, group_levels

__all__ = ["gee_markdown", "headline_markdown", "summary_markdown", "top_markdown"]


def headline_markdown(df, per_reader):
    """Title and one paragraph: readers, images, answers and the mean ± SD of each rate over readers.

    Parameters
    ----------
    df : pandas.DataFrame
        A validated export (``load_export``).
    per_reader : pandas.DataFrame
        ``per_reader_metrics`` of `df`.
    """
    n_img = df["image_id"].nunique()
    incomplete = int((per_reader["n_images"] < n_img).sum())
    return (f"# Image Turing test analysis\n\n{len(per_reader)} readers, {n_img} images "
            f"({df.loc[df.truth == 'real', 'image_id'].nunique()} real, "
            f"{df.loc[df.truth == 'synthetic', 'image_id'].nunique()} synthetic), {len(df)} answers"
            + (f"; {incomplete} reader(s) did not answer every image" if incomplete else "") + ". "
            f"All readers: accuracy {_pm(per_reader.accuracy.mean(), per_reader.accuracy.std())} %, "
            f"sensitivity {_pm(per_reader.sensitivity.mean(), per_reader.sensitivity.std())} %, "
            f"specificity {_pm(per_reader.specificity.mean(), per_reader.specificity.std())} % "
            f"(mean ± SD over readers).\n\n")


def summary_markdown(summaries, estimates):
    """Group means ± SD of each grouping and the exchangeable GEE's group estimates (paper Table 2)."""
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


def gee_markdown(gee, groupings, years_threshold, dropped=None):
    """P values of each group vs the residents, per grouping and working correlation (paper Table 3).

    `dropped` maps a grouping to (groups left out of its GEE, readers per group); they are named.
    """
    out = ["## Logistic GEE vs residents: P values (paper Table 3)\n\n",
           ("Readers are the clusters; accuracy, sensitivity, specificity: logistic GEE; elapsed time: "
            "identity-link (Gaussian) GEE on seconds per image. Estimates (log odds ratios / seconds) and "
            "95 % CIs are in gee.csv. With only group indicators in the model and every reader answering every "
            "image, the exchangeable and independence fits coincide exactly (same estimating equations); "
            "they differ when readers answered different numbers of images.\n")]
    cov_type = gee["cov_type"].iloc[0] if len(gee) else "robust"
    dropped = dropped or {}
    for grouping in groupings:
        left_out, counts = dropped.get(grouping, ([], {}))
        if left_out:
            out.append("\n" + dropped_line(grouping, left_out, counts) + "\n")
        for cs in dict.fromkeys(gee["cov_struct"]):
            g = gee[(gee["grouping"] == grouping) & (gee["cov_struct"] == cs)]
            out.append(f"\n### By {grouping} ({PAPER_METHOD[grouping]}), {cs} working correlation, "
                       f"{cov_type} SE\n\n")
            rows = [[REFERENCE, "Ref", "Ref", "Ref", "Ref"]]
            for lv in group_levels(grouping, years_threshold)[1:]:
                if lv in left_out:
                    continue
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


def top_markdown(judged_real, judged_synthetic, k):
    """The two ``top_synthetic_images`` lists (admin-only: they show source file names)."""
    out = [f"## Synthetic images most often judged real / synthetic (top {k}, ties kept)\n\n",
           "`source` is the original file name: admin-only, do not share with readers.\n"]
    for title, t in (("Most often judged REAL (readers fooled)", judged_real),
                     ("Most often judged SYNTHETIC (readers not fooled)", judged_synthetic)):
        out.append(f"\n### {title}\n\n")
        out.append(_md_table(["Rank", "image_id", "source", "Readers", "Called real", "% called real"],
                             [[r.rank, r.image_id, r.source, r.n_readers, r.n_called_real,
                               f"{r.pct_called_real:.1f}"] for r in t.itertuples()]))
    return "".join(out)



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

