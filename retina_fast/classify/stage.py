"""Demo stage of `retina-fast demo`: a tiny imbalance study on phantom fundus images.

`make_phantom_pool` renders a labelled pool of phantom patients (normal, or ERM with its sheen and
striae over the macula; `retina_fast.data.phantom.make_fundus`): the demo's cohort is far too small
for a patient-level 7:1:2 split, so phantom patients stand in for the real pool. `demo_stage` runs
`run_study` on it (with the prepared cohort's images added when given), its synthetic ERM images
being those the demo's ERM fine-tuned generator wrote, and prints the Table 4 layout.
"""
import csv
import os
import shutil

from retina_fast.checks import check_int
from retina_fast.data.dataset import write_png
from retina_fast.data.pool import read_pool
from retina_fast.report.tables import write_csv

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
        Extra ERM phantoms in ``out/synthetic_erm`` (seeds disjoint from the pool's), from the same
        distribution as the pool's ERM phantoms: a planted-truth "synthetic" set for tests (the demo
        uses its generator's images instead).
    seed : int
        Base seed; image k of the pool uses seed ``seed * 1_000_000 + k``.

    Returns
    -------
    (pool_dir, synthetic_dir or None)
        `pool_dir` is readable by `retina_fast.data.pool.read_pool` (labels.csv: name,
        patient_id, label).
    """
    from retina_fast.data.phantom import make_fundus

    for name, v in (("n_normal", n_normal), ("n_erm", n_erm), ("images_per_patient", images_per_patient)):
        check_int(name, v, 1)
    check_int("n_synthetic", n_synthetic, 0)
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
    write_csv(os.path.join(out, "labels.csv"), ("name", "patient_id", "label"), rows)
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
    columns = ("name", "patient_id", "label")
    write_csv(os.path.join(pool_dir, "labels.csv"), columns, [[r[c] for c in columns] for r in rows])
    return len(items)


def demo_stage(out, dataset_or_cohort=None, *, synthetic, quick=False, device="cpu"):
    """Tiny imbalance study on phantoms with the demo generator's ERM images; prints its table.

    Parameters
    ----------
    out : path
        Demo folder; the stage writes under ``out/classify``.
    dataset_or_cohort : None or path
        Prepared cohort (output folder of `prepare`, or anything `read_pool` reads). Its labelled
        images join the rendered phantom patients (a demo cohort is too small for a study alone).
    synthetic : path or SyntheticSource
        The synthetic ERM images of the 'synthetic' mode: the demo's ERM fine-tuned generator's
        output folder (`retina_fast.gan.stage.generate_stage`), or its checkpoint as a source.
    quick : bool
        Ratios 1:1 and 1:0.1; else all six ratios. Both: ResNet18 at 64 px, 5 epochs, 30 normal +
        30 ERM phantom patients (two images each).
    device : str
        'cpu', 'cuda' or 'auto'.

    Returns
    -------
    dict
        'table', 'results', 'comparisons', 'roc', 'metric_vs_ratio' (paths), 'overlays' (two Grad-CAM
        PNGs), 'pool', 'study' (the study folder).
    """
    from retina_fast.synthetic import SyntheticSource

    from .study import run_study
    from .train import TrainConfig

    root = os.path.join(os.path.abspath(os.fspath(out)), "classify")
    source = SyntheticSource.from_arg(synthetic, name="synthetic")
    # Small and short on purpose: at 128 px and 8 epochs (tried) phantom ERM is so easy that every
    # cell scores AUC 1.0 and the study shows nothing, in 12 minutes; at 64 px the imbalance bites.
    size, epochs, ratios = (64, 5, (1.0, 0.1) if quick else (1.0, 0.5, 0.4, 0.3, 0.2, 0.1))
    n_normal, n_erm = 30, 30
    # two images (eyes) per patient, so the patient-level split matters
    pool, _ = make_phantom_pool(os.path.join(root, "pool"), n_normal, n_erm, images_per_patient=2, size=(96, 128),
                                seed=0)
    n_cohort = _merge_cohort(pool, dataset_or_cohort) if dataset_or_cohort is not None else 0
    print(f"\n## Classifier: imbalance study on phantoms (ResNet18 at {size} px, {epochs} epochs; "
          f"{n_normal} normal + {n_erm} ERM phantom patients x 2 images, {n_cohort} prepared cohort images; "
          f"synthetic ERM = {source.describe()}, the demo's ERM generator)\n")
    study = os.path.join(root, "study")
    if os.path.isdir(study):
        shutil.rmtree(study)   # the generator was retrained: its images are new, results of old ones would mix
    res = run_study(pool, study, synthetic=source, ratios=ratios, seeds=(0,),
                    train=TrainConfig(arch="resnet18", size=size, epochs=epochs, batch_size=10, device=device),
                    n_cam=2, keep_checkpoints=False)
    with open(res.table_md, encoding="utf-8") as f:
        print(f.read())
    cams = sorted(p for p in res.overlays if os.sep + "ratio_1-1_real_" in p)[:2] or res.overlays[:2]
    print(f"ROC curves: {res.roc_png}\nmetrics vs ratio: {res.metric_png}\npaired comparisons: {res.comparisons_png}\n"
          f"Grad-CAM: {', '.join(cams)}")
    return {"table": res.table_md, "results": res.results_csv, "comparisons": res.comparisons_csv, "roc": res.roc_png,
            "metric_vs_ratio": res.metric_png, "overlays": cams, "pool": pool, "study": study}
