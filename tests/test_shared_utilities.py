"""The shared helpers: atomic writes (retina_fast.fileio), device resolution (retina_fast.device) and
argument checks (retina_fast.checks)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from retina_fast.checks import ArgumentTypeError, check_int, check_number
from retina_fast.device import resolve_device
from retina_fast.fileio import (atomic_write, copy_atomic, remove_stale_temp_files, temp_name,
                                write_bytes_atomic, write_text_atomic)


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------------------ atomic writes

def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new")
        assert os.path.basename(f.name) == f".a.bin.tmp{os.getpid()}" and path.read_bytes() == b"old"
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.bin"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old\n")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("mid-write")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["a.txt"]

    def broken_replace(src, dst):
        raise OSError("disk died")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk died"):
        write_bytes_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["a.txt"]


def test_text_mode_permissions_and_copy(tmp_path):
    secret = write_text_atomic(tmp_path / "salt", "x\r\n", mode=0o600)
    assert open(secret, "rb").read() == b"x\r\n"  # no newline translation
    assert os.stat(secret).st_mode & 0o777 == 0o600
    dst = copy_atomic(secret, tmp_path / "copy")
    assert open(dst, "rb").read() == b"x\r\n"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "r", "r"):
            pass


def test_stale_temporaries_of_dead_writers_only_are_removed(tmp_path):
    live = tmp_path / os.path.basename(temp_name(tmp_path / "live.png"))  # this process: still writing
    dead = tmp_path / f".dead.png.tmp{_dead_pid()}"
    sub = tmp_path / "sub"
    sub.mkdir()
    deep = sub / f".deep.png.tmp{_dead_pid()}"
    other = tmp_path / "keep.tmp123"  # not hidden: not one of ours
    for p in (live, dead, deep, other):
        p.write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [str(dead)]
    assert remove_stale_temp_files(tmp_path, recursive=True) == [str(deep)]
    assert live.exists() and other.exists()


# ------------------------------------------------------------------------------------------ device

def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="--device must be"):
        resolve_device("nodevice", name="--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    for bad in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="device=.*cuda.*no CUDA GPU"):
            resolve_device(bad)


# --------------------------------------------------------------------------------- argument checks

def test_check_int():
    assert check_int("n", np.int64(3), minimum=1) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("n", None, minimum=1, allow_none=True) is None
    with pytest.raises(ValueError, match=r"^batch_size must be an integer >= 1, got 0$"):
        check_int("batch_size", 0, minimum=1)
    with pytest.raises(ValueError, match=r"^k must be an integer in 1\.\.4, got 5$"):
        check_int("k", 5, minimum=1, maximum=4)
    for bad in (True, 2.0, "2", None):
        with pytest.raises(TypeError, match="n must be an integer"):  # also a ValueError
            check_int("n", bad)
        with pytest.raises(ValueError, match="n must be an integer"):
            check_int("n", bad)
    with pytest.raises(ArgumentTypeError, match=r"limit must be None or an integer >= 1"):
        check_int("limit", 1.5, minimum=1, allow_none=True)


def test_check_number():
    assert check_number("lr", np.float32(0.5), minimum=0, min_open=True) == 0.5
    assert check_number("p", 1, minimum=0, maximum=1) == 1.0
    with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got 0$"):
        check_number("lr", 0, minimum=0, min_open=True)
    with pytest.raises(ValueError, match="finite"):
        check_number("x", float("nan"))
    with pytest.raises(ValueError, match=r"in -1\.\.1"):
        check_number("target", 1.5, -1, 1)
    with pytest.raises(TypeError, match="hue must be a finite number"):
        check_number("hue", True)
