"""A synthetic cohort of fundus DICOM files with planted identifiers and known exclusion reasons.

`make_cohort` renders phantom frames (`retina_fast.data.phantom.make_fundus`), writes them as
Ophthalmic Photography DICOM files (`retina_fast.data.dicom.write_dicom`) with fictitious but
identifying header data, adds second visits and deliberately bad files, and records what an ingest
should decide for every file in ``cohort_truth.csv`` and every identifying string in
``planted_identifiers.json``. File names are neutral (``IMG00000.dcm`` ...), in shuffled order, so
nothing about a file's fate can be read from its name.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from retina_fast.checks import check_int, check_number
from retina_fast.data.dicom import TRANSFER_SYNTAXES, write_dicom
from retina_fast.data.phantom import make_fundus
from retina_fast.fileio import atomic_write, write_text_atomic

__all__ = ["TRUTH_COLUMNS", "make_cohort"]

TRUTH_COLUMNS = ("file", "patient_id", "visit", "expected", "label", "age", "sex", "disc_row", "disc_col",
                 "disc_radius", "fov_row", "fov_col", "fov_radius")

_FIRST = ("Anna", "Boris", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi", "Ingrid", "Jonas",
          "Kamala", "Luca", "Mireille", "Nikolai", "Olga", "Pedro", "Quentin", "Rosa", "Sven", "Tamsin")
_LAST = ("Abernathy", "Bergstrom", "Castellano", "Delacroix", "Eriksen", "Fitzgerald", "Gallagher",
         "Halvorsen", "Ibarra", "Jablonski", "Kowalczyk", "Lindqvist", "Marchetti", "Nakamura",
         "Oyelaran", "Pemberton", "Quackenbush", "Rasmussen", "Szczepanski", "Thorvaldsen")
_INSTITUTIONS = (("Saint Clarimond Eye Infirmary", "14 Harbour Lane, Westbridge"),
                 ("Northvale Retina Institute", "302 Orchard Road, Northvale"),
                 ("Cobblestone Ophthalmic Clinic", "7 Mill Street, Ashgrove"))
_PHYSICIANS = ("Okonkwo^Adaeze^^Dr", "Vasquez^Ramon^^Dr", "Whitcombe^Harriet^^Dr")
_OPERATORS = ("Tech^Marguerite", "Tech^Bartholomew", "Tech^Ingeborg")

# The bad files and the reason an ingest must give for each (vocabulary of retina_fast.data.reasons)
_BAD_EXPECTED = {"truncated": "unreadable", "truncated_pixels": "unreadable", "text": "unreadable",
                 "grayscale": "not_colour", "no_pixels": "no_pixel_data", "burned_in": "burned_in_annotation",
                 "zoomed": "zoomed", "dark": "dark", "saturated": "saturated"}
_BAD = tuple(_BAD_EXPECTED)


def _uid(rng):
    # deterministic per seed (pydicom's generate_uid would be random); 2.25 = UUID-derived root
    return "2.25." + str(int.from_bytes(rng.bytes(16), "big"))


def _burn_text(image, text):
    """Burn white text into the top-left corner, as some cameras stamp name and date."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    size = max(12, image.shape[0] // 40)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # older Pillow without sizable default font
        font = ImageFont.load_default()
    draw.text((size, size), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def _render_and_write(task):
    """Worker: render one frame (if any), write the file, return the truth geometry."""
    path = task["path"]
    kind = task["special"]
    geometry = {}
    if kind == "text":
        write_text_atomic(path, "Referral letter for " + task["dicom"]["patient_name"].replace("^", " ")
                          + "\nThis is not a DICOM file.\n")
        return geometry
    image = None
    if kind != "no_pixels":
        image, truth = make_fundus(task["seed"], **task["phantom"])
        geometry = {"disc_row": truth.disc_center[0], "disc_col": truth.disc_center[1],
                    "disc_radius": truth.disc_radius, "fov_row": truth.fov_center[0],
                    "fov_col": truth.fov_center[1], "fov_radius": truth.fov_radius}
        task["dicom"]["extra"]["Laterality"] = truth.eye
        task["dicom"]["extra"]["ImageLaterality"] = truth.eye
        if kind == "grayscale":
            # a red-free (green channel) photograph, as grayscale cameras write
            image = np.ascontiguousarray(image[..., 1])
        elif kind == "burned_in":
            image = _burn_text(image, task["burn_text"])
    write_dicom(path, image, **task["dicom"])
    if kind in ("truncated", "truncated_pixels"):
        # a transfer cut short: 40 % of the file is left, ending inside the pixel data
        with open(path, "r+b") as f:
            f.truncate(int(os.path.getsize(path) * 0.4))
    return geometry


@dataclass
class _Planner:
    """Draws identities and visit tasks from one seeded stream; collects the planted identifiers."""

    rng: np.random.Generator
    size: tuple
    transfer_syntax: str
    used_ids: set = field(default_factory=set)
    planted: list = field(default_factory=list)

    def new_patient(self):
        rng = self.rng
        while True:
            pid = f"PID{rng.integers(10 ** 7, 10 ** 8)}"
            if pid not in self.used_ids:
                self.used_ids.add(pid)
                break
        first, last = _FIRST[rng.integers(len(_FIRST))], _LAST[rng.integers(len(_LAST))]
        sex = "M" if rng.random() < 0.5 else "F"
        inst = int(rng.integers(len(_INSTITUTIONS)))
        age = int(rng.integers(30, 86))
        first_visit = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 8 * 365)))
        # birthday 1-364 days before the age-th anniversary: `age` whole years on the first visit
        anniversary = dt.date(first_visit.year - age, first_visit.month, min(first_visit.day, 28))
        birth = anniversary - dt.timedelta(days=int(rng.integers(1, 365)))
        return {"pid": pid, "name": f"{last}^{first}", "last": last, "first": first, "sex": sex,
                "inst": inst, "birth": birth, "first_visit": first_visit}

    def visit_task(self, p, visit, study_date, label, special, phantom_extra=None):
        rng = self.rng
        study_uid, series_uid, sop_uid = _uid(rng), _uid(rng), _uid(rng)
        accession = f"ACC{rng.integers(10 ** 8, 10 ** 9)}"
        study_id = f"STU{rng.integers(10 ** 6, 10 ** 7)}"
        inst_name, inst_addr = _INSTITUTIONS[p["inst"]]
        physician = _PHYSICIANS[p["inst"]]
        operator = _OPERATORS[int(rng.integers(len(_OPERATORS)))]
        private = f"Captured for {p['first']} {p['last']} ({p['pid']}) at {inst_name}"
        age = _whole_years(p["birth"], study_date)
        frame_seed = int(rng.integers(2 ** 31))
        phantom = {"size": tuple(self.size), "disease": "erm" if label == "erm" else None}
        phantom.update(phantom_extra or {})
        dicom = {
            "patient_name": p["name"], "patient_id": p["pid"], "birth_date": p["birth"], "sex": p["sex"],
            "age": age, "study_date": study_date, "institution": inst_name,
            "transfer_syntax": "explicit" if special == "truncated_pixels" else self.transfer_syntax,
            "study_uid": study_uid, "series_uid": series_uid, "sop_uid": sop_uid,
            "burned_in_annotation": special == "burned_in", "private_text": private,
            "extra": {"InstitutionAddress": inst_addr, "ReferringPhysicianName": physician,
                      "OperatorsName": operator, "AccessionNumber": accession, "StudyID": study_id,
                      "Laterality": "R"},   # the worker sets the rendered eye's side
        }
        self.planted.extend([p["name"], p["last"], p["first"], p["pid"], p["birth"].strftime("%Y%m%d"),
                             study_date.strftime("%Y%m%d"), inst_name, inst_addr, physician, operator,
                             accession, study_id, study_uid, series_uid, sop_uid, private])
        return {
            "seed": frame_seed, "phantom": phantom, "dicom": dicom, "special": special,
            "burn_text": f"{p['last']}, {p['first']}  {p['pid']}  {study_date.isoformat()}",
            "record": {"patient_id": p["pid"], "visit": visit, "label": label, "age": age, "sex": p["sex"]},
        }


