"""The paper's labelling workflow (its steps 2-4): label a large pool with a classifier trained on a few.

    res = label_pool("labelled/", "unlabelled/", "labelling_out")

1. The labelled images (with patients, see `retina_fast.data.pool.read_pool`) are split by
   patient 7:1:2 and the classifier is trained on the train part, best epoch by validation loss
   (the paper: 600 ERM + 600 normal images, ResNet152, AUC 0.986 on its test part).
2. Decision thresholds are chosen on the validation part: 0.5, Youden's J (max sensitivity +
   specificity - 1) and, for each target sensitivity, the highest threshold reaching it (so the
   most specific one). Each is then evaluated on the test part (binary_metrics, with CIs), so the
   report shows what a threshold chosen on validation data does on unseen patients.
3. Every image of the unlabelled pool gets P(ERM) and a label at the chosen threshold.

Outputs under `outdir`: ``model/`` (checkpoint.pt, history.csv, training_curve.png),
``labels.csv`` (name, p_erm, label, threshold; all unlabelled images, in pool order),
``thresholds.csv`` and ``thresholds.md`` (the threshold report), ``split.csv``. All atomic writes.
"""
import json
import os
from dataclasses import dataclass, replace

import numpy as np

from retina_fast.data.dataset import write_text_atomic
from retina_fast.data.items import as_items
from retina_fast.data.pool import read_pool
from retina_fast.report.tables import write_csv

from .train import TrainConfig, check_config, predict, train_classifier

__all__ = ["LabelResult", "PoolFit", "choose_thresholds", "label_pool", "train_on_pool"]


@dataclass
class LabelResult:
    """Paths written by `label_pool`, the thresholds ({rule: value}) and the one used for labels."""
    labels_csv: str
    thresholds_csv: str
    thresholds_md: str
    checkpoint: str
    thresholds: dict
    threshold_rule: str
    threshold: float
    n_erm: int
    n_normal: int


def choose_thresholds(y_valid, p_valid, sensitivities=(0.9, 0.95)):
    """Decision thresholds on P(ERM) chosen on validation data.

    Parameters
    ----------
    y_valid : (n,) 0/1
    p_valid : (n,) float
        Scores (P(ERM)); an image is called ERM when ``p >= threshold``.
    sensitivities : sequence of float in (0, 1]
        Targets: for each, the highest threshold whose validation sensitivity is >= the target.

    Returns
    -------
    dict
        ``{'0.5': 0.5, 'youden': t, 'sens>=0.90': t, ...}``. Youden ties go to the highest threshold.
    """
    from .metrics import roc_curve_points

    fpr, tpr, thr = roc_curve_points(y_valid, p_valid)
    out = {"0.5": 0.5}
    j = tpr - fpr
    # thresholds[0] is inf (nothing positive): never a useful choice
    k = 1 + int(np.argmax(j[1:]))
    out["youden"] = float(thr[k])
    for s in sensitivities:
        if not 0 < float(s) <= 1:
            raise ValueError(f"sensitivities must lie in (0, 1], got {s!r}")
        k = int(np.flatnonzero(tpr >= float(s) - 1e-12)[0])
        out[f"sens>={float(s):.2f}"] = float(thr[max(k, 1)])
    return out


@dataclass
class PoolFit:
    """Outcome of `train_on_pool`: the training result, validation/test labels and scores, test metrics."""
    outdir: str
    result: object
    y_valid: np.ndarray
    p_valid: np.ndarray
    y_test: np.ndarray
    p_test: np.ndarray
    test_metrics: object
    metrics_json: str


