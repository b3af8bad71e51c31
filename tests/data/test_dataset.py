"""DatasetReader: one reader for a dataset folder or zip, the zip opened once per process."""
import multiprocessing as mp
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import skimage.data
from PIL import Image

from retina_fast.data import dataset as dataset_module
from retina_fast.data.dataset import (
    DatasetReader,
    list_images,
    read_image,
    write_dataset_json,
    write_png,
    zip_dataset,
)

SIDE = 96


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Five crops of the real retina photo: RGB PNGs (the project's writer), a grey PNG, a JPEG; + its zip."""
    root = tmp_path_factory.mktemp("reader")
    ds = root / "dataset"
    ret = skimage.data.retina()
    items = []
    for i in range(5):
        r = 300 + 90 * i
        crop = np.ascontiguousarray(ret[r:r + SIDE, r + 40:r + 40 + SIDE + 8 * i])  # widths differ: no H/W mix-up
        name = f"00000/img{i:08d}." + ("jpg" if i == 4 else "png")
        if i == 3:
            os.makedirs(ds / "00000", exist_ok=True)
            Image.fromarray(crop[:, :, 1]).save(ds / name)  # mode 'L': read() must give RGB
        elif i == 4:
            Image.fromarray(crop).save(ds / name, quality=85)
        else:
            write_png(str(ds / name), crop)
        items.append((name, i % 2))
    write_dataset_json(str(ds), items)
    zip_dataset(str(ds), str(root / "dataset.zip"))
    return {"dir": str(ds), "zip": str(root / "dataset.zip"), "items": items, "root": root}


@pytest.fixture
def count_zip_opens(monkeypatch):
    """Counts zipfile.ZipFile constructions made by retina_fast.data.dataset."""
    opened = []

    class CountingZipFile(zipfile.ZipFile):
        def __init__(self, *args, **kwargs):
            opened.append(os.getpid())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dataset_module.zipfile, "ZipFile", CountingZipFile)
    return opened


def _pillow(ds, name):
    return np.asarray(Image.open(os.path.join(ds["dir"], name)).convert("RGB"))


@pytest.mark.parametrize("source", ["dir", "zip"])
def test_reads_match_pillow(dataset, source):
    with DatasetReader(dataset[source]) as reader:
        assert [n for n, _ in list_images(dataset[source])] == [n for n, _ in dataset["items"]]
        for name, _ in dataset["items"]:
            with open(os.path.join(dataset["dir"], name), "rb") as f:
                assert reader.read_bytes(name) == f.read()
            a = reader.read(name)
            want = _pillow(dataset, name)
            assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
            np.testing.assert_array_equal(a, want)
            assert a.flags.writeable
            np.testing.assert_array_equal(read_image(dataset[source], name), want)
    grey = reader.read(dataset["items"][3][0])
    assert (grey[:, :, 0] == grey[:, :, 2]).all() and grey[:, :, 0].std() > 5  # a real grey image, repeated


def test_zip_opened_once_and_reopened_after_close(dataset, count_zip_opens):
    names = [n for n, _ in dataset["items"]]
    reader = DatasetReader(dataset["zip"])
    assert count_zip_opens == []  # opened lazily, at the first read
    for _ in range(10):
        for name in names:
            reader.read(name)
    assert len(count_zip_opens) == 1
    reader.close()
    np.testing.assert_array_equal(reader.read(names[0]), _pillow(dataset, names[0]))
    assert len(count_zip_opens) == 2
    reader.close()
    read_image(dataset["zip"], names[0])  # the one-shot convenience opens the zip for its one read
    assert len(count_zip_opens) == 3


def _child_read(reader, name, queue):
    queue.put((reader.read_bytes(name), reader._pid == os.getpid()))


def test_forked_child_opens_its_own_zip(dataset, count_zip_opens):
    name0, name1 = dataset["items"][0][0], dataset["items"][1][0]
    reader = DatasetReader(dataset["zip"])
    reader.read(name0)  # the parent's zip is open before the fork
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_read, args=(reader, name1, queue))
    child.start()
    data, child_owns = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    with open(os.path.join(dataset["dir"], name1), "rb") as f:
        assert data == f.read()
    assert child_owns
    # the child's open is not seen here (separate memory); the parent's zip is still its own, and works
    assert count_zip_opens == [os.getpid()]
    np.testing.assert_array_equal(reader.read(name1), _pillow(dataset, name1))
    assert len(count_zip_opens) == 1


