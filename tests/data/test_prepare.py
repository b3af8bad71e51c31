"""Ingest (`retina_fast.data.prepare`): exclusions, anonymisation, geometry, resume, inputs, dataset layout."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from retina_fast.data import REASONS, prepare
from retina_fast.data.cohort import make_cohort
from retina_fast.data.dataset import encode_png, image_name, list_images, read_image
from retina_fast.data.dicom import (
    age_from_dates,
    anonymise,
    header_from_dataset,
    parse_age_string,
    patient_key,
    read_dicom,
    read_dicom_header,
)
from retina_fast.data.fov import FieldOfView, crop_geometry
from retina_fast.data.phantom import make_fundus
from retina_fast.data.prepare import (
    MANIFEST_COLUMNS,
    PrepareSettings,
    process_image,
    read_manifest,
)

SMALL = (384, 512)
OUT_SIZE = 256
SALT = "test-salt-0123456789"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A JPEG DICOM cohort at 384 x 512 with every kind of bad file and second visits."""
    src = tmp_path_factory.mktemp("cohort")
    records = make_cohort(src, 12, seed=5, size=SMALL, workers=2, second_visit_fraction=0.35)
    return src, {r["file"]: r for r in records}


@pytest.fixture(scope="module")
def prepared(cohort, tmp_path_factory):
    src, _truth = cohort
    out = tmp_path_factory.mktemp("out") / "prepared"
    res = prepare(src, out, size=OUT_SIZE, workers=2, salt=SALT, labels=src / "cohort_truth.csv",
                  zip=True, progress=False)
    return out, res


