"""The imbalance study (the paper's Table 4), with the baselines the paper did not try.

    res = run_study("pool/", "study_out", synthetic="synthetic_erm/", seeds=(0, 1))

Design (paper, step 6): one patient-level 7:1:2 split of a pool of real labelled images
(`retina_fast.classify.split.patient_split`) gives validation and test sets common to every run.
From the training part, for each normal:ERM ratio 1:r (1:1, 1:0.5, 1:0.4, 1:0.3, 1:0.2, 1:0.1) the
training set takes n_normal normal images and round(r * n_normal) ERM images, n_normal being all
training normals unless there are too few ERM images for the ratio (then n_normal = n_ERM / r; the
paper's 1:1 cell used 691 + 691, the others 1382 normals). Subsets are nested: the ERM images of
1:0.1 are among those of 1:0.2, and so on. Each ratio is trained in each mode:

- 'real': the imbalanced real set only (the paper's "No" rows);
- 'synthetic': topped up with n_normal - n_ERM synthetic ERM images to balance (the paper's "Yes"
  rows), from a folder of images or a generator checkpoint (`retina_fast.synthetic.SyntheticSource`);
- 'oversample': minority images drawn with replacement until balanced (random oversampling);
- 'weighted': cross-entropy weighted n / (2 n_c) per class.

At 1:1 the set is balanced, so every mode equals 'real' and only 'real' is trained (one row, as in
the paper). Each (ratio, mode, seed) cell trains `train_classifier`, scores the test set, computes
`binary_metrics` (AUC with a DeLong or bootstrap 95 % CI, accuracy/sensitivity/specificity with
Wilson CIs) and appends one row to ``results.csv`` (whole file rewritten to a temp name, then
renamed). A rerun skips the cells already in ``results.csv``; an interrupted cell is redone.

Outputs under `outdir`::

    study.json          settings that must not change between resumed runs
    split.csv           name, patient_id, label, split (and whether the image is in the balanced eval set)
    synthetic.csv       root, name of the synthetic ERM images used (a 'synthetic' cell takes the first
                        n_train_synthetic); a checkpoint's images are generated into synthetic[-class<K>]/
    results.csv         one row per finished cell
    table.md            Table 4 layout: ratio rows x modes, AUC [95 % CI], accuracy, sensitivity, specificity;
                        then the paired comparisons
    comparisons.csv     per ratio and seed, each mode against real only and synthetic against the two
                        baselines: both AUCs, their difference with its 95 % CI, DeLong z and p
                        (`paired_delong`: both classifiers scored the same test images)
    comparisons.png     those differences with their intervals (a forest plot)
    roc.png             test ROC curves, one panel per mode, one curve per ratio
    metric_vs_ratio.png AUC, accuracy, sensitivity, specificity against the ERM fraction, per mode
    runs/<cell>/        history.csv, training_curve.png, test_predictions.csv, checkpoint.pt (optional),
                        gradcam/ (overlays of the top-scoring ERM test images)
"""
import csv
import glob
import io
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace

import numpy as np

from retina_fast.data.dataset import list_images
from retina_fast.data.items import Item
from retina_fast.data.pool import read_pool
from retina_fast.device import resolve_device
from retina_fast.fileio import write_text_atomic
from retina_fast.report.tables import write_csv

from .train import TrainConfig, predict, train_classifier

__all__ = [
    "MODES",
    "MODE_TITLES",
    "RATIOS",
    "StudyResult",
    "COMPARISONS",
    "compare_modes",
    "parse_ratio",
    "plan_cells",
    "ratio_label",
    "read_results",
    "report_study",
    "run_study",
]

RATIOS = (1.0, 0.5, 0.4, 0.3, 0.2, 0.1)   # ERM per normal image (normal:ERM = 1:r)
MODES = ("real", "synthetic", "oversample", "weighted")
MODE_TITLES = {"real": "real only", "synthetic": "+ synthetic ERM", "oversample": "random oversampling",
               "weighted": "weighted cross-entropy"}
# (A, B) pairs of `compare_modes`: each remedy against the imbalanced real set, then synthetic
# images against the two cheap baselines.
COMPARISONS = (("synthetic", "real"), ("oversample", "real"), ("weighted", "real"),
               ("synthetic", "oversample"), ("synthetic", "weighted"))
COMPARISON_COLUMNS = ("ratio", "erm_fraction", "seed", "mode_a", "mode_b", "auc_a", "auc_b", "delta_auc",
                      "delta_ci_lo", "delta_ci_hi", "z", "p")
_FIXED_KEYS = ("pool", "n_pool", "split_seed", "fractions", "balance_eval", "synthetic", "synthetic_class",
               "train", "threshold", "auc_method", "alpha", "synthetic_filter")


# ----------------------------------------------------------------------------------------------
# Ratios


