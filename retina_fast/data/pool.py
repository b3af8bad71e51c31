"""The labelled pool of real images a classifier is trained and tested on, with each image's patient.

`read_pool(source)` reads a folder with a labels CSV, the output folder of `retina_fast.data.prepare`
or a labelled dataset, and returns the images as `Item`s with their patient IDs (for the
patient-level split).
"""
import csv
import os

import numpy as np

from .dataset import label_code
from .items import Item, items_from_source

__all__ = ["read_pool"]


def _read_labels_csv(path, root):
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        name_col = next((c for c in ("name", "file", "image", "output") if c in cols), None)
        if name_col is None or "patient_id" not in cols or "label" not in cols:
            raise ValueError(f"labels CSV {path!r} needs columns name (or file/image), patient_id and label; "
                             f"has {cols}")
        items, pids = [], []
        for i, r in enumerate(reader):
            try:
                lab = label_code(r["label"])
            except ValueError as e:
                raise ValueError(f"labels CSV {path!r} row {i + 2}: {e}") from None
            if lab not in (0, 1):
                raise ValueError(f"labels CSV {path!r} row {i + 2}: label must be normal/erm (0/1), got {r['label']!r}")
            if not r["patient_id"]:
                raise ValueError(f"labels CSV {path!r} row {i + 2}: empty patient_id")
            items.append(Item(root, r[name_col], lab))
            pids.append(r["patient_id"])
    return items, pids


def read_pool(source, labels_csv=None):
    """Labelled real images and their patients.

    Parameters
    ----------
    source : path
        One of: a folder of images with `labels_csv` (or with a ``labels.csv`` inside); the output
        folder of `retina_fast.data.prepare` (``manifest.csv`` + ``dataset/``: accepted images, the
        manifest's pseudonymous key as patient); a dataset folder/zip with dataset.json labels (each
        image its own patient: only right when there is one image per patient).
    labels_csv : path, optional
        CSV with columns ``name`` (relative to `source`), ``patient_id``, ``label`` (normal/erm or 0/1).

    Returns
    -------
    items : list of Item
    patient_ids : numpy array of str
    """
    source = os.fspath(source)
    if labels_csv is None and os.path.isdir(source) and os.path.isfile(os.path.join(source, "labels.csv")):
        labels_csv = os.path.join(source, "labels.csv")
    if labels_csv is not None:
        if not os.path.isfile(labels_csv):
            raise ValueError(f"labels_csv not found: {labels_csv!r}")
        items, pids = _read_labels_csv(labels_csv, source)
    elif os.path.isfile(os.path.join(source, "manifest.csv")) and os.path.isdir(os.path.join(source, "dataset")):
        from retina_fast.data.prepare import read_manifest
        root = os.path.join(source, "dataset")
        items, pids = [], []
        for r in read_manifest(os.path.join(source, "manifest.csv")):
            if r["status"] == "accepted" and r["label"] not in ("", None) and label_code(r["label"]) in (0, 1):
                items.append(Item(root, r["output"], label_code(r["label"])))
                pids.append(r["key"])
    else:
        items = [it for it in items_from_source(source) if it.label in (0, 1)]
        pids = [it.name for it in items]
    if not items:
        raise ValueError(f"pool {source!r} holds no images labelled normal/ERM")
    labels = np.array([it.label for it in items])
    if not ((labels == 0).any() and (labels == 1).any()):
        raise ValueError(f"pool {source!r} needs both normal and ERM images; labels found: {sorted(set(labels))}")
    return items, np.array(pids, dtype=str)