def _tree_bytes(folder):
    """{relative path: bytes} of every file under `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = Path(p).read_bytes()
    return out


def _png_chunk_types(data):
    types, pos = [], 8
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        types.append(data[pos + 4:pos + 8])
        pos += 12 + n
    return types


# ------------------------------------------------------------------------------------- cohort verdicts
def test_every_file_gets_its_expected_verdict(cohort, prepared):
    _src, truth = cohort
    out, res = prepared
    rows = read_manifest(out / "manifest.csv")
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert [r["source"] for r in rows] == sorted(truth)
    kinds = set()
    for r in rows:
        t = truth[r["source"]]
        got = "accepted" if r["status"] == "accepted" else r["reason"]
        assert got == t["expected"], (r["source"], got, t["expected"])
        assert r["reason"] in REASONS or (r["status"] == "accepted" and r["reason"] == "")
        kinds.add(t["expected"])
    # the cohort really has every kind of bad file (and accepted ones)
    assert kinds == set(REASONS) - {"disc_not_found"} | {"accepted"}
    assert res.accepted == sum(t["expected"] == "accepted" for t in truth.values())
    assert sum(res.excluded.values()) == len(truth) - res.accepted


def test_manifest_fields_match_truth(cohort, prepared):
    _src, truth = cohort
    out, _ = prepared
    rows = read_manifest(out / "manifest.csv")
    keys = {}
    for r in rows:
        t = truth[r["source"]]
        if r["status"] == "accepted" or r["reason"] in ("second_visit", "burned_in_annotation", "dark"):
            assert int(r["age"]) == int(t["age"]) and r["sex"] == t["sex"]
        if r["key"]:
            assert len(r["key"]) == 16 and int(r["key"], 16) >= 0
            keys.setdefault(t["patient_id"], set()).add(r["key"])
        if r["status"] != "accepted":
            assert r["output"] == ""
            continue
        assert r["label"] == str({"normal": 0, "erm": 1}[t["label"]])
        # FOV in source pixels within 1 % of its radius
        fr = float(t["fov_radius"])
        assert abs(float(r["fov_row"]) - float(t["fov_row"])) < 0.01 * fr
        assert abs(float(r["fov_col"]) - float(t["fov_col"])) < 0.01 * fr
        assert abs(float(r["fov_radius"]) - fr) < 0.01 * fr
        # disc in OUTPUT pixels: the truth mapped through the crop that the manifest's FOV implies
        g = crop_geometry(FieldOfView((float(r["fov_row"]), float(r["fov_col"])), float(r["fov_radius"])),
                          OUT_SIZE)
        expected = g.to_output((float(t["disc_row"]), float(t["disc_col"])))
        err = np.hypot(float(r["disc_row"]) - expected[0], float(r["disc_col"]) - expected[1])
        assert err < 0.25 * float(t["disc_radius"]) * g.scale
        img = read_image(out / "dataset", r["output"])
        assert img.shape == (OUT_SIZE, OUT_SIZE, 3) and img.dtype == np.uint8
    # one key per patient, different patients different keys
    assert all(len(v) == 1 for v in keys.values())
    assert len({next(iter(v)) for v in keys.values()}) == len(keys)


def test_second_visit_keeps_earliest(cohort, prepared):
    _src, truth = cohort
    out, _ = prepared
    by_patient = {}
    for r in read_manifest(out / "manifest.csv"):
        by_patient.setdefault(truth[r["source"]]["patient_id"], []).append((truth[r["source"]], r))
    repeat = [v for v in by_patient.values() if len(v) > 1]
    assert repeat, "the cohort should have second visits"
    for visits in repeat:
        first = min(visits, key=lambda tv: int(tv[0]["visit"]))
        assert first[1]["status"] == "accepted"
        assert all(r["reason"] == "second_visit" for t, r in visits if r is not first[1])


# ---------------------------------------------------------------------------------------- anonymising
def test_no_planted_identifier_in_any_output_byte(cohort, prepared):
    src, _ = cohort
    out, _ = prepared
    planted = json.loads((src / "planted_identifiers.json").read_text())
    assert len(planted) > 50
    files = _tree_bytes(out)
    assert "manifest.csv" in files and "dataset.zip" in files and "dataset/dataset.json" in files
    for name, data in files.items():
        for value in planted:
            assert value.encode() not in data, (name, value)
            assert value.upper().encode() not in data.upper() or len(value) < 4, (name, value)
        if name.endswith(".png"):
            assert _png_chunk_types(data) == [b"IHDR", b"IDAT", b"IEND"], name
    # the salt lives only in OUT/salt (or nowhere when given), never in the manifest or dataset
    assert SALT.encode() not in b"".join(files.values())
    assert not (out / "salt").exists()


def test_generated_salt_is_stored_and_reused(tmp_path, cohort):
    src, _ = cohort
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(os.listdir(src))[:3]:
        if f.endswith(".dcm"):
            shutil.copy(src / f, few / f)
    res = prepare(few, tmp_path / "o", size=64, workers=1, progress=False)
    salt = (tmp_path / "o" / "salt").read_text().strip()
    assert len(salt) == 32 and oct((tmp_path / "o" / "salt").stat().st_mode)[-3:] == "600"
    assert salt.encode() not in (tmp_path / "o" / "manifest.csv").read_bytes()
    keys = [r["key"] for r in res.rows]
    res2 = prepare(few, tmp_path / "o", size=64, workers=1, progress=False)  # resumes with stored salt
    assert [r["key"] for r in res2.rows] == keys
    with pytest.raises(ValueError, match="salt"):
        prepare(few, tmp_path / "o", size=64, workers=1, salt="another", progress=False)
    with pytest.raises(ValueError, match="settings"):
        prepare(few, tmp_path / "o", size=128, workers=1, progress=False)


def test_header_anonymisation_units(cohort):
    src, truth = cohort
    name = next(f for f, t in truth.items() if t["expected"] == "accepted")
    h = read_dicom_header(src / name)
    anon = anonymise(h, SALT)
    assert set(anon) == {"key", "age", "sex"}
    assert anon["key"] == patient_key(truth[name]["patient_id"], SALT) != patient_key(truth[name]["patient_id"], "x")
    assert anon["age"] == int(truth[name]["age"]) and anon["sex"] == truth[name]["sex"]
    assert parse_age_string("063Y") == 63 and parse_age_string("006M") == 0.5 and parse_age_string("6Q") is None
    assert age_from_dates("19600315", "20200314") == 59 and age_from_dates("19600315", "20200315") == 60
    ds = pydicom.Dataset()
    ds.PatientID, ds.PatientBirthDate, ds.StudyDate, ds.PatientSex = "X1", "19500601", "20200101", "F"
    h = header_from_dataset(ds)
    assert h.age == 69 and h.sex == "F" and not h.has_pixels
    with pytest.raises(ValueError, match="salt"):
        patient_key("X1", "")


# ------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_jpeg_app14_dcmd.dcm", "SC_rgb_small_odd_jpeg.dcm"])
def test_read_dicom_matches_pydicom(name):
    """Our reader (Pillow fast path for JPEG Baseline YCbCr) returns exactly pydicom's RGB pixels."""
    path = pydicom.data.get_testdata_file(name)
    image, _header = read_dicom(path)
    assert image.dtype == np.uint8 and image.ndim == 3
    np.testing.assert_array_equal(image, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize("syntax", ["explicit", "rle"])
def test_other_transfer_syntaxes(tmp_path, syntax):
    records = make_cohort(tmp_path / "c", 2, seed=9, size=SMALL, bad=False, workers=1,
                          second_visit_fraction=0.0, transfer_syntax=syntax)
    res = prepare(tmp_path / "c", tmp_path / "o", size=128, workers=1, progress=False)
    assert res.accepted == len(records) == 2


def test_png_and_jpeg_inputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image, _truth = make_fundus(11, size=SMALL)
    Image.fromarray(image).save(src / "a.png")
    Image.fromarray(image).save(src / "b.jpg", quality=92)
    Image.fromarray(image[..., 1]).save(src / "c_grey.png")
    Image.fromarray(np.repeat(image[..., 1:2], 3, axis=2)).save(src / "d_grey_rgb.png")
    (src / "e.png").write_bytes(b"not an image at all")
    (src / "notes.txt").write_text("ignored: not a candidate extension")
    res = prepare(src, tmp_path / "o", size=128, workers=1, progress=False)
    got = {r["source"]: (r["status"], r["reason"]) for r in res.rows}
    assert got == {"a.png": ("accepted", ""), "b.jpg": ("accepted", ""), "c_grey.png": ("excluded", "not_colour"),
                   "d_grey_rgb.png": ("excluded", "not_colour"), "e.png": ("excluded", "unreadable")}
    a, b = (read_image(tmp_path / "o" / "dataset", image_name(i)).astype(int) for i in (0, 1))
    assert np.abs(a - b).mean() < 3  # JPEG vs PNG of the same frame
    assert all(r["key"] == "" for r in res.rows)


@pytest.mark.parametrize("exposure,expected", [(0.25, "dark"), (0.3, "dark"), (0.5, None), (1.0, None),
                                               (1.5, None), (2.0, None), (3.0, "saturated"), (3.2, "saturated")])
def test_exposure_checks_on_phantoms(exposure, expected):
    settings = PrepareSettings(size=64)
    for seed in range(3):
        image, _ = make_fundus(seed, size=(192, 256), exposure=exposure)
        reason, _, _ = process_image(Image.fromarray(image), settings)
        assert reason == expected, (seed, exposure, reason)


def test_disc_not_found_and_zoomed_images(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    image, truth = make_fundus(4, size=SMALL)
    a = image.astype(np.float32)
    rr, cc = np.mgrid[:SMALL[0], :SMALL[1]]
    dist = np.hypot(rr - truth.disc_center[0], cc - truth.disc_center[1])
    ring = (dist > 1.8 * truth.disc_radius) & (dist < 2.5 * truth.disc_radius)
    a[dist < 1.7 * truth.disc_radius] = np.median(a[ring], axis=0)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(src / "no_disc.png")
    Image.fromarray(make_fundus(4, size=SMALL, zoom=1.4)[0]).save(src / "zoomed.png")
    Image.fromarray(image).save(src / "ok.png")
    res = prepare(src, tmp_path / "o", size=128, workers=1, progress=False)
    got = {r["source"]: r["reason"] or r["status"] for r in res.rows}
    assert got == {"no_disc.png": "disc_not_found", "zoomed.png": "zoomed", "ok.png": "accepted"}


def test_bundled_dicoms_unsupported_syntax_and_monochrome(tmp_path):
    """JPEG Lossless needs pylibjpeg/gdcm (not installed): 'unreadable', not a crash; MONOCHROME2: 'not_colour'."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("SC_rgb_jpeg_gdcm.dcm", "MR_small_RLE.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), src / name)
    res = prepare(src, tmp_path / "o", size=64, workers=1, progress=False)
    assert {r["source"]: r["reason"] for r in res.rows} == {"SC_rgb_jpeg_gdcm.dcm": "unreadable",
                                                           "MR_small_RLE.dcm": "not_colour"}
    assert res.rows[0]["key"] and res.rows[0]["sex"] == "F"  # header values still read for the manifest


def test_real_photo_through_the_pipeline(tmp_path):
    """skimage's real retina photograph, framed like a camera (circle clipped at top and bottom) and
    written as a JPEG DICOM: accepted, and its disc (viewed: rows 555-750, cols 120-320 of the photo)
    lands where the crop maps it."""
    import skimage.data

    from retina_fast.data.dicom import write_dicom

    photo = skimage.data.retina()
    scale, top, left = 850 / photo.shape[0], -41, 87
    frame = Image.new("RGB", (1024, 768))
    frame.paste(Image.fromarray(photo).resize((850, 850), Image.Resampling.LANCZOS), (left, top))
    src = tmp_path / "src"
    src.mkdir()
    write_dicom(src / "photo.dcm", np.asarray(frame), patient_name="Real^Photo", patient_id="R1",
                birth_date="19500101", sex="M", age=70, study_date="20200101", institution="X")
    res = prepare(src, tmp_path / "o", size=512, workers=1, progress=False)
    (row,) = res.rows
    assert row["status"] == "accepted", row
    g = crop_geometry(FieldOfView((row["fov_row"], row["fov_col"]), row["fov_radius"]), 512)
    lo = g.to_output((555 * scale + top, 120 * scale + left))
    hi = g.to_output((750 * scale + top, 320 * scale + left))
    assert lo[0] < row["disc_row"] < hi[0] and lo[1] < row["disc_col"] < hi[1], (row, lo, hi)
    assert abs(row["fov_radius"] - 697 * scale) < 0.01 * 697 * scale


def test_encode_png_roundtrip():
    rng = np.random.default_rng(0)
    for a in (rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), rng.integers(0, 256, (20, 9), dtype=np.uint8)):
        for level in (0, 1, 6):
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(a, level)))), a)
    with pytest.raises(ValueError, match="compress_level"):
        encode_png(a, 11)
    with pytest.raises(ValueError, match="image"):
        encode_png(a.astype(np.float32))


# ------------------------------------------------------------------------------------ dataset on disk
def test_dataset_folder_and_zip_layout(cohort, prepared):
    _src, truth = cohort
    out, res = prepared
    folder, zipped = out / "dataset", out / "dataset.zip"
    items = list_images(folder)
    assert items == list_images(zipped)
    meta = json.loads((folder / "dataset.json").read_text())
    assert [tuple(x) for x in meta["labels"]] == items
    assert len(items) == res.accepted
    rows = {r["output"]: r for r in read_manifest(out / "manifest.csv") if r["output"]}
    for name, label in items:
        assert name.startswith("00000/img") and name.endswith(".png")
        assert label == {"normal": 0, "erm": 1}[truth[rows[name]["source"]]["label"]]
        np.testing.assert_array_equal(read_image(folder, name), read_image(zipped, name))
    # numbering is the sorted source position: excluded sources leave gaps
    for i, r in enumerate(read_manifest(out / "manifest.csv")):
        assert r["output"] in ("", image_name(i))
    with pytest.raises(ValueError, match="no image"):
        read_image(zipped, "00000/img99999999.png")
    with pytest.raises(ValueError, match="path"):
        list_images(out / "missing")


# --------------------------------------------------------------------------------- resume, parallelism
def test_resume_after_damage_equals_clean_run(cohort, prepared, tmp_path):
    """workers=1 run, damaged (outputs deleted, journal lines dropped and one cut) and rerun == clean run."""
    src, _ = cohort
    clean_out, _ = prepared
    out = tmp_path / "resumed"
    prepare(src, out, size=OUT_SIZE, workers=1, salt=SALT, labels=src / "cohort_truth.csv", progress=False)
    journal = out / ".journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    accepted = [json.loads(x) for x in lines if json.loads(x)["status"] == "accepted"]
    os.remove(out / "dataset" / accepted[0]["output"])                    # outputs lost
    os.remove(out / "dataset" / accepted[-1]["output"])
    kept = lines[:3] + lines[6:-1] + [lines[-1][: len(lines[-1]) // 2]]  # lines lost, last one cut by a kill
    journal.write_text("".join(kept))
    os.remove(out / "manifest.csv")
    (out / "dataset" / "00000" / f".img00000001.png.tmp{_dead_pid()}").write_bytes(b"half")  # a killed writer's
    res = prepare(src, out, size=OUT_SIZE, workers=2, salt=SALT, labels=src / "cohort_truth.csv", zip=True,
                  progress=False)
    lost = {json.loads(x)["source"] for x in lines[3:6] + lines[-1:]} | {accepted[0]["source"], accepted[-1]["source"]}
    assert res.reused == len(lines) - len(lost) and len(lost) >= 5  # only the damaged sources were redone
    assert len(_journal_lines(journal)) == len(lines)  # compacted again: one line per source
    a, b = _tree_bytes(clean_out / "dataset"), _tree_bytes(out / "dataset")
    assert a == b
    assert (clean_out / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    assert res.accepted == len(list_images(out / "dataset"))
    # the zip of a resumed run, written later, is byte for byte the clean run's
    assert (clean_out / "dataset.zip").read_bytes() == (out / "dataset.zip").read_bytes()


def _dead_pid():
    """The id of a process that has exited (its temporaries count as stale)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _journal_lines(path):
    return [x for x in path.read_text().splitlines() if x.strip()]


def test_resume_after_kill(cohort, prepared, tmp_path):
    """A prepare killed mid-run (SIGKILL) and rerun gives the clean run's dataset and manifest."""
    src, _ = cohort
    clean_out, _ = prepared
    out = tmp_path / "killed"
    code = ("import sys; from retina_fast.data import prepare; "
            f"prepare({str(src)!r}, {str(out)!r}, size={OUT_SIZE}, workers=1, salt={SALT!r}, progress=False)")
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ".cache/numba"))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    journal = out / ".journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 8:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    n_before = len(_journal_lines(journal)) if journal.exists() else 0
    res = prepare(src, out, size=OUT_SIZE, workers=2, salt=SALT, labels=src / "cohort_truth.csv", progress=False)
    assert n_before < len(res.rows)  # it really was cut short
    assert _tree_bytes(clean_out / "dataset") == _tree_bytes(out / "dataset")
    assert (clean_out / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()


# ------------------------------------------------------------------------------------------- CLI, args
def test_cli_prepare(tmp_path, cohort, capsys):
    from retina_fast.cli import main

    src, truth = cohort
    assert main(["prepare", str(src), str(tmp_path / "o"), "--size", "64", "--workers", "2", "--zip",
                 "--png-compress-level", "0"]) == 0
    text = capsys.readouterr().out
    n_ok = sum(t["expected"] == "accepted" for t in truth.values())
    assert f"{len(truth)} source files: {n_ok} accepted" in text
    assert "second_visit" in text and "burned_in_annotation" in text
    assert (tmp_path / "o" / "dataset.zip").exists()
    assert json.loads((tmp_path / "o" / "dataset" / "dataset.json").read_text())["labels"] is None  # no --labels


def test_cli_salt_file_gives_the_same_keys_as_the_salt(tmp_path, cohort, prepared, capsys):
    from retina_fast.cli import main

    src, _ = cohort
    (tmp_path / "salt.txt").write_text(SALT + "\n")
    assert main(["prepare", str(src), str(tmp_path / "o"), "--size", str(OUT_SIZE), "--workers", "2",
                 "--salt-file", str(tmp_path / "salt.txt"), "--labels", str(src / "cohort_truth.csv")]) == 0
    keys = {r["source"]: r["key"] for r in prepared[1].rows}
    got = {r["source"]: r["key"] for r in prepare(src, tmp_path / "o", size=OUT_SIZE, workers=1, salt=SALT,
                                                     labels=src / "cohort_truth.csv", progress=False).rows}
    assert got == keys and any(keys.values())
    assert not (tmp_path / "o" / "salt").exists()   # a given salt is never stored
    (tmp_path / "empty.txt").write_text("\n")
    for bad, why in (("empty.txt", "first line is empty"), ("missing.txt", "cannot be read")):
        with pytest.raises(SystemExit):
            main(["prepare", str(src), str(tmp_path / "o2"), "--salt-file", str(tmp_path / bad)])
        err = capsys.readouterr().err
        assert bad in err and why in err


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    from retina_fast.cli import main

    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tmp_path / "nope"), str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("retina-fast prepare: error: ") and "nope" in err
    assert "Traceback" not in err
    monkeypatch.setenv("RETINA_FAST_TRACEBACK", "1")
    with pytest.raises(ValueError, match="nope"):
        main(["prepare", str(tmp_path / "nope"), str(tmp_path / "o")])