def parse_ratio(ratio):
    """ERM fraction r of a ratio given as 0.1, '0.1' or '1:0.1' (normal:ERM); 0 < r <= 1."""
    try:
        if isinstance(ratio, str) and ":" in ratio:
            a, b = (float(v) for v in ratio.split(":"))
            r = b / a
        else:
            r = float(ratio)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"ratio must be a number or 'normal:erm' like '1:0.1', got {ratio!r}") from None
    if not 0 < r <= 1:
        raise ValueError(f"ratio must give an ERM fraction in (0, 1], got {ratio!r}")
    return r


def ratio_label(r):
    """'1:0.1' for 0.1."""
    return f"1:{r:g}"


# ----------------------------------------------------------------------------------------------
# Planning


def _rng(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(key)))


def _balance(idx, labels, seed):
    """Indices with the majority class subsampled (seeded) to the minority's count, in original order."""
    pos, neg = idx[labels[idx] == 1], idx[labels[idx] == 0]
    k = min(len(pos), len(neg))
    rng = _rng(seed, 7)
    keep = np.concatenate([rng.permutation(pos)[:k], rng.permutation(neg)[:k]])
    return np.sort(keep)


def plan_cells(labels, assign, ratios=RATIOS, modes=MODES, *, seed=0):
    """Training-set composition of each ratio: {r: dict(normal=indices, erm=indices, n_synthetic=int)}.

    `labels` and `assign` are per pool image; indices point into the pool. Normal and ERM training
    images are taken in one seeded order, so smaller subsets are nested in larger ones. Modes other
    than 'real' get ``n_synthetic = n_normal - n_erm`` (used by 'synthetic' only).
    """
    labels = np.asarray(labels)
    train = np.flatnonzero(np.asarray(assign) == "train")
    normal = _rng(seed, 5).permutation(train[labels[train] == 0])
    erm = _rng(seed, 6).permutation(train[labels[train] == 1])
    plan = {}
    for r in ratios:
        n_normal = min(len(normal), math.floor(len(erm) / r + 1e-9))
        n_erm = round(r * n_normal)
        if n_erm < 1 or n_normal < 1:
            raise ValueError(f"ratio {ratio_label(r)}: the training split has {len(normal)} normal and "
                             f"{len(erm)} ERM images, too few for one ERM image at this ratio "
                             f"(need >= {math.ceil(1 / r)} normal images)")
        plan[r] = {"normal": normal[:n_normal], "erm": erm[:n_erm], "n_synthetic": n_normal - n_erm}
    return plan


def _cell_key(r, mode, seed):
    return (f"{r:g}", mode, int(seed))


def _cell_dir(r, mode, seed):
    return f"ratio_1-{r:g}_{mode}_seed{int(seed)}"


# ----------------------------------------------------------------------------------------------
# Results file