def train_on_pool(labelled, outdir, *, labels_csv=None, train=None, split_seed=0, fractions=(0.7, 0.1, 0.2),
                  threshold=0.5, auc_method="delong", progress=True):
    """Split a labelled pool by patient (7:1:2), train on the train part, score validation and test.

    Writes ``outdir/split.csv``, ``outdir/model/`` (checkpoint.pt, history.csv, training_curve.png),
    ``outdir/test_predictions.csv`` and ``outdir/test_metrics.json`` (`binary_metrics` at
    `threshold`, CIs included). Returns `PoolFit`.
    """
    from .metrics import binary_metrics
    from .split import check_no_leakage, patient_split

    train = TrainConfig() if train is None else train
    outdir = os.path.abspath(os.fspath(outdir))
    # Everything that can be checked is checked before outdir and split.csv are created.
    check_config(train)
    items, pids = read_pool(labelled, labels_csv)
    labels = np.array([it.label for it in items])
    assign = patient_split(pids, labels, fractions=fractions, seed=split_seed)
    check_no_leakage(pids, assign)
    part = {s: [it for it, a in zip(items, assign) if a == s] for s in ("train", "valid", "test")}
    for s in ("valid", "test"):
        y = np.array([it.label for it in part[s]])
        if (y == 1).sum() < 2 or (y == 0).sum() < 2:
            raise ValueError(f"the labelled pool's {s} split has {(y == 0).sum()} normal and {(y == 1).sum()} ERM "
                             f"images; need >= 2 of each")
    os.makedirs(outdir, exist_ok=True)
    write_csv(os.path.join(outdir, "split.csv"), ("root", "name", "patient_id", "label", "split"),
              [(it.root, it.name, p, it.label, a) for it, p, a in zip(items, pids, assign)])
    res = train_classifier(part["train"], part["valid"],
                           replace(train, outdir=os.path.join(outdir, "model"), progress=progress))
    kw = dict(batch_size=max(train.batch_size, 32), backend=train.backend, workers=train.workers)
    y_valid = np.array([it.label for it in part["valid"]])
    y_test = np.array([it.label for it in part["test"]])
    p_valid = predict(res.model, part["valid"], **kw)
    p_test = predict(res.model, part["test"], **kw)
    write_csv(os.path.join(outdir, "test_predictions.csv"), ("root", "name", "label", "p_erm"),
              [(it.root, it.name, it.label, f"{p:.6g}") for it, p in zip(part["test"], p_test)])
    m = binary_metrics(y_test, p_test, threshold, auc_method=auc_method)
    metrics_json = os.path.join(outdir, "test_metrics.json")
    write_text_atomic(metrics_json, json.dumps({**m.as_dict(), "best_epoch": res.best_epoch + 1,
                                                "n_train": len(part["train"]), "n_valid": len(part["valid"])},
                                               indent=1) + "\n")
    return PoolFit(outdir, res, y_valid, p_valid, y_test, p_test, m, metrics_json)