def test_bad_arguments(tmp_path, cohort):
    src, _ = cohort
    with pytest.raises(ValueError, match="src"):
        prepare(tmp_path / "nope", tmp_path / "o")
    with pytest.raises(ValueError, match="workers"):
        prepare(src, tmp_path / "o", workers=0)
    with pytest.raises(ValueError, match="resample"):
        prepare(src, tmp_path / "o", resample="nearest")
    with pytest.raises(ValueError, match="png_compress_level"):
        prepare(src, tmp_path / "o", png_compress_level=12)
    bad = tmp_path / "labels.csv"
    bad.write_text("name,class\nx,1\n")
    with pytest.raises(ValueError, match="labels"):
        prepare(src, tmp_path / "o2", labels=bad)
    bad.write_text("file,label\nx.dcm,glaucoma\n")
    with pytest.raises(ValueError, match="labels CSV .*line 2.*label must be"):
        prepare(src, tmp_path / "o2", labels=bad)
    assert not (tmp_path / "o2").exists()  # inputs are checked before OUT is created
    for size in (0, -5, 31, 64.0, True):
        with pytest.raises(ValueError, match="size"):
            prepare(src, tmp_path / "o3", size=size)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not a source")
    with pytest.raises(ValueError, match="no source files"):
        prepare(tmp_path / "empty", tmp_path / "o4")
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()