def _plan_tasks(planner, n_patients, erm, specials, second_visit_fraction):
    """(task, expected reason) of every file: each patient's visits, then one patient per bad kind."""
    rng = planner.rng
    tasks = []
    for i in range(n_patients):
        p = planner.new_patient()
        label = "erm" if erm[i] else "normal"
        tasks.append((planner.visit_task(p, 1, p["first_visit"], label, None), "accepted"))
        if rng.random() < second_visit_fraction:
            later = p["first_visit"] + dt.timedelta(days=int(rng.integers(90, 720)))
            tasks.append((planner.visit_task(p, 2, later, label, None), "second_visit"))
    extras = {"zoomed": {"zoom": 1.6}, "dark": {"exposure": 0.25}, "saturated": {"exposure": 3.2}}
    for special in specials:
        p = planner.new_patient()
        tasks.append((planner.visit_task(p, 1, p["first_visit"], "normal", special, extras.get(special)),
                      _BAD_EXPECTED[special]))
    return tasks


def _render_all(jobs, workers):
    """Geometry of every job, rendered and written in worker processes (in-process for 1 worker)."""
    n_workers = min(4, os.cpu_count() or 1) if workers is None else workers
    if n_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
            return list(pool.map(_render_and_write, jobs, chunksize=1))
    return [_render_and_write(t) for t in jobs]


