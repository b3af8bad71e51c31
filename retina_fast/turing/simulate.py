"""Simulated reader panels for the image Turing test, with known (planted) group effects.

The simulated answers have the export format of the Turing-test app (one row per answer, see
``retina_fast.turing.constants.EXPORT_COLUMNS``), so that the analysis can be validated on data whose
truth is known and demonstrated before any real reader has taken the test.

Answer model (conditional, i.e. given the reader and the image), for reader r of experience group g
and image i::

    logit P(correct | real image i)      = base_real      + effect[g].real      + skill_r + bias_r + d_i
    logit P(correct | synthetic image i) = base_synthetic + effect[g].synthetic + skill_r - bias_r + d_i

``skill_r`` (reader-level ability) and ``bias_r`` (reader-level tendency to answer "real") are normal
random intercepts that make a reader's answers correlated; ``d_i`` is a per-image ease (normal, the
same for every reader). A correct answer to a real image is "real" (sensitivity: real images called
real), to a synthetic image "synthetic" (specificity).

Time per image (seconds) is lognormal: ``log t = log(median_s) + time_shift[g] + a_r + e_ri`` with a
reader-level ``a_r`` and a per-answer ``e_ri``.

The analysis (population-averaged GEE) estimates *marginal* effects, which are smaller than the
conditional ``effect`` knobs above. ``simulate_readers(..., return_truth=True)`` therefore also
returns the exact marginal targets, integrated over the reader random effects (Gauss-Hermite) for the
image eases actually drawn.
"""
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_EFFECTS",
    "DEFAULT_TIME_SHIFTS",
    "GroupEffect",
    "planted_effects",
    "simulate_panel_on_images",
    "simulate_readers",
]

EXPERIENCE_GROUPS = ("resident", "non_retina <5y", "non_retina >=5y", "retina <5y", "retina >=5y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")


@dataclass(frozen=True)
class GroupEffect:
    """Conditional log-odds shift of P(correct) of one reader group, relative to residents.

    Attributes
    ----------
    real : float
        Shift on real images (logit scale), i.e. on sensitivity.
    synthetic : float
        Shift on synthetic images (logit scale), i.e. on specificity.
    """

    real: float = 0.0
    synthetic: float = 0.0


# Chosen so that the simulated panel looks like the paper's Table 2 (Method 1): residents about
# 0.69 / 0.33 sensitivity / specificity, retina specialists >= 5 y about 0.78 / 0.52.
DEFAULT_EFFECTS = {
    "resident": GroupEffect(0.0, 0.0),
    "non_retina <5y": GroupEffect(0.0, -0.2),
    "non_retina >=5y": GroupEffect(-0.2, 0.0),
    "retina <5y": GroupEffect(0.45, 0.25),
    "retina >=5y": GroupEffect(0.45, 0.85),
}
# log-scale shifts of the time per image (experienced readers look longer, as in the paper's Fig. 4)
DEFAULT_TIME_SHIFTS = {"resident": 0.0, "non_retina <5y": 0.0, "non_retina >=5y": 0.1,
                       "retina <5y": 0.1, "retina >=5y": 0.25}
# The paper's panel: 12 residents, 14 non-retina and 14 retina specialists (split 7 / 7 at 5 years here;
# the paper's Appendix Table 2 with the actual split is not in our copy of the paper).
DEFAULT_PANEL = {"resident": 12, "non_retina <5y": 7, "non_retina >=5y": 7, "retina <5y": 7, "retina >=5y": 7}


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _specialty_of(group):
    return group.split(" ")[0]


def _check_groups(mapping, name, allowed=EXPERIENCE_GROUPS):
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown group(s) {unknown}; groups are {list(allowed)}")


def _years_for(group, rng, threshold):
    """Years in practice consistent with the group label (residents: training year 1-4)."""
    if group == "resident":
        return int(rng.integers(1, 5))
    if group.endswith("<5y"):
        return int(rng.integers(0, threshold))
    return int(rng.integers(threshold, threshold + 21))