# ----------------------------------------------------------------------- temporaries, zip, source names
def _few_pngs(folder, seeds=(11, 12), sub=""):
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for s in seeds:
        Image.fromarray(make_fundus(s, size=SMALL)[0]).save(folder / sub / f"eye{s}.png")
    return folder


def test_zip_is_byte_reproducible(tmp_path):
    """Member times, permissions and order do not reach the zip: the same dataset gives the same bytes."""
    src = _few_pngs(tmp_path / "src")
    res = prepare(src, tmp_path / "o", size=64, workers=1, zip=True, progress=False)
    first = Path(res.zip).read_bytes()
    for root, _, files in os.walk(res.dataset):  # a later run: other file times and modes
        for f in files:
            os.utime(os.path.join(root, f), (1e9, 1e9))
            os.chmod(os.path.join(root, f), 0o600)
    os.remove(res.zip)
    res2 = prepare(src, tmp_path / "o", size=64, workers=1, zip=True, progress=False)
    assert res2.reused == 2 and Path(res2.zip).read_bytes() == first
    other = prepare(src, tmp_path / "o2", size=64, workers=1, zip=True, salt=(tmp_path / "o" / "salt").read_text().strip(),
                    progress=False)
    assert Path(other.zip).read_bytes() == first  # a second clean run
    import zipfile
    with zipfile.ZipFile(res.zip) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["dataset.json", "00000/img00000000.png", "00000/img00000001.png"]
    assert {(i.date_time, i.external_attr >> 16) for i in infos} == {((1980, 1, 1, 0, 0, 0), 0o100644)}


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    """`prepare --zip` killed while zipping leaves OUT/.dataset.zip.tmpPID: the next run removes it, but
    not the temporary of a writer still running."""
    src = _few_pngs(tmp_path / "src", seeds=(11,))
    out = tmp_path / "o"
    prepare(src, out, size=64, workers=1, progress=False)
    stale = out / f".dataset.zip.tmp{_dead_pid()}"
    stale.write_bytes(b"PK half a zip")
    (out / "dataset" / "00000" / f".img00000000.png.tmp{_dead_pid()}").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = out / f".manifest.csv.tmp{live.pid}"
        alive.write_text("being written")
        res = prepare(src, out, size=64, workers=1, zip=True, progress=False)
        assert not stale.exists() and alive.exists()
    finally:
        live.kill()
        live.wait()
    assert sorted(p.name for p in (out / "dataset" / "00000").iterdir()) == ["img00000000.png"]
    assert res.accepted == 1 and (out / "dataset.zip").exists()