def read_results(path):
    """Rows of a results.csv as dicts (numbers converted to float/int where they parse)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k in ("ratio", "mode", "run_dir", "auc_method"):
                continue
            try:
                fv = float(v)
                row[k] = int(fv) if fv.is_integer() and k.startswith(("n", "seed", "tp", "fp", "tn", "fn", "best")) else fv
            except (TypeError, ValueError):
                pass
    return rows


def _append_row(path, row):
    """Append `row` to the CSV at `path`: the whole file is rewritten to a temp name, then renamed."""
    old = ""
    cols = list(row)
    if os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as f:
            old = f.read()
        header = next(csv.reader(io.StringIO(old)), None)
        if header:
            cols = header + [c for c in row if c not in header]
            if cols != header:  # a new column: rewrite the old rows under the wider header
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
                w.writeheader()
                for r in csv.DictReader(io.StringIO(old)):
                    w.writerow(r)
                old = buf.getvalue()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    if not old:
        w.writeheader()
    w.writerow({c: row.get(c, "") for c in cols})
    write_text_atomic(path, old + buf.getvalue())


# ----------------------------------------------------------------------------------------------
# Synthetic images


SYNTHETIC_FILTERS = (None, "audit")


def _audit_synthetic(root, names, n_needed, outdir):
    """The first `n_needed` of `names` that pass the realism audit's checks; writes
    ``synthetic_audit.csv`` (per image) and ``synthetic_audit.json`` (counts, for table.md)."""
    from retina_fast.audit.realism import audit_filter

    kept, table = audit_filter(root, names, n_needed)
    write_text_atomic(os.path.join(outdir, "synthetic_audit.csv"), table.to_csv(index=False))
    failed = table[~table["passed"].astype(bool)]
    summary = {"audited": len(table), "dropped": len(failed), "kept": len(kept), "needed": int(n_needed),
               "reasons": {str(k): int(v) for k, v in failed["reason"].value_counts().items()}}
    write_text_atomic(os.path.join(outdir, "synthetic_audit.json"), json.dumps(summary, indent=1) + "\n")
    return kept


def _synthetic_items(synthetic, n_needed, outdir, *, synthetic_seed=0, truncation_psi=1.0, synthetic_class=None,
                     device="cpu", progress=False, synthetic_filter=None):
    """`n_needed` synthetic ERM items (label 1) from a `retina_fast.synthetic.SyntheticSource` (or the
    path of a folder of images or a generator checkpoint; of a conditional generator: its class
    `synthetic_class`). `synthetic_filter='audit'` keeps only images that pass the realism audit's
    checks (`retina_fast.audit.realism`), in order; from a checkpoint, more seeds are generated to
    replace the dropped ones."""
    from retina_fast.synthetic import SyntheticSource

    if n_needed <= 0:
        return []
    if synthetic_filter not in SYNTHETIC_FILTERS:
        raise ValueError(f"synthetic_filter must be one of {SYNTHETIC_FILTERS}, got {synthetic_filter!r}")
    if synthetic is None:
        raise ValueError("mode 'synthetic' needs `synthetic`: a folder of synthetic ERM images or a generator "
                         "checkpoint")
    if not os.path.exists(synthetic):
        raise ValueError(f"synthetic must be a folder of images or a generator checkpoint; not found: "
                         f"{os.fspath(synthetic)!r}")
    if isinstance(synthetic, SyntheticSource):
        source = synthetic
    else:
        p = os.fspath(synthetic)
        gen = {} if os.path.isdir(p) or p.lower().endswith(".zip") else dict(
            seeds=range(synthetic_seed, synthetic_seed + n_needed), class_idx=synthetic_class,
            truncation_psi=truncation_psi)
        source = SyntheticSource.from_arg(p, name="synthetic", **gen)
    path = source.path
    if not source.is_generator:
        items = [Item(path, name, 1) for name, _ in list_images(path)]
        if len(items) < n_needed:
            raise ValueError(f"synthetic folder {path!r} holds {len(items)} images; the study needs {n_needed}")
        if synthetic_filter == "audit":
            kept = _audit_synthetic(path, [it.name for it in items], n_needed, outdir)
            if len(kept) < n_needed:
                raise ValueError(f"synthetic folder {path!r}: {len(kept)} images pass the audit; the study "
                                 f"needs {n_needed}")
            return [Item(path, n, 1) for n in kept]
        return items[:n_needed]
    # One cache folder per class: images of another class never stand in for the asked one. (study.json
    # pins the checkpoint and class of a resumed study, so the folder is not named by a hash.)
    cache = "synthetic" if source.class_idx is None else f"synthetic-class{source.class_idx}"
    # with the audit, up to 10x as many seeds are generated, as needed, to replace dropped images
    first, n_seeds = source.seeds[0], n_needed
    while True:
        paths = source.with_seeds(range(first, first + n_seeds)).resolve(outdir, name=cache, device=device,
                                                                          progress=progress)
        gen_dir, names = os.path.dirname(paths[0]), [os.path.basename(p) for p in paths]
        if synthetic_filter != "audit":
            return [Item(gen_dir, n, 1) for n in names]
        kept = _audit_synthetic(gen_dir, names, n_needed, outdir)
        if len(kept) == n_needed:
            return [Item(gen_dir, n, 1) for n in kept]
        if n_seeds >= 10 * n_needed:
            raise ValueError(f"synthetic={path!r}: {len(kept)} of {n_seeds} generated images pass the audit; "
                             f"the study needs {n_needed}")
        n_seeds = min(10 * n_needed, n_seeds + 2 * (n_needed - len(kept)))


# ----------------------------------------------------------------------------------------------
# The study


@dataclass
class StudyResult:
    """Paths written by `run_study` and its rows (dicts as in results.csv)."""
    outdir: str
    results_csv: str
    table_md: str
    roc_png: str
    metric_png: str
    comparisons_csv: str = None
    comparisons_png: str = None
    rows: list = field(default_factory=list)
    trained: list = field(default_factory=list)   # cell keys (ratio, mode, seed) trained in this call
    skipped: list = field(default_factory=list)   # cell keys found finished in results.csv
    overlays: list = field(default_factory=list)


def _settings(pool, n_pool, split_seed, fractions, balance_eval, synthetic, synthetic_class, train, threshold,
              auc_method, alpha):
    t = train.as_dict()
    for k in ("outdir", "seed", "device", "backend", "workers", "progress", "class_weight", "oversample"):
        t.pop(k, None)   # per cell, or not affecting results
    return {"pool": os.path.abspath(os.fspath(pool)), "n_pool": int(n_pool), "split_seed": int(split_seed),
            "fractions": [float(f) for f in fractions], "balance_eval": bool(balance_eval),
            "synthetic": None if synthetic is None else os.path.abspath(os.fspath(synthetic)),
            "synthetic_class": None if synthetic_class is None else int(synthetic_class),
            "train": t, "threshold": float(threshold), "auc_method": auc_method, "alpha": float(alpha)}


def _check_resume(path, settings):
    """Check a resumed run's settings against study.json (a synthetic source may be added later).

    Returns the settings to write once the study has passed its checks (None: study.json is up to
    date), so a call that fails on a bad input leaves no settings behind to block the corrected rerun.
    """
    old = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        unset = old.get("synthetic") is None or settings.get("synthetic") is None
        diff = [k for k in _FIXED_KEYS if old.get(k) != settings.get(k)
                and not (k in ("synthetic", "synthetic_class") and unset)]
        if diff:
            raise ValueError(f"{path} was written with other settings ({', '.join(diff)} differ): use a new outdir, "
                             f"or the same settings to resume")
        if settings.get("synthetic") is None:
            settings = {**settings, "synthetic": old.get("synthetic"), "synthetic_class": old.get("synthetic_class")}
    return None if settings == old else settings


def _eval_uint8(items, size):
    """The model-input images of `items` as (n, size, size, 3) uint8 (the loaders' crop and resize)."""
    import tempfile

    from retina_fast.data.loaders import make_loader

    from retina_fast.data.items import stage_items
    with tempfile.TemporaryDirectory(prefix="retina_fast_cam_") as tmp:
        loader = make_loader(stage_items(items, tmp), batch_size=len(items), resolution=size)
        x = next(iter(loader))[0]
    return ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def run_study(pool, outdir, *, labels_csv=None, synthetic=None, ratios=RATIOS, modes=MODES, seeds=(0,),
              train=None, split_seed=0, fractions=(0.7, 0.1, 0.2), balance_eval=True, threshold=0.5,
              auc_method="delong", n_boot=2000, alpha=0.05, n_cam=2, synthetic_seed=0, truncation_psi=1.0,
              synthetic_class=None, keep_checkpoints=True, progress=True, synthetic_filter=None):
    """Train every (ratio, mode, seed) cell, resuming; write results.csv, table.md and the plots.

    Parameters
    ----------
    pool : path
        Real labelled images with patients, see `retina_fast.data.pool.read_pool` (`labels_csv` as there).
    outdir : path
        Output folder (see the module docstring); reusing it resumes.
    synthetic : None, path or retina_fast.synthetic.SyntheticSource
        Folder of synthetic ERM images (the first ones in sorted order are used) or a generator
        checkpoint (images generated once, seeds `synthetic_seed`..., into ``outdir/synthetic``),
        or a SyntheticSource (a generator's class is its `class_idx` unless `synthetic_class` is
        given). Needed by mode 'synthetic'.
    synthetic_class : int or None
        For a conditional generator checkpoint (`retina-fast train --cond`): the class to generate
        (1: ERM); images go to ``outdir/synthetic-class<K>``.
    synthetic_filter : None or 'audit'
        'audit': use only synthetic images that pass the realism audit's checks
        (`retina_fast.audit.realism`; from a checkpoint, further seeds replace the dropped ones);
        ``synthetic_audit.csv``/``.json`` record them and table.md says how many were dropped.
    ratios : sequence
        ERM fractions or 'normal:erm' strings (default the paper's six).
    modes : sequence of {'real', 'synthetic', 'oversample', 'weighted'}
    seeds : sequence of int
        Training seeds; each seed is one run per cell (weight init, shuffle, augmentation).
    train : TrainConfig
        Training settings of every run (its outdir, seed, class_weight, oversample are set per cell).
    split_seed, fractions : the patient split (`patient_split`), common to all cells.
    balance_eval : bool
        Subsample the majority class of the validation and test splits to 1:1 (seeded), as the
        paper's balanced validation/test sets; sensitivity and specificity do not depend on it,
        accuracy does.
    threshold : float
        P(ERM) at or above which an image is called ERM.
    auc_method, n_boot, alpha : AUC interval (see `binary_metrics`).
    n_cam : int
        Grad-CAM overlays per run for the top-scoring ERM test images (0: none).
    keep_checkpoints : bool
        Keep each run's ``checkpoint.pt`` (ResNet152: ~230 MB each).
    progress : bool
        tqdm bar over the cells.

    Returns
    -------
    StudyResult

    Raises
    ------
    ValueError
        Bad arguments, a pool too small for a ratio, too few synthetic images, or an outdir written
        with other settings.
    """
    from retina_fast.synthetic import SyntheticSource

    if isinstance(synthetic, SyntheticSource) and synthetic_class is None:
        synthetic_class = synthetic.class_idx
    train, ratios, modes, seeds = _check_study_args(train, ratios, modes, seeds, auc_method, synthetic,
                                                    synthetic_filter)
    outdir = os.path.abspath(os.fspath(outdir))
    os.makedirs(outdir, exist_ok=True)

    items, pids = read_pool(pool, labels_csv)
    labels = np.array([it.label for it in items])
    settings_json = os.path.join(outdir, "study.json")
    new_settings = _check_resume(settings_json, _settings(pool, len(items), split_seed, fractions, balance_eval,
                                                          synthetic, synthetic_class, train, threshold, auc_method,
                                                          alpha) | {"synthetic_filter": synthetic_filter})
    split = _split_pool(items, pids, labels, outdir, split_seed=split_seed, fractions=fractions,
                        balance_eval=balance_eval)
    plan = plan_cells(labels, split.assign, ratios, modes, seed=split_seed)
    cells = [(r, m, s) for r in ratios for m in modes if not (r == 1.0 and m != "real") for s in seeds]
    need_syn = max([plan[r]["n_synthetic"] for r, m, _ in cells if m == "synthetic"], default=0)
    syn_items = _synthetic_items(synthetic, need_syn, outdir, synthetic_seed=synthetic_seed,
                                 truncation_psi=truncation_psi, synthetic_class=synthetic_class,
                                 device=resolve_device(train.device).type, synthetic_filter=synthetic_filter)
    if new_settings is not None:   # the inputs passed every check: from here on, runs can be resumed
        write_text_atomic(settings_json, json.dumps(new_settings, indent=1, sort_keys=True) + "\n")
    if syn_items:   # which files the 'synthetic' rows trained on (the first n_train_synthetic of them)
        write_csv(os.path.join(outdir, "synthetic.csv"), ("root", "name"), [(it.root, it.name) for it in syn_items])

    result = StudyResult(outdir, os.path.join(outdir, "results.csv"), os.path.join(outdir, "table.md"),
                         os.path.join(outdir, "roc.png"), os.path.join(outdir, "metric_vs_ratio.png"))
    evaluation = dict(threshold=threshold, auc_method=auc_method, n_boot=n_boot, alpha=alpha, n_cam=n_cam,
                      keep_checkpoints=keep_checkpoints)
    _train_cells(cells, plan, items, split, syn_items, train, result, evaluation, progress=progress)
    return _finish_study(result)


def _check_study_args(train, ratios, modes, seeds, auc_method, synthetic, synthetic_filter):
    """(train, ratios, modes, seeds) of `run_study`, checked and normalised; nothing is written."""
    from .metrics import AUC_METHODS

    train = TrainConfig(arch="resnet152") if train is None else train
    if not isinstance(train, TrainConfig):
        raise TypeError(f"train must be a TrainConfig, got {type(train).__name__}")
    ratios = sorted({parse_ratio(r) for r in ratios}, reverse=True)
    modes = list(dict.fromkeys(modes))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}, got {modes}")
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds}")
    if auc_method not in AUC_METHODS:
        raise ValueError(f"auc_method must be one of {AUC_METHODS}, got {auc_method!r}")
    if synthetic_filter not in SYNTHETIC_FILTERS:
        raise ValueError(f"synthetic_filter must be one of {SYNTHETIC_FILTERS}, got {synthetic_filter!r}")
    if synthetic is not None and not os.path.exists(synthetic):
        raise ValueError(f"synthetic must be a folder of images or a generator checkpoint; not found: "
                         f"{os.fspath(synthetic)!r}")
    return train, ratios, modes, seeds


