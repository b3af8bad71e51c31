"""Figure of the image Turing test analysis: reader performance by group, like the paper's Figure 4."""
import numpy as np

from .plots import pyplot, save_figure

__all__ = ["figure4"]

# the rates drawn, in this order and colour
RATE_COLORS = {"accuracy": "#4C72B0", "sensitivity": "#55A868", "specificity": "#C44E52"}


def figure4(summaries, path, method_names=None):
    """Grouped bar chart like the paper's Figure 4: per-group mean +- SD of each metric.

    Parameters
    ----------
    summaries : pandas.DataFrame
        ``group_summary`` rows of one or more groupings (the ``all readers`` rows are skipped).
    path : str or os.PathLike
        PNG to write (atomically).
    method_names : dict, optional
        grouping -> the paper's name for it (``retina_fast.turing.constants.PAPER_METHOD``), shown
        beside the grouping in the panel titles.

    Returns
    -------
    str
        `path`. One row of panels per grouping: left, accuracy / sensitivity / specificity (%) with SD
        error bars and the values printed; right, seconds per image.
    """
    plt = pyplot()
    groupings = list(dict.fromkeys(summaries["grouping"]))
    fig, axes = plt.subplots(len(groupings), 2, figsize=(13, 4.2 * len(groupings)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3]})
    for row, grouping in enumerate(groupings):
        s = summaries[(summaries["grouping"] == grouping) & (summaries["group"] != "all readers")]
        x = np.arange(len(s))
        ax = axes[row, 0]
        w = 0.26
        for j, (m, color) in enumerate(RATE_COLORS.items()):
            mean, sd = 100 * s[f"{m}_mean"].to_numpy(float), 100 * s[f"{m}_sd"].to_numpy(float)
            bars = ax.bar(x + (j - 1) * w, mean, w, yerr=np.nan_to_num(sd), capsize=3, label=m,
                          color=color, error_kw={"elinewidth": 0.8})
            for b, mu, sg in zip(bars, mean, sd):
                txt = f"{mu:.1f}" + ("" if np.isnan(sg) else f"\n±{sg:.1f}")
                ax.text(b.get_x() + b.get_width() / 2, 2, txt, ha="center", va="bottom", fontsize=6.5,
                        color="white")
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_xticks(x, [f"{g}\n(n={n})" for g, n in zip(s["group"], s["n_readers"])], fontsize=8)
        ax.set_ylim(0, 110)
        ax.set_ylabel("% (mean ± SD over readers)")
        name = f"{grouping} ({method_names[grouping]})" if method_names and grouping in method_names else grouping
        ax.set_title(f"{name}: accuracy, sensitivity, specificity")
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