def test_no_source_names_keeps_names_out_of_every_output(tmp_path):
    """--no-source-names: file and folder names (here a patient's) reach no output; labels still apply,
    a rerun resumes, and the hash is the salted `source_key`."""
    from retina_fast.data.prepare import source_key

    src = _few_pngs(tmp_path / "src", seeds=(11, 12), sub="Doe_Jane_1961")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nDoe_Jane_1961/eye11.png,erm\nDoe_Jane_1961/eye12.png,normal\n")
    out = tmp_path / "o"
    res = prepare(src, out, size=64, workers=1, salt=SALT, labels=labels, zip=True, source_names=False,
                  progress=False)
    assert res.accepted == 2
    assert [r["source"] for r in res.rows] == [source_key(f"Doe_Jane_1961/eye{s}.png", SALT) for s in (11, 12)]
    assert source_key("Doe_Jane_1961/eye11.png", "other salt") != res.rows[0]["source"]
    for rel, data in _tree_bytes(out).items():
        assert b"Doe" not in data and b"eye1" not in data, rel
    assert json.loads((out / "dataset" / "dataset.json").read_text())["labels"] == [
        ["00000/img00000000.png", 1], ["00000/img00000001.png", 0]]
    again = prepare(src, out, size=64, workers=1, salt=SALT, labels=labels, zip=True, source_names=False,
                    progress=False)
    assert again.reused == 2
    named = prepare(src, tmp_path / "named", size=64, workers=1, salt=SALT, labels=labels, progress=False)
    assert [r["source"] for r in named.rows] == ["Doe_Jane_1961/eye11.png", "Doe_Jane_1961/eye12.png"]
    assert _tree_bytes(out / "dataset") == _tree_bytes(tmp_path / "named" / "dataset")