@dataclass
class _Split:
    """The study's patient split: per pool image its split, and the (balanced) evaluation sets."""
    assign: np.ndarray
    valid_items: list
    test_items: list
    y_test: np.ndarray


def _split_pool(items, pids, labels, outdir, *, split_seed, fractions, balance_eval):
    """Patient-level split, balanced validation/test sets (if asked), checked and written to split.csv."""
    from .split import check_no_leakage, patient_split

    assign = patient_split(pids, labels, fractions=fractions, seed=split_seed)
    check_no_leakage(pids, assign)
    idx_valid = np.flatnonzero(assign == "valid")
    idx_test = np.flatnonzero(assign == "test")
    if balance_eval:
        idx_valid, idx_test = _balance(idx_valid, labels, split_seed), _balance(idx_test, labels, split_seed + 1)
    for what, idx in (("validation", idx_valid), ("test", idx_test)):
        if (labels[idx] == 1).sum() < 2 or (labels[idx] == 0).sum() < 2:
            raise ValueError(f"the {what} split has {(labels[idx] == 0).sum()} normal and "
                             f"{(labels[idx] == 1).sum()} ERM images; need >= 2 of each (pool too small)")
    in_eval = np.zeros(len(items), bool)
    in_eval[idx_valid] = in_eval[idx_test] = True
    write_csv(os.path.join(outdir, "split.csv"), ("root", "name", "patient_id", "label", "split", "in_eval"),
              [(it.root, it.name, p, it.label, a, int(e) if a != "train" else "")
                for it, p, a, e in zip(items, pids, assign, in_eval)])
    return _Split(assign, [items[i] for i in idx_valid], [items[i] for i in idx_test], labels[idx_test])