def _marginal_p(base, shift, ease, sd):
    """mean over images of E_u[expit(base + shift + u + ease_i)], u ~ N(0, sd^2) (Gauss-Hermite, 60 nodes)."""
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    eta = base + shift + np.asarray(ease, dtype=float)[:, None] + sd * x[None, :]
    return float((_expit(eta) @ w).mean())


def planted_effects(panel, effects, *, base_real, base_synthetic, real_ease, synthetic_ease, reader_sd,
                    bias_sd, median_s, time_shifts, time_reader_sd, time_sd):
    """Marginal (population-averaged) truth of a simulated panel: what a GEE with group indicators estimates.

    Parameters
    ----------
    panel : dict
        Number of readers per experience group (keys of ``EXPERIENCE_GROUPS``).
    effects : dict of GroupEffect
        Conditional logit shifts per experience group (residents: the reference).
    base_real, base_synthetic : float
        Conditional logit of P(correct) for residents on an image of ease 0.
    real_ease, synthetic_ease : array_like
        Per-image ease (logit scale) actually drawn for the real / synthetic images.
    reader_sd, bias_sd : float
        SDs of the reader skill and answer-"real" bias random intercepts.
    median_s, time_shifts, time_reader_sd, time_sd : float, dict, float, float
        Time model (see the module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per (grouping, group, metric) with ``proportion`` (marginal P of the outcome; for
        ``time_s`` the mean seconds), ``planted`` (log odds ratio vs residents; for ``time_s`` the mean
        difference in seconds) and ``n_readers``. Groupings: ``specialty`` (resident / non_retina /
        retina, each a reader-weighted mix of its experience subgroups) and ``experience``.
    """
    sd = float(np.hypot(reader_sd, bias_sd))
    n_real, n_syn = len(real_ease), len(synthetic_ease)
    sub = {}
    for g, n in panel.items():
        if n <= 0:
            continue
        e = effects.get(g, GroupEffect())
        sens = _marginal_p(base_real, e.real, real_ease, sd)
        spec = _marginal_p(base_synthetic, e.synthetic, synthetic_ease, sd)
        acc = (n_real * sens + n_syn * spec) / (n_real + n_syn)
        t = median_s * np.exp(time_shifts.get(g, 0.0) + 0.5 * (time_reader_sd ** 2 + time_sd ** 2))
        sub[g] = {"n": n, "accuracy": acc, "sensitivity": sens, "specificity": spec, "time_s": t}
    rows = []
    for grouping in ("specialty", "experience"):
        label = _specialty_of if grouping == "specialty" else (lambda g: g)
        merged = {}
        for g, v in sub.items():
            m = merged.setdefault(label(g), {"n": 0, **{k: 0.0 for k in v if k != "n"}})
            m["n"] += v["n"]
            for k in v:
                if k != "n":
                    m[k] += v["n"] * v[k]  # equal cluster sizes: GEE's group mean is the reader mean
        for g, m in merged.items():
            for k in ("accuracy", "sensitivity", "specificity", "time_s"):
                m[k] /= m["n"]
        ref = merged.get("resident")
        for g, m in merged.items():
            for k in ("accuracy", "sensitivity", "specificity", "time_s"):
                if ref is None:
                    planted = np.nan
                elif k == "time_s":
                    planted = m[k] - ref[k]
                else:
                    planted = float(_logit(m[k]) - _logit(ref[k]))
                rows.append({"grouping": grouping, "group": g, "metric": k, "n_readers": m["n"],
                             "proportion": m[k], "planted": planted})
    return pd.DataFrame(rows)