def test_dicom_without_file_meta_is_read(tmp_path):
    """A DICOM dataset without preamble and file meta (pydicom reads it with force=True) is ingested like
    the same file with them, not called unreadable; a text file stays unreadable."""
    from retina_fast.data.dicom import write_dicom

    src = tmp_path / "src"
    src.mkdir()
    image, _ = make_fundus(11, size=SMALL)
    write_dicom(src / "with_meta.dcm", image, patient_name="Doe^Jane", patient_id="P1", birth_date="19610101",
                sex="F", age=60, study_date="20210101", institution="X", transfer_syntax="explicit")
    ds = pydicom.dcmread(src / "with_meta.dcm")
    del ds.file_meta
    ds.preamble = None
    for implicit, name in ((True, "no_meta_implicit"), (False, "no_meta_explicit")):
        ds.save_as(src / name, enforce_file_format=False, implicit_vr=implicit, little_endian=True)
        with pytest.raises(pydicom.errors.InvalidDicomError):
            pydicom.dcmread(src / name)  # no file meta: pydicom refuses it without force
    (src / "README").write_text("DICOM test files, see the documentation\n" * 5)
    res = prepare(src, tmp_path / "o", size=128, workers=1, salt=SALT, progress=False)
    got = {r["source"]: r["reason"] or r["status"] for r in res.rows}
    assert got == {"README": "unreadable", "no_meta_explicit": "accepted", "no_meta_implicit": "accepted",
                   "with_meta.dcm": "accepted"}
    assert {r["key"] for r in res.rows if r["status"] == "accepted"} == {patient_key("P1", SALT)}
    images = [read_image(res.dataset, r["output"]) for r in res.rows if r["status"] == "accepted"]
    for a in images[1:]:
        np.testing.assert_array_equal(a, images[0])