def _train_cells(cells, plan, items, split, syn_items, train, result, evaluation, *, progress):
    """Train and score every cell not yet in results.csv (skipped ones are recorded in `result`)."""
    done = {_cell_key(float(r["erm_fraction"]), r["mode"], int(r["seed"])) for r in read_results(result.results_csv)}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(cells), desc="study cells", unit="run")
    try:
        for r, mode, seed in cells:
            key = _cell_key(r, mode, seed)
            if key in done:
                result.skipped.append(key)
            else:
                if bar:
                    bar.set_postfix_str(f"{ratio_label(r)} {mode} seed {seed}")
                row = _train_cell(r, mode, seed, plan[r], items, split, syn_items, train, result.outdir,
                                  **evaluation)
                _append_row(result.results_csv, row)
                result.trained.append(key)
            if bar:
                bar.update()
    finally:
        if bar:
            bar.close()


def _train_cell(r, mode, seed, p, items, split, syn_items, train, outdir, *, threshold, auc_method, n_boot,
                alpha, n_cam, keep_checkpoints):
    """Train one (ratio, mode, seed) cell, score the test set, write its run folder; return its row."""
    from .metrics import binary_metrics

    train_items = [items[i] for i in p["normal"]] + [items[i] for i in p["erm"]]
    n_syn = p["n_synthetic"] if mode == "synthetic" else 0
    train_items += syn_items[:n_syn]
    run_dir = os.path.join(outdir, "runs", _cell_dir(r, mode, seed))
    if os.path.isdir(run_dir):   # left by an interrupted run of this cell
        shutil.rmtree(run_dir)
    cfg = replace(train, outdir=run_dir, seed=seed, progress=False,
                  class_weight="balanced" if mode == "weighted" else None, oversample=mode == "oversample")
    t0 = time.perf_counter()
    res = train_classifier(train_items, split.valid_items, cfg)
    seconds = time.perf_counter() - t0
    test_items, y_test = split.test_items, split.y_test
    score = predict(res.model, test_items, batch_size=max(train.batch_size, 32), backend=train.backend,
                    workers=train.workers)
    write_csv(os.path.join(run_dir, "test_predictions.csv"), ("root", "name", "label", "p_erm"),
              [(it.root, it.name, it.label, f"{s:.6g}") for it, s in zip(test_items, score)])
    m = binary_metrics(y_test, score, threshold, auc_method=auc_method, n_boot=n_boot, seed=seed, alpha=alpha)
    if n_cam > 0:
        _save_cams(res.model, test_items, y_test, score, n_cam, train.size, run_dir)
    if not keep_checkpoints and res.checkpoint and os.path.exists(res.checkpoint):
        os.remove(res.checkpoint)
    row = {"ratio": ratio_label(r), "erm_fraction": f"{r:g}", "mode": mode, "seed": seed,
           "n_train_normal": len(p["normal"]), "n_train_erm": len(p["erm"]), "n_train_synthetic": n_syn,
           "n_valid": len(split.valid_items), "best_epoch": res.best_epoch + 1, "epochs_run": len(res.history),
           "train_seconds": round(seconds, 2)}
    row.update({k: (round(v, 6) if isinstance(v, float) else v) for k, v in m.as_dict().items()})
    row["run_dir"] = os.path.relpath(run_dir, outdir)
    return row