def simulate_readers(panel=None, *, n_real=50, n_synthetic=50, effects=None, base_real=0.85,
                     base_synthetic=-0.75, reader_sd=0.4, bias_sd=0.6, image_sd=0.8, median_s=6.0,
                     time_shifts=None, time_reader_sd=0.35, time_sd=0.5, years_threshold=5,
                     real_sources=None, synthetic_sources=None, seed=0, study_id=1, path=None,
                     return_truth=False):
    """Simulate a reader panel taking the image Turing test; rows in the app's export format.

    Parameters
    ----------
    panel : dict, optional
        Readers per experience group, keys from ``"resident"``, ``"non_retina <5y"``,
        ``"non_retina >=5y"``, ``"retina <5y"``, ``"retina >=5y"``. Default: the paper's 12 residents,
        14 non-retina and 14 retina specialists (7 below / 7 at or above `years_threshold` years).
    n_real, n_synthetic : int
        Images of each kind (default 50 + 50, as in the paper); ignored where sources are given.
    effects : dict of GroupEffect, optional
        Conditional logit shift of P(correct) on real / synthetic images per group, relative to
        residents (default ``DEFAULT_EFFECTS``). Missing groups get no shift.
    base_real, base_synthetic : float
        Residents' conditional logit of P(correct) on real / synthetic images of ease 0.
    reader_sd, bias_sd : float
        SDs of the reader skill (same sign on real and synthetic) and answer-"real" bias (opposite
        signs) random intercepts, logit scale. They create the within-reader correlation.
    image_sd : float
        SD of the per-image ease (logit scale), shared by all readers.
    median_s : float
        Residents' median time per image, seconds.
    time_shifts : dict, optional
        Log-scale shift of the time per image per group (default ``DEFAULT_TIME_SHIFTS``).
    time_reader_sd, time_sd : float
        SDs (log scale) of the reader-level and per-answer time terms.
    years_threshold : int
        Years in practice separating ``<5y`` from ``>=5y`` groups (``years`` is drawn to match).
    real_sources, synthetic_sources : sequence of str, optional
        Original file names of the images (the export's admin-only ``source``); default
        ``real_0000.png``..., ``synthetic_0000.png``....
    seed : int
        Seed of everything random (answers, image ids, display order, reader years).
    study_id : int
        Value of the ``study_id`` column.
    path : str or os.PathLike, optional
        Also write the rows as CSV here (atomically).
    return_truth : bool
        Also return the marginal truth (``planted_effects``).

    Returns
    -------
    export : pandas.DataFrame
        One row per answer, columns ``study_id, reader_id, reader_name, specialty, years, position,
        image_id, truth, answer, correct, server_ms, client_ms, answered_at, source``; all readers see
        the images in the same (seeded, shuffled) order.
    truth : pandas.DataFrame
        Only if `return_truth`; see ``planted_effects``.
    """
    panel = dict(DEFAULT_PANEL if panel is None else panel)
    effects = dict(DEFAULT_EFFECTS if effects is None else effects)
    time_shifts = dict(DEFAULT_TIME_SHIFTS if time_shifts is None else time_shifts)
    for name, m in (("panel", panel), ("effects", effects), ("time_shifts", time_shifts)):
        _check_groups(m, name)
    if any(int(n) < 0 for n in panel.values()) or sum(int(n) for n in panel.values()) == 0:
        raise ValueError(f"panel: reader counts must be >= 0 with at least one reader, got {panel}")
    real_sources = ([f"real_{i:04d}.png" for i in range(int(n_real))] if real_sources is None
                    else [str(s) for s in real_sources])
    synthetic_sources = ([f"synthetic_{i:04d}.png" for i in range(int(n_synthetic))] if synthetic_sources is None
                         else [str(s) for s in synthetic_sources])
    if not real_sources or not synthetic_sources:
        raise ValueError("need at least one real and one synthetic image (n_real / n_synthetic / sources)")
    rng = np.random.default_rng(seed)
    n_img = len(real_sources) + len(synthetic_sources)
    truth = np.array(["real"] * len(real_sources) + ["synthetic"] * len(synthetic_sources))
    sources = np.array(real_sources + synthetic_sources, dtype=object)
    ease = rng.normal(0.0, image_sd, n_img)
    image_ids = np.array([rng.bytes(8).hex() for _ in range(n_img)], dtype=object)
    order = rng.permutation(n_img)  # display order, the same for every reader

    rows = []
    t0 = pd.Timestamp("2026-01-05T09:00:00Z")
    reader_id = 0
    for group in EXPERIENCE_GROUPS:
        for _ in range(int(panel.get(group, 0))):
            reader_id += 1
            e = effects.get(group, GroupEffect())
            skill, bias = rng.normal(0.0, reader_sd), rng.normal(0.0, bias_sd)
            is_real = truth[order] == "real"
            eta = np.where(is_real, base_real + e.real + skill + bias,
                           base_synthetic + e.synthetic + skill - bias) + ease[order]
            correct = rng.random(n_img) < _expit(eta)
            answer = np.where(correct, truth[order], np.where(is_real, "synthetic", "real"))
            log_t = (np.log(median_s) + time_shifts.get(group, 0.0) + rng.normal(0.0, time_reader_sd)
                     + rng.normal(0.0, time_sd, n_img))
            server_ms = np.round(np.exp(log_t) * 1000.0).astype(np.int64)
            client_ms = np.maximum(server_ms - rng.integers(5, 60, n_img), 1)
            start = t0 + pd.Timedelta(minutes=int(rng.integers(0, 7 * 24 * 60)))
            answered_at = start + pd.to_timedelta(np.cumsum(server_ms), unit="ms")
            rows.append(pd.DataFrame({
                "study_id": study_id, "reader_id": reader_id, "reader_name": f"reader {reader_id:03d}",
                "specialty": _specialty_of(group), "years": _years_for(group, rng, years_threshold),
                "position": np.arange(n_img), "image_id": image_ids[order], "truth": truth[order],
                "answer": answer, "correct": correct, "server_ms": server_ms, "client_ms": client_ms,
                "answered_at": [t.isoformat() for t in answered_at], "source": sources[order]}))
    export = pd.concat(rows, ignore_index=True)
    if path is not None:
        from retina_fast.fileio import write_text_atomic
        write_text_atomic(os.fspath(path), export.to_csv(index=False))
    if not return_truth:
        return export
    truth_df = planted_effects(panel, effects, base_real=base_real, base_synthetic=base_synthetic,
                               real_ease=ease[truth == "real"], synthetic_ease=ease[truth == "synthetic"],
                               reader_sd=reader_sd, bias_sd=bias_sd, median_s=median_s, time_shifts=time_shifts,
                               time_reader_sd=time_reader_sd, time_sd=time_sd)
    return export, truth_df


