"""retina_fast.classify.split: patient-level, stratified, deterministic 7:1:2 split."""
import warnings

import numpy as np
import pytest

from retina_fast.classify.split import SPLITS, check_no_leakage, patient_split, split_summary


def _cohort(n_patients, erm_fraction=0.25, seed=0, mixed_fraction=0.05):
    """Images of patients with 1-4 images each; most patients have one label, a few one eye of each."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for p in range(n_patients):
        k = int(rng.integers(1, 5))
        u = rng.random()
        if u < mixed_fraction and k >= 2:
            lab = [1] + [0] * (k - 1)
        else:
            lab = [int(u < erm_fraction + mixed_fraction)] * k
        ids += [f"P{p:05d}"] * k
        labels += lab
    perm = rng.permutation(len(ids))
    return np.array(ids)[perm], np.array(labels)[perm]


def test_no_leakage_fractions_and_stratification():
    ids, labels = _cohort(400)
    assign = patient_split(ids, labels, seed=3)
    assert set(np.unique(assign)) == set(SPLITS)
    check_no_leakage(ids, assign)
    for pid in np.unique(ids):                               # every patient's images in one split
        assert np.unique(assign[ids == pid]).size == 1
    target = dict(zip(SPLITS, (0.7, 0.1, 0.2)))
    for s in SPLITS:
        assert np.mean(assign == s) == pytest.approx(target[s], abs=0.02)
        for lab in (0, 1):                                   # stratified: each label in the same fractions
            frac = np.mean(assign[labels == lab] == s)
            assert frac == pytest.approx(target[s], abs=0.03), (s, lab)


def test_stratification_beats_unstratified_split():
    # with a rare label, stratification keeps its share per split close to the target far more
    # reliably than a plain random patient split
    errs_strat, errs_plain = [], []
    for seed in range(20):
        ids, labels = _cohort(150, erm_fraction=0.08, seed=100 + seed, mixed_fraction=0.0)
        for lab_arg, errs in ((labels, errs_strat), (None, errs_plain)):
            a = patient_split(ids, lab_arg, seed=seed)
            errs.append(abs(np.mean(a[labels == 1] == "test") - 0.2))
    assert np.mean(errs_strat) < 0.5 * np.mean(errs_plain)


def test_deterministic_and_order_independent():
    ids, labels = _cohort(120, seed=5)
    a = patient_split(ids, labels, seed=7)
    assert np.array_equal(a, patient_split(ids, labels, seed=7))
    perm = np.random.default_rng(9).permutation(ids.size)
    b = patient_split(ids[perm], labels[perm], seed=7)
    assert np.array_equal(b, a[perm])
    assert not np.array_equal(a, patient_split(ids, labels, seed=8))


def test_integer_ids_and_string_labels():
    ids, labels = _cohort(60, seed=6)
    int_ids = np.array([int(p[1:]) for p in ids])
    str_labels = np.where(labels == 1, "erm", "normal")
    a = patient_split(int_ids, str_labels, seed=1)
    check_no_leakage(int_ids, a)
    summary = split_summary(a, str_labels)
    assert sum(summary[s]["erm"] for s in SPLITS) == int((labels == 1).sum())
    assert all(summary[s]["erm"] > 0 and summary[s]["normal"] > 0 for s in SPLITS)


def test_small_cohort_every_split_gets_every_label():
    # 3 ERM patients and 3 normal ones: the deal alone may put two ERM patients together
    ids = np.array(["a", "a", "b", "c", "d", "d", "d", "e", "f"])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    for seed in range(30):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            a = patient_split(ids, labels, seed=seed)
        check_no_leakage(ids, a)
        for lab in (0, 1):
            assert set(a[labels == lab]) == set(SPLITS), (seed, lab)


def test_warns_when_a_label_has_too_few_patients():
    ids = np.array(["a", "b", "c", "d", "e", "f", "g"])
    labels = np.array([1, 1, 0, 0, 0, 0, 0])
    with pytest.warns(UserWarning, match="label 1"):
        a = patient_split(ids, labels, seed=0)
    assert set(a[labels == 0]) == set(SPLITS)


def test_zero_fraction_and_no_labels():
    ids, labels = _cohort(80, seed=11)
    a = patient_split(ids, labels, fractions=(0.8, 0.2, 0.0), seed=0)
    assert "test" not in set(a) and np.mean(a == "valid") == pytest.approx(0.2, abs=0.03)
    b = patient_split(ids, None, seed=0)
    check_no_leakage(ids, b)
    assert split_summary(b)["train"] == int((b == "train").sum())


def test_check_no_leakage_finds_planted_leak():
    ids = np.array(["p1", "p1", "p2", "p3", "p3"])
    ok = np.array(["train", "train", "test", "valid", "valid"])
    check_no_leakage(ids, ok)
    bad = ok.copy()
    bad[4] = "test"
    with pytest.raises(ValueError, match=r"'p3' in \['valid', 'test'\]"):
        check_no_leakage(ids, bad)
    with pytest.raises(ValueError, match="unknown split"):
        check_no_leakage(ids, np.array(["train", "train", "tests", "valid", "valid"]))
    with pytest.raises(ValueError, match="assign has 4"):
        check_no_leakage(ids, ok[:4])


def test_errors():
    ids = np.array(["a", "b", "c"])
    with pytest.raises(ValueError, match="labels has 2"):
        patient_split(ids, [0, 1])
    with pytest.raises(ValueError, match="fractions"):
        patient_split(ids, [0, 1, 0], fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        patient_split(ids, [0, 1, 0], fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="patient_ids is empty"):
        patient_split([], [])
    with pytest.raises(ValueError, match="patient_ids contains None"):
        patient_split(np.array(["a", None, "c"], dtype=object), [0, 1, 0])