def _save_cams(model, test_items, y_test, score, n_cam, size, run_dir):
    """Grad-CAM overlays of the `n_cam` top-scoring ERM test images under ``run_dir/gradcam``."""
    top = [i for i in np.argsort(-score, kind="stable") if y_test[i] == 1][:n_cam]
    if top:
        from .cam import save_overlays
        sel = [test_items[i] for i in top]
        save_overlays(model, _eval_uint8(sel, size),
                      [f"rank{k + 1}_{os.path.splitext(os.path.basename(it.name))[0]}" for k, it in enumerate(sel)],
                      os.path.join(run_dir, "gradcam"), target_class=1)


def _finish_study(result):
    """Write the table and plots from results.csv and fill in `result`'s rows and figure paths."""
    outdir = result.outdir
    paths = report_study(outdir)
    result.comparisons_csv = paths["comparisons"]
    result.comparisons_png = paths["forest"] if os.path.isfile(paths["forest"]) else None   # needs two modes
    result.rows = read_results(result.results_csv)
    result.overlays = sorted(glob.glob(os.path.join(outdir, "runs", "*", "gradcam", "*.png")))
    return result


# ----------------------------------------------------------------------------------------------
# Table and plots


def _fmt_ci(v, lo, hi):
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _group(rows):
    """{(erm_fraction, mode): [rows of its seeds]}."""
    out = {}
    for row in rows:
        out.setdefault((float(row["erm_fraction"]), row["mode"]), []).append(row)
    return out


