"""Demo stage of `retina-fast demo`: a tiny imbalance study on phantom fundus images.

`make_phantom_pool` renders a labelled pool of phantom patients (normal, or ERM with its sheen and
striae over the macula; `retina_fast.data.phantom.make_fundus`) plus a folder of extra phantom ERM
images that stand in for generator output until a trained generator exists. `demo_stage` runs
`run_study` on it (with the prepared cohort's images added when given) and prints the Table 4 layout.
"""
import csv
import io
import os
import shutil

import numpy as np

from retina_fast.data.dataset import write_png, write_text_atomic

__all__ = ["demo_stage", "make_phantom_pool"]


def make_phantom_pool(out, n_normal, n_erm, *, images_per_patient=1, size=(96, 128), n_synthetic=0, seed=0):
    """Render a phantom pool: ``out/images/*.png`` + ``out/labels.csv`` (+ ``out/synthetic_erm/``).

    Parameters
    ----------
    out : path
        Folder (created). Existing files of the same name are kept (rendering is deterministic).
    n_normal, n_erm : int
        Patients without / with ERM.
    images_per_patient : int
        Images per patient (different seeds: the two eyes, or visits), all with the patient's label.
    size : (int, int)
        Frame (H, W), pixels.
    n_synthetic : int
        Extra ERM phantoms in ``out/synthetic_erm`` (seeds disjoint from the pool's): a stand-in for
        generated images, from the same distribution as the real ERM phantoms.
    seed : int
        Base seed; image k of the pool uses seed ``seed * 1_000_000 + k``.

    Returns
    -------
    (pool_dir, synthetic_dir or None)
        `pool_dir` is readable by `retina_fast.classify.study.read_pool` (labels.csv: name,
        patient_id, label).
    """
    from retina_fast.data.phantom import make_fundus

    for name, v in (("n_normal", n_normal), ("n_erm", n_erm), ("images_per_patient", images_per_patient)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(n_synthetic, bool) or not isinstance(n_synthetic, (int, np.integer)) or n_synthetic < 0:
        raise ValueError(f"n_synthetic must be an integer >= 0, got {n_synthetic!r}")
    out = os.fspath(out)
    base = int(seed) * 1_000_000
    rows, k = [], 0
    for p in range(n_normal + n_erm):
        erm = p >= n_normal
        pid = f"P{p:05d}"
        for e in range(images_per_patient):
            name = f"images/{'erm' if erm else 'normal'}_{pid}_{e}.png"
            path = os.path.join(out, name)
            if not os.path.isfile(path):
                image, _ = make_fundus(base + k, size=tuple(size), disease="erm" if erm else None)
                write_png(path, image)
            rows.append((name, pid, "erm" if erm else "normal"))
            k += 1
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("name", "patient_id", "label"))
    w.writerows(rows)
    write_text_atomic(os.path.join(out, "labels.csv"), buf.getvalue())
    syn_dir = None
    if n_synthetic:
        syn_dir = os.path.join(out, "synthetic_erm")
        for i in range(n_synthetic):
            path = os.path.join(syn_dir, f"synthetic{i:05d}.png")
            if not os.path.isfile(path):
                image, _ = make_fundus(base + 500_000 + i, size=tuple(size), disease="erm")
                write_png(path, image)
    return out, syn_dir


def _merge_cohort(pool_dir, cohort):
    """Add the prepared cohort's labelled images to pool_dir/labels.csv (linked under pool_dir/cohort)."""
    from .study import read_pool

    try:
        items, pids = read_pool(cohort)
    except ValueError as e:   # unlabelled, or one class only: the phantom patients carry the study alone
        print(f"prepared cohort not used in the classifier study: {e}")
        return 0
    with open(os.path.join(pool_dir, "labels.csv"), newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not r["name"].startswith("cohort/")]
    for it, pid in zip(items, pids):
        name = "cohort/" + it.name
        dst = os.path.join(pool_dir, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            try:
                os.symlink(os.path.abspath(os.path.join(it.root, it.name)), dst)
            except OSError:
                shutil.copyfile(os.path.join(it.root, it.name), dst)
        rows.append({"name": name, "patient_id": f"cohort-{pid}", "label": "erm" if it.label else "normal"})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=("name", "patient_id", "label"), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(os.path.join(pool_dir, "labels.csv"), buf.getvalue())
    return len(items)


def demo_stage(out, dataset_or_cohort=None, *, quick=False, device="cpu"):
    """Tiny imbalance study on phantoms; prints its table; returns the written paths.

    Parameters
    ----------
    out : path
        Demo folder; the stage writes under ``out/classify``.
    dataset_or_cohort : None or path
        Prepared cohort (output folder of `prepare`, or anything `read_pool` reads). Its labelled
        images join the rendered phantom patients (a demo cohort is too small for a study alone).
    quick : bool
        Ratios 1:1 and 1:0.1; else all six ratios. Both: ResNet18 at 64 px, 5 epochs, 30 normal +
        30 ERM phantom patients (two images each).
    device : str
        'cpu', 'cuda' or 'auto'.

    Returns
    -------
    dict
        'table', 'results', 'comparisons', 'roc', 'metric_vs_ratio' (paths), 'overlays' (two Grad-CAM
        PNGs), 'pool'.
    """
    from .study import run_study
    from .train import TrainConfig

    root = os.path.join(os.path.abspath(os.fspath(out)), "classify")
    # Small and short on purpose: at 128 px and 8 epochs (tried) phantom ERM is so easy that every
    # cell scores AUC 1.0 and the study shows nothing, in 12 minutes; at 64 px the imbalance bites.
    size, epochs, ratios = (64, 5, (1.0, 0.1) if quick else (1.0, 0.5, 0.4, 0.3, 0.2, 0.1))
    n_normal, n_erm = 30, 30
    # two images (eyes) per patient, so the patient-level split matters
    pool, synthetic = make_phantom_pool(os.path.join(root, "pool"), n_normal, n_erm, images_per_patient=2,
                                        size=(96, 128), n_synthetic=2 * n_normal, seed=0)
    n_cohort = _merge_cohort(pool, dataset_or_cohort) if dataset_or_cohort is not None else 0
    print(f"\n## Classifier: imbalance study on phantoms (ResNet18 at {size} px, {epochs} epochs; "
          f"{n_normal} normal + {n_erm} ERM phantom patients x 2 images, {n_cohort} prepared cohort images; "
          f"'synthetic' ERM = extra ERM phantoms standing in for the generator)\n")
    res = run_study(pool, os.path.join(root, "study"), synthetic=synthetic, ratios=ratios, seeds=(0,),
                    train=TrainConfig(arch="resnet18", size=size, epochs=epochs, batch_size=10, device=device),
                    n_cam=2, keep_checkpoints=False)
    with open(res.table_md, encoding="utf-8") as f:
        print(f.read())
    cams = sorted(p for p in res.overlays if os.sep + "ratio_1-1_real_" in p)[:2] or res.overlays[:2]
    print(f"ROC curves: {res.roc_png}\nmetrics vs ratio: {res.metric_png}\npaired comparisons: {res.comparisons_png}\n"
          f"Grad-CAM: {', '.join(cams)}")
    return {"table": res.table_md, "results": res.results_csv, "comparisons": res.comparisons_csv, "roc": res.roc_png,
            "metric_vs_ratio": res.metric_png, "overlays": cams, "pool": pool}