def _image_names(images, what):
    """File names from a folder (image files, sorted) or from a sequence of names / paths."""
    if isinstance(images, (str, os.PathLike)):
        folder = os.fspath(images)
        if not os.path.isdir(folder):
            raise ValueError(f"{what}: {folder!r} is not a folder")
        names = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise ValueError(f"{what}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder!r}")
        return names
    names = [os.path.basename(os.fspath(p)) for p in images]
    if not names:
        raise ValueError(f"{what}: empty list of images")
    return names


def simulate_panel_on_images(real_images, synthetic_images, *, seed=0, **kwargs):
    """Simulate a reader panel on actual image files (for the demo, before any real reader exists).

    Parameters
    ----------
    real_images, synthetic_images : str, os.PathLike or sequence
        A folder (its image files, sorted by name) or a sequence of file names / paths; the base names
        become the export's ``source`` column. Opaque ``image_id`` values are drawn from `seed`.
    seed : int
        Seed of the simulation.
    **kwargs
        Passed to ``simulate_readers`` (``panel``, ``effects``, ``path``, ``return_truth``, ...).

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, pandas.DataFrame)
        As ``simulate_readers``.
    """
    return simulate_readers(real_sources=_image_names(real_images, "real_images"),
                            synthetic_sources=_image_names(synthetic_images, "synthetic_images"),
                            seed=seed, **kwargs)