def _cell_text(group, metric):
    if len(group) == 1:
        g = group[0]
        return _fmt_ci(g[metric], g[f"{metric}_ci_lo"], g[f"{metric}_ci_hi"])
    v = np.array([g[metric] for g in group], float)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def format_table(rows):
    """Markdown table in the layout of the paper's Table 4 (one line per ratio and mode)."""
    groups = _group(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    header = ("| Normal:ERM (real) | Training set | n normal / ERM / synthetic | AUC [95% CI] | Accuracy | "
              "Sensitivity | Specificity |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in sorted({k[0] for k in groups}, reverse=True):
        first = True
        for mode in MODES:
            g = groups.get((r, mode))
            if not g:
                continue
            n = f"{g[0]['n_train_normal']} / {g[0]['n_train_erm']} / {g[0]['n_train_synthetic']}"
            cells = [_cell_text(g, k) for k in ("auc", "accuracy", "sensitivity", "specificity")]
            lines.append(f"| {ratio_label(r) if first else ''} | {MODE_TITLES[mode]} | {n} | " + " | ".join(cells) + " |")
            first = False
    t0 = rows[0] if rows else {}
    note = (f"\nTest set: {t0.get('n', '?')} images ({t0.get('n_pos', '?')} ERM, {t0.get('n_neg', '?')} normal), "
            f"common to all runs; threshold {t0.get('threshold', '?')}; AUC CI: {t0.get('auc_method', '?')}; "
            f"proportion CIs: Wilson.")
    if len(seeds) > 1:
        note += f" {len(seeds)} seeds per cell: mean ± SD over seeds."
    return "\n".join(lines) + "\n" + note + "\n"


def _read_predictions(path, with_keys=False):
    """(labels, P(ERM)) of a run's test_predictions.csv, and the (root, name) keys if `with_keys`."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    y, p = np.array([int(r["label"]) for r in rows]), np.array([float(r["p_erm"]) for r in rows])
    return (y, p, [(r["root"], r["name"]) for r in rows]) if with_keys else (y, p)


def compare_modes(outdir, rows=None, *, alpha=0.05):
    """Paired DeLong comparisons of the training modes on the study's common test set.

    For each ratio and seed, every pair of `COMPARISONS` whose two runs have finished is compared
    on their saved test predictions (`paired_delong`: the same images scored by both classifiers,
    so the test accounts for their correlation).

    Parameters
    ----------
    outdir : path
        A study folder (`run_study`).
    rows : list of dict, optional
        Its results.csv rows (default: read them).
    alpha : float
        The difference's interval is 1 - alpha.

    Returns
    -------
    list of dict
        Keys: ratio, erm_fraction, seed, mode_a, mode_b, auc_a, auc_b, delta_auc (A - B),
        delta_ci_lo, delta_ci_hi, z, p.

    Raises
    ------
    ValueError
        Two runs whose test predictions are not on the same images (named).
    """
    from .metrics import paired_delong

    outdir = os.fspath(outdir)
    rows = read_results(os.path.join(outdir, "results.csv")) if rows is None else rows
    runs = {(float(r["erm_fraction"]), r["mode"], int(r["seed"])): r for r in rows}
    out = []
    for frac, seed in sorted({(f, sd) for f, _, sd in runs}, key=lambda k: (-k[0], k[1])):
        for a, b in COMPARISONS:
            ra, rb = runs.get((frac, a, seed)), runs.get((frac, b, seed))
            if ra is None or rb is None:
                continue
            ya, pa, ka = _read_predictions(os.path.join(outdir, ra["run_dir"], "test_predictions.csv"), True)
            yb, pb, kb = _read_predictions(os.path.join(outdir, rb["run_dir"], "test_predictions.csv"), True)
            if ka != kb or not np.array_equal(ya, yb):
                raise ValueError(f"{ra['run_dir']} and {rb['run_dir']}: test predictions on different images")
            d = paired_delong(ya, pa, pb, alpha=alpha)
            out.append({"ratio": ratio_label(frac), "erm_fraction": f"{frac:g}", "seed": seed, "mode_a": a,
                        "mode_b": b, "auc_a": round(d.auc_a, 6), "auc_b": round(d.auc_b, 6),
                        "delta_auc": round(d.diff, 6), "delta_ci_lo": round(d.ci[0], 6),
                        "delta_ci_hi": round(d.ci[1], 6), "z": round(d.z, 4), "p": float(f"{d.p:.4g}")})
    return out


def _pair_title(c):
    return f"{MODE_TITLES[c['mode_a']]} vs {MODE_TITLES[c['mode_b']]}"


def format_comparisons(comparisons, alpha=0.05):
    """Markdown section of `compare_modes` rows (empty string when there are none)."""
    if not comparisons:
        return ""
    seeds = len({c["seed"] for c in comparisons}) > 1
    level = f"{100 * (1 - alpha):g}%"
    lines = ["", f"Paired comparisons on the common test set (DeLong; ΔAUC = A - B with its {level} CI)", "",
             "| Normal:ERM (real) | " + ("seed | " if seeds else "") + f"A vs B | AUC A | AUC B | ΔAUC [{level} CI] | p |",
             "|---|" + ("---|" if seeds else "") + "---|---|---|---|---|"]
    for c in comparisons:
        delta = f"{c['delta_auc']:+.3f} [{c['delta_ci_lo']:+.3f}, {c['delta_ci_hi']:+.3f}]"
        lines.append(f"| {c['ratio']} | " + (f"{c['seed']} | " if seeds else "")
                     + f"{_pair_title(c)} | {c['auc_a']:.3f} | {c['auc_b']:.3f} | {delta} | {c['p']:.3g} |")
    lines += ["", "p: two-sided, per comparison (not corrected for the number of comparisons)."]
    return "\n".join(lines) + "\n"


def _audit_note(outdir):
    """table.md's line on the synthetic images dropped by `synthetic_filter='audit'` ('' without it)."""
    path = os.path.join(outdir, "synthetic_audit.json")
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as f:
        a = json.load(f)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(a["reasons"].items())) or "none"
    return (f"\nSynthetic images filtered by the realism audit (`--synthetic-filter audit`): {a['dropped']} of "
            f"{a['audited']} audited dropped (reasons: {reasons}); {a['kept']} passing images used.\n")


def report_study(outdir):
    """(Re)write table.md, comparisons.csv/.png, roc.png and metric_vs_ratio.png from outdir's results.

    Returns {'table', 'comparisons', 'roc', 'metric', 'forest'} paths (comparisons.png only once two
    modes of a ratio have finished).
    """
    from retina_fast.report.plots import pyplot, save_figure

    from .metrics import roc_curve_points

    outdir = os.fspath(outdir)
    rows = read_results(os.path.join(outdir, "results.csv"))
    paths = {k: os.path.join(outdir, n) for k, n in
             (("table", "table.md"), ("comparisons", "comparisons.csv"), ("roc", "roc.png"),
              ("metric", "metric_vs_ratio.png"), ("forest", "comparisons.png"))}
    if not rows:
        return paths
    alpha = 0.05
    settings = os.path.join(outdir, "study.json")
    if os.path.isfile(settings):
        with open(settings, encoding="utf-8") as f:
            alpha = float(json.load(f).get("alpha", alpha))
    comparisons = compare_modes(outdir, rows, alpha=alpha)
    write_csv(paths["comparisons"], COMPARISON_COLUMNS, [[c[k] for k in COMPARISON_COLUMNS] for c in comparisons])
    write_text_atomic(paths["table"], format_table(rows) + _audit_note(outdir) + format_comparisons(comparisons, alpha))
    plt = pyplot()
    groups = _group(rows)
    ratios = sorted({k[0] for k in groups}, reverse=True)
    modes = [m for m in MODES if any(k[1] == m for k in groups)]
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(ratios), 1)))

    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for c, r in zip(colours, ratios):
            g = groups.get((r, mode)) or (groups.get((r, "real")) if r == 1.0 else None)
            if not g:
                continue
            first = min(g, key=lambda row: int(row["seed"]))
            y, s = _read_predictions(os.path.join(outdir, first["run_dir"], "test_predictions.csv"))
            fpr, tpr, _ = roc_curve_points(y, s)
            ax.plot(fpr, tpr, color=c, label=f"{ratio_label(r)} AUC {first['auc']:.3f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(MODE_TITLES[mode])
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Test ROC curves (first seed of each cell)")
    save_figure(fig, paths["roc"])

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, metric in zip(axes, ("auc", "accuracy", "sensitivity", "specificity")):
        for mode in modes:
            xs, ys, lo, hi = [], [], [], []
            for r in ratios:
                g = groups.get((r, mode)) or (groups.get((r, "real")) if r == 1.0 else None)
                if not g:
                    continue
                v = np.array([row[metric] for row in g], float)
                xs.append(r)
                ys.append(v.mean())
                if len(g) == 1:
                    lo.append(v[0] - g[0][f"{metric}_ci_lo"])
                    hi.append(g[0][f"{metric}_ci_hi"] - v[0])
                else:
                    lo.append(v.std(ddof=1))
                    hi.append(v.std(ddof=1))
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=MODE_TITLES[mode])
        ax.set_xscale("log")
        ax.set_xticks(ratios)
        ax.set_xticklabels([f"{r:g}" for r in ratios])
        ax.set_xlabel("ERM per normal image (real)")
        ax.set_title(metric)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    fig.suptitle("Test metrics against the class ratio (bars: 95% CI, or SD over seeds)")
    save_figure(fig, paths["metric"])
    if comparisons:
        save_figure(_forest_plot(plt, comparisons, alpha), paths["forest"])
    return paths


def _forest_plot(plt, comparisons, alpha):
    """ΔAUC with its interval per comparison, grouped by ratio (top: the most balanced)."""
    seeds = len({c["seed"] for c in comparisons}) > 1
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(comparisons) + 1.4))
    colours = dict(zip(COMPARISONS, plt.get_cmap("tab10")(np.arange(len(COMPARISONS)))))
    ys = np.arange(len(comparisons))[::-1]
    for y, c in zip(ys, comparisons):
        pair = (c["mode_a"], c["mode_b"])
        ax.errorbar(c["delta_auc"], y, xerr=[[c["delta_auc"] - c["delta_ci_lo"]], [c["delta_ci_hi"] - c["delta_auc"]]],
                    fmt="o", color=colours[pair], capsize=3)
    labels = []
    for c in comparisons:
        seed = f" seed {c['seed']}" if seeds else ""
        labels.append(f"{c['ratio']}{seed}: {_pair_title(c)}")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(f"ΔAUC (A - B), {100 * (1 - alpha):g}% CI (paired DeLong)")
    ax.set_title("Training modes compared on the common test set")
    return fig
