"""Patient-level train / valid / test split, stratified by label (the paper's 7:1:2).

All images of one patient go to the same split, so that no patient's eye is seen in training and tested
on. Within that rule the split is stratified: patients are grouped by the set of labels of their images
(e.g. {normal}, {erm}, {normal, erm} for a patient with one eye of each), and each group is dealt out
separately so that every split receives about its fraction of each group's images.
"""
import warnings

import numpy as np

SPLITS = ("train", "valid", "test")


def _as_1d(values, name):
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per image), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if a.dtype == object and any(v is None for v in a):
        raise ValueError(f"{name} contains None")
    return a


def _deal(sizes, fractions, rng):
    """Assign patients (image counts `sizes`) to splits so that image totals follow `fractions`.

    Patients are taken in random order; each goes to the split furthest below its share of the images
    dealt so far (ties: the split listed first). Returns the split index of each patient.
    """
    order = rng.permutation(len(sizes))
    counts = np.zeros(len(fractions))
    out = np.empty(len(sizes), np.int64)
    total = 0
    for p in order:
        total += sizes[p]
        deficit = fractions * total - counts
        deficit[fractions == 0] = -np.inf
        s = int(np.argmax(deficit))
        out[p] = s
        counts[s] += sizes[p]
    return out


def patient_split(patient_ids, labels=None, fractions=(0.7, 0.1, 0.2), seed=0):
    """Split images into 'train' / 'valid' / 'test' by patient, stratified by label.

    Parameters
    ----------
    patient_ids : (n,) array-like
        Patient of each image (strings or integers; equal values = same patient).
    labels : (n,) array-like or None
        Class of each image (e.g. 0 = normal, 1 = ERM). None: no stratification.
    fractions : (float, float, float)
        Target fractions of the images in train, valid and test; non-negative, summing to 1. A zero
        fraction leaves that split empty.
    seed : int
        Seed of ``numpy.random.default_rng``. The result depends only on the seed and on the
        (patient, label) pairs, not on the order of the images.

    Returns
    -------
    (n,) numpy array of str
        'train', 'valid' or 'test' for each image.

    Warns
    -----
    UserWarning
        When some split with a positive fraction gets no image of some label because too few patients
        have that label (fewer than the number of such splits).

    Notes
    -----
    Patients are dealt out within each stratum (set of labels of the patient's images) in a seeded
    random order, each to the split furthest below its target share of images. Then, for each label,
    a split left without that label takes one patient carrying it from the split with the most such
    patients, if that split keeps at least one.
    """
    ids = _as_1d(patient_ids, "patient_ids")
    n = ids.size
    if labels is None:
        labs = np.zeros(n, np.int64)
    else:
        labs = _as_1d(labels, "labels")
        if labs.size != n:
            raise ValueError(f"labels has {labs.size} entries but patient_ids has {n}")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or not np.isfinite(fr).all() or (fr < 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions!r}")
    try:
        uids, pat = np.unique(ids, return_inverse=True)
        ulabs, lab = np.unique(labs, return_inverse=True)
    except TypeError as e:
        raise TypeError(f"patient_ids and labels must each be of one comparable type: {e}") from None
    n_pat, n_lab = uids.size, ulabs.size
    # per patient: image count and per-label image counts
    per = np.zeros((n_pat, n_lab), np.int64)
    np.add.at(per, (pat, lab), 1)
    sizes = per.sum(axis=1)
    carries = per > 0
    rng = np.random.default_rng(seed)
    split_of = np.empty(n_pat, np.int64)
    # strata (label sets) in sorted order, members in sorted patient order: order-independent result
    _, stratum = np.unique(carries, axis=0, return_inverse=True)
    for k in range(stratum.max() + 1):
        members = np.flatnonzero(stratum == k)
        split_of[members] = _deal(sizes[members], fr, rng)

    # repair: every split with a positive fraction should hold every label
    active = np.flatnonzero(fr > 0)
    n_labels_of = carries.sum(axis=1)
    for li in range(n_lab):
        carriers = np.flatnonzero(carries[:, li])
        for s in active:
            if (split_of[carriers] == s).any():
                continue
            have = np.bincount(split_of[carriers], minlength=3)
            donor = int(np.argmax(have))
            if have[donor] < 2:
                continue
            # move the donor's patient with the fewest other labels, then the fewest images, so that
            # the move is unlikely to take another label's last patient from the donor
            cand = carriers[split_of[carriers] == donor]
            split_of[cand[np.lexsort((sizes[cand], n_labels_of[cand]))[0]]] = s
    for li in range(n_lab):
        carriers = np.flatnonzero(carries[:, li])
        missing = [SPLITS[s] for s in active if not (split_of[carriers] == s).any()]
        if missing:
            warnings.warn(f"patient_split: no image of label {ulabs[li].item()!r} in split(s) {missing}: only "
                          f"{carriers.size} patient(s) have that label", UserWarning, stacklevel=2)
    return np.asarray(SPLITS, dtype=object)[split_of[pat]].astype(str)


def check_no_leakage(patient_ids, assign):
    """Raise ValueError if any patient has images in more than one split.

    Parameters
    ----------
    patient_ids : (n,) array-like
        Patient of each image.
    assign : (n,) array-like of str
        Split of each image ('train', 'valid' or 'test'), e.g. from `patient_split`.

    Raises
    ------
    ValueError
        Naming up to 5 leaking patients and their splits; also for lengths that differ or unknown split
        names.
    """
    ids = _as_1d(patient_ids, "patient_ids")
    a = _as_1d(assign, "assign").astype(str)
    if a.size != ids.size:
        raise ValueError(f"assign has {a.size} entries but patient_ids has {ids.size}")
    unknown = sorted(set(np.unique(a)) - set(SPLITS))
    if unknown:
        raise ValueError(f"assign holds unknown split names {unknown}; expected {SPLITS}")
    uids, pat = np.unique(ids, return_inverse=True)
    seen = np.zeros((uids.size, 3), bool)
    index = {name: i for i, name in enumerate(SPLITS)}
    seen[pat, [index[v] for v in a]] = True
    bad = np.flatnonzero(seen.sum(axis=1) > 1)
    if bad.size:
        desc = ", ".join(f"{uids[p].item()!r} in {[SPLITS[s] for s in np.flatnonzero(seen[p])]}" for p in bad[:5])
        raise ValueError(f"{bad.size} patient(s) appear in more than one split: {desc}")


def split_summary(assign, labels=None):
    """Image counts per split (and per label): ``{split: {label: count}}``, or ``{split: count}``.

    Parameters
    ----------
    assign : (n,) array-like of str
    labels : (n,) array-like or None
    """
    a = _as_1d(assign, "assign").astype(str)
    if labels is None:
        return {s: int((a == s).sum()) for s in SPLITS}
    labs = _as_1d(labels, "labels")
    if labs.size != a.size:
        raise ValueError(f"labels has {labs.size} entries but assign has {a.size}")
    return {s: {(v.item() if hasattr(v, "item") else v): int(((a == s) & (labs == v)).sum())
                for v in np.unique(labs)} for s in SPLITS}