def test_pickle_round_trip(dataset, count_zip_opens):
    name = dataset["items"][2][0]
    reader = DatasetReader(dataset["zip"])
    reader.read(name)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.path == reader.path and clone._zip is None
    np.testing.assert_array_equal(clone.read(name), _pillow(dataset, name))
    assert len(count_zip_opens) == 2 and clone._zip is not reader._zip
    folder = pickle.loads(pickle.dumps(DatasetReader(dataset["dir"])))
    np.testing.assert_array_equal(folder.read(name), _pillow(dataset, name))


@pytest.mark.parametrize("source", ["dir", "zip"])
def test_missing_image_names_path_and_name(dataset, source):
    reader = DatasetReader(dataset[source])
    for call in (reader.read_bytes, reader.read):
        with pytest.raises(ValueError, match="no image named") as err:
            call("00000/img99999999.png")
        assert dataset[source] in str(err.value) and "img99999999.png" in str(err.value)


def test_names_may_not_escape_the_folder(dataset, tmp_path):
    outside = tmp_path / "secret.png"
    write_png(str(outside), np.zeros((4, 4, 3), np.uint8))
    ds = tmp_path / "ds"
    shutil.copytree(dataset["dir"], ds)
    reader = DatasetReader(ds)
    rel = os.path.relpath(outside, ds)
    assert rel.startswith("..") and os.path.isfile(os.path.join(ds, rel))
    for name in (rel, str(outside), "00000/../../secret.png"):
        with pytest.raises(ValueError, match="outside") as err:
            reader.read_bytes(name)
        assert str(ds) in str(err.value) and name in str(err.value)
    # a name that goes up and comes back in is still a member
    back = f"00000/../{dataset['items'][0][0]}"
    np.testing.assert_array_equal(reader.read(back), _pillow(dataset, dataset["items"][0][0]))
    with pytest.raises(ValueError, match="no image named"):
        DatasetReader(dataset["zip"]).read_bytes("../secret.png")


def test_corrupt_folder_image(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset["dir"], ds)
    name = dataset["items"][1][0]
    (ds / name).write_bytes(b"not an image at all" * 20)
    reader = DatasetReader(ds)
    assert reader.read_bytes(name) == b"not an image at all" * 20  # the bytes are there; decoding fails
    with pytest.raises(ValueError, match="cannot decode") as err:
        reader.read(name)
    assert str(ds) in str(err.value) and name in str(err.value)
    truncated = dataset["items"][0][0]
    data = (ds / truncated).read_bytes()
    (ds / truncated).write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode") as err:
        reader.read(truncated)
    assert truncated in str(err.value)
    np.testing.assert_array_equal(reader.read(dataset["items"][2][0]), _pillow(dataset, dataset["items"][2][0]))


def test_corrupt_zip_member(dataset, tmp_path):
    damaged = tmp_path / "damaged.zip"
    shutil.copyfile(dataset["zip"], damaged)
    name = dataset["items"][2][0]
    with zipfile.ZipFile(damaged) as z:
        info = z.getinfo(name)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(damaged, "r+b") as f:
        f.seek(info.header_offset + 26)
        n_name, n_extra = np.frombuffer(f.read(4), "<u2")
        f.seek(info.header_offset + 30 + int(n_name) + int(n_extra) + info.file_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))  # one flipped byte in the member's data: the CRC check fails
    reader = DatasetReader(damaged)
    for call in (reader.read_bytes, reader.read):
        with pytest.raises(ValueError, match="cannot read image") as err:
            call(name)
        assert str(damaged) in str(err.value) and name in str(err.value)
    other = dataset["items"][0][0]
    np.testing.assert_array_equal(reader.read(other), _pillow(dataset, other))


def test_bad_source(tmp_path):
    (tmp_path / "notes.txt").write_text("not a zip")
    for path in (tmp_path / "missing", tmp_path / "notes.txt"):
        with pytest.raises(ValueError, match="path") as err:
            DatasetReader(path)
        assert str(path) in str(err.value)


def test_file_path(dataset):
    name = dataset["items"][0][0]
    path = DatasetReader(dataset["dir"]).file_path(name)
    assert os.path.samefile(path, os.path.join(dataset["dir"], name))
    with pytest.raises(ValueError, match="zip"):
        DatasetReader(dataset["zip"]).file_path(name)
