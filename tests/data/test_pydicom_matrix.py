"""Every test file that pydicom ships (bundled in the installed wheel, never downloaded) through `prepare`.

None is a fundus photograph, so none is accepted; each one is excluded with a reason, the batch never
stops, and a file is called unreadable only where pydicom itself cannot give its pixels (files without
file meta are read as pydicom reads them with force=True).
"""
import os
import shutil

import pydicom
import pydicom.data
import pytest

from retina_fast.cli import main
from retina_fast.data import REASONS
from retina_fast.data.prepare import list_sources, read_manifest

# Datasets without preamble and file meta that pydicom reads with force=True (none holds pixel data).
NO_META = {"test_files/ExplVR_LitEndNoMeta.dcm", "test_files/ExplVR_BigEndNoMeta.dcm", "test_files/rtstruct.dcm"}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """(source folder, manifest rows) of `retina-fast prepare` over copies of pydicom's test files."""
    files = [f for f in pydicom.data.get_testdata_files() if os.path.isfile(f)]
    root = os.path.dirname(os.path.commonpath(files))
    src = tmp_path_factory.mktemp("pydicom_files")
    for f in files:
        dst = src / os.path.relpath(f, root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    out = tmp_path_factory.mktemp("prepared") / "out"
    assert main(["prepare", str(src), str(out), "--size", "64", "--workers", "2", "--zip"]) == 0
    return src, read_manifest(out / "manifest.csv")


def test_every_file_is_excluded_with_a_reason(matrix):
    src, rows = matrix
    assert len(rows) == len(list_sources(src)) >= 150
    assert {r["status"] for r in rows} == {"excluded"}
    assert {r["reason"] for r in rows} <= set(REASONS)
    reasons = {r["source"]: r["reason"] for r in rows}
    assert reasons["test_files/MR_small.dcm"] == "not_colour"
    assert reasons["test_files/waveform_ecg.dcm"] == "no_pixel_data"


def test_files_without_file_meta_are_read(matrix):
    src, rows = matrix
    reasons = {r["source"]: r["reason"] for r in rows}
    for name in NO_META:
        with pytest.raises(pydicom.errors.InvalidDicomError):
            pydicom.dcmread(src / name)
        assert reasons[name] == "no_pixel_data", name


def test_header_reasons_agree_with_pydicom(matrix):
    """'no_pixel_data' exactly where pydicom (force=True) finds no Pixel Data; 'unreadable' only where
    pydicom cannot decode the pixels either."""
    src, rows = matrix
    for r in rows:
        if r["reason"] == "no_pixel_data":
            assert "PixelData" not in pydicom.dcmread(src / r["source"], force=True), r["source"]
        elif r["reason"] == "unreadable":
            with pytest.raises(Exception):  # noqa: B017, PT011 -- any decoder failure
                pydicom.dcmread(src / r["source"], force=True).pixel_array  # noqa: B018