def _truth_records(tasks, geometries):
    """One `TRUTH_COLUMNS` record per file, sorted by file name."""
    records = []
    for (task, expected), geo in zip(tasks, geometries):
        rec = {c: "" for c in TRUTH_COLUMNS}
        rec.update(task["record"])
        rec.update({k: round(float(v), 3) for k, v in geo.items()})
        rec["file"] = os.path.basename(task["path"])
        rec["expected"] = expected
        records.append(rec)
    records.sort(key=lambda r: r["file"])
    return records


def make_cohort(out_dir, n_patients, *, seed=0, bad=True, erm_fraction=0.3, transfer_syntax="jpeg",
                size=(1536, 2048), second_visit_fraction=0.3, workers=None):
    """Write a synthetic DICOM cohort with known truth.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder (created). Receives ``IMG#####.dcm`` files, ``cohort_truth.csv`` and
        ``planted_identifiers.json``.
    n_patients : int
        Number of ordinary patients (>= 1). Each has one visit; a fraction `second_visit_fraction`
        has a later second visit (expected 'second_visit').
    seed : int
        Everything (identities, dates, frames) is a function of the seed.
    bad : bool
        Also write one deliberately bad file of each kind, each for its own extra patient:
        two truncated DICOMs (cut at 40 % of their bytes, inside the pixel data: one in
        `transfer_syntax`, on which pydicom's lenient reader returns an empty dataset with a warning
        when the syntax is encapsulated, and one uncompressed, whose header reads but whose pixels
        are too short) and a text file named .dcm ('unreadable'), a grayscale MONOCHROME2 DICOM
        ('not_colour'), a DICOM without Pixel Data ('no_pixel_data'), BurnedInAnnotation YES with
        text burned into the pixels ('burned_in_annotation'), zoom 1.6 ('zoomed'), exposure 0.25
        ('dark') and exposure 3.2 ('saturated').
    erm_fraction : float
        Fraction of the ordinary patients (rounded) with an epiretinal membrane (label 'erm').
    transfer_syntax : {'jpeg', 'explicit', 'rle'}
        Transfer syntax of every DICOM.
    size : (int, int)
        Frame size (H, W) px.
    workers : int, optional
        Worker processes for rendering (default: the CPU count, at most 4); 1 renders in-process.

    Returns
    -------
    list of dict
        One record per file, keys `TRUTH_COLUMNS` (geometry empty ('') for files without pixels).
    """
    n_patients = check_int("n_patients", n_patients, 1)
    check_number("erm_fraction", erm_fraction, 0, 1)
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {sorted(TRANSFER_SYNTAXES)}, "
                         f"got {transfer_syntax!r}")
    check_number("second_visit_fraction", second_visit_fraction, 0, 1)
    workers = check_int("workers", workers, 1, allow_none=True)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_erm = int(round(erm_fraction * n_patients))
    erm = np.zeros(n_patients, bool)
    erm[rng.permutation(n_patients)[:n_erm]] = True
    planner = _Planner(rng, size, transfer_syntax)
    tasks = _plan_tasks(planner, n_patients, erm, list(_BAD) if bad else [], second_visit_fraction)
    # neutral file names in shuffled order: nothing about a file's fate can be read from its name
    order = rng.permutation(len(tasks))
    for k, j in enumerate(order):
        tasks[j][0]["path"] = os.path.join(out_dir, f"IMG{k:05d}.dcm")
    records = _truth_records(tasks, _render_all([t for t, _ in tasks], workers))

    with atomic_write(os.path.join(out_dir, "cohort_truth.csv"), "w", newline="") as f:
        _write_csv(f, records)
    unique = list(dict.fromkeys(planner.planted))
    write_text_atomic(os.path.join(out_dir, "planted_identifiers.json"), json.dumps(unique, indent=1))
    return records


def _whole_years(birth, on):
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _write_csv(f, records):
    w = csv.DictWriter(f, fieldnames=TRUTH_COLUMNS)
    w.writeheader()
    w.writerows(records)
