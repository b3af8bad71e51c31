"""Plots of real-vs-synthetic metric distributions, written as PNG (Agg backend, atomic writes)."""
import os

import numpy as np

from retina_fast.fileio import atomic_write

__all__ = ["histogram_plot", "box_plot", "pyplot", "save_figure"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: no display needed)."""
    import matplotlib
    matplotlib.use("Agg", force=False)  # never needs a display; a no-op if a backend is already in use
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, dpi=120):
    """Save `fig` as PNG to `path` atomically (`retina_fast.fileio.atomic_write`), then close it."""
    plt = pyplot()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _finite(v):
    a = np.asarray(v, dtype=float).ravel()
    return a[np.isfinite(a)]


def histogram_plot(groups, path, *, title="", xlabel="", bins=30):
    """Overlaid histograms (density) of each group: `groups` is {label: values}; NaNs are dropped."""
    plt = pyplot()
    data = {k: _finite(v) for k, v in groups.items()}
    allv = np.concatenate([v for v in data.values() if v.size] or [np.zeros(0)])
    fig, ax = plt.subplots(figsize=(6, 4))
    if allv.size:
        lo, hi = float(allv.min()), float(allv.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for label, v in data.items():
            if v.size:
                ax.hist(v, bins=edges, density=True, alpha=0.5, label=f"{label} (n={v.size})")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    return save_figure(fig, path)


def box_plot(groups, path, *, title="", ylabel=""):
    """Side-by-side box plots (median, quartiles, 1.5 IQR whiskers) of each group in `groups`."""
    plt = pyplot()
    labels = list(groups)
    data = [_finite(groups[k]) for k in labels]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    keep = [i for i, v in enumerate(data) if v.size]
    if keep:
        ax.boxplot([data[i] for i in keep], tick_labels=[f"{labels[i]}\n(n={data[i].size})" for i in keep])
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return save_figure(fig, path)