def label_pool(labelled, unlabelled, outdir, *, labels_csv=None, train=None, split_seed=0,
               fractions=(0.7, 0.1, 0.2), sensitivities=(0.9, 0.95), threshold="youden", auc_method="delong",
               progress=True):
    """Train on `labelled`, pick thresholds on its validation split, label every image of `unlabelled`.

    Parameters
    ----------
    labelled : path
        Labelled pool with patients (`read_pool`; `labels_csv` as there).
    unlabelled : path or sequence
        Folder of images (searched recursively), dataset folder/zip, or a list of image paths / Items.
    outdir : path
    train : TrainConfig
        Training settings (outdir is set to ``outdir/model``).
    split_seed, fractions : the patient split.
    sensitivities : target sensitivities for the fixed-sensitivity thresholds.
    threshold : str or float
        Threshold used for the exported labels: a rule name of `choose_thresholds` ('youden', '0.5',
        'sens>=0.90', ...) or a number.
    auc_method : AUC interval of the test metrics.
    progress : bool
        tqdm bars (epochs, prediction).

    Returns
    -------
    LabelResult
    """
    from .metrics import binary_metrics

    train = TrainConfig() if train is None else train
    rules = {"0.5", "youden"} | {f"sens>={float(s):.2f}" for s in sensitivities}
    if isinstance(threshold, str) and threshold not in rules:   # checked before the training, not after
        raise ValueError(f"threshold must be a number or one of {sorted(rules)}, got {threshold!r}")
    pool_items = as_items(unlabelled, "unlabelled")
    fit = train_on_pool(labelled, outdir, labels_csv=labels_csv, train=train, split_seed=split_seed,
                        fractions=fractions, auc_method=auc_method, progress=progress)
    outdir, res = fit.outdir, fit.result
    kw = dict(batch_size=max(train.batch_size, 32), backend=train.backend, workers=train.workers)
    y_valid, p_valid, y_test, p_test = fit.y_valid, fit.p_valid, fit.y_test, fit.p_test
    thresholds = choose_thresholds(y_valid, p_valid, sensitivities)
    if isinstance(threshold, str):
        if threshold not in thresholds:
            raise ValueError(f"threshold must be a number or one of {sorted(thresholds)}, got {threshold!r}")
        rule, t = threshold, thresholds[threshold]
    else:
        t = float(threshold)
        if not np.isfinite(t):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        rule = "given"
        thresholds = {**thresholds, "given": t}

    # threshold report: validation operating point and test metrics (with CIs) for every rule
    header = ("| rule | threshold | valid sensitivity | valid specificity | test sensitivity [95% CI] | "
              "test specificity [95% CI] | test accuracy [95% CI] |")
    rows, md = [], [header, "|---|---:|---:|---:|---|---|---|"]
    for name, thr in thresholds.items():
        v = binary_metrics(y_valid, p_valid, thr, auc_method=auc_method)
        m = binary_metrics(y_test, p_test, thr, auc_method=auc_method)
        rows.append((name, f"{thr:.6g}", f"{v.sensitivity:.4f}", f"{v.specificity:.4f}", f"{m.sensitivity:.4f}",
                     f"{m.sensitivity_ci[0]:.4f}", f"{m.sensitivity_ci[1]:.4f}", f"{m.specificity:.4f}",
                     f"{m.specificity_ci[0]:.4f}", f"{m.specificity_ci[1]:.4f}", f"{m.accuracy:.4f}",
                     f"{m.accuracy_ci[0]:.4f}", f"{m.accuracy_ci[1]:.4f}", f"{m.auc:.4f}", f"{m.auc_ci[0]:.4f}",
                     f"{m.auc_ci[1]:.4f}", int(name == rule)))
        md.append(f"| {name}{' (used)' if name == rule else ''} | {thr:.4f} | {v.sensitivity:.3f} | "
                  f"{v.specificity:.3f} | {m.sensitivity:.3f} [{m.sensitivity_ci[0]:.3f}, {m.sensitivity_ci[1]:.3f}] | "
                  f"{m.specificity:.3f} [{m.specificity_ci[0]:.3f}, {m.specificity_ci[1]:.3f}] | "
                  f"{m.accuracy:.3f} [{m.accuracy_ci[0]:.3f}, {m.accuracy_ci[1]:.3f}] |")
    thr_csv = os.path.join(outdir, "thresholds.csv")
    write_csv(thr_csv, ("rule", "threshold", "valid_sensitivity", "valid_specificity", "test_sensitivity",
                        "test_sensitivity_ci_lo", "test_sensitivity_ci_hi", "test_specificity",
                        "test_specificity_ci_lo", "test_specificity_ci_hi", "test_accuracy", "test_accuracy_ci_lo",
                        "test_accuracy_ci_hi", "test_auc", "test_auc_ci_lo", "test_auc_ci_hi", "used"), rows)
    m = binary_metrics(y_test, p_test, t, auc_method=auc_method)
    thr_md = os.path.join(outdir, "thresholds.md")
    write_text_atomic(thr_md, "\n".join(md) + f"\n\nThresholds chosen on the validation split ({len(y_valid)} "
                      f"images), evaluated on the test split ({len(y_test)} images: {int(y_test.sum())} ERM); test AUC "
                      f"{m.auc:.3f} [{m.auc_ci[0]:.3f}, {m.auc_ci[1]:.3f}] ({auc_method}). Labels use rule "
                      f"'{rule}' (threshold {t:.4f}).\n")

    p_pool = predict(res.model, pool_items, progress=progress, **kw)
    relative = isinstance(unlabelled, (str, os.PathLike))  # names relative to the pool folder, else full paths
    labels_out = write_csv(os.path.join(outdir, "labels.csv"), ("name", "p_erm", "label", "threshold"),
                           [(it.name if relative else os.path.join(it.root, it.name), f"{p:.6g}",
                             "erm" if p >= t else "normal", f"{t:.6g}") for it, p in zip(pool_items, p_pool)])
    n_erm = int((p_pool >= t).sum())
    return LabelResult(labels_out, thr_csv, thr_md, res.checkpoint, thresholds, rule, t, n_erm,
                       len(pool_items) - n_erm)
