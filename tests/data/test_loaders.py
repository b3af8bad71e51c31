"""Loaders: both backends give the same batches, in the documented contract, from the same draws."""
import io
import os
import shutil

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from retina_fast.data.dataset import list_images, write_dataset_json, write_png, zip_dataset
from retina_fast.data import loaders
from retina_fast.data.loaders import (augment_params, default_workers, epoch_order, list_source, make_loader,
                                      resize_linear_aa, resolve_backend)

N_IMAGES, SIDE, RES = 12, 256, 96
JPEG_EVERY = 3  # images 0, 3, 6, 9 are JPEG, the rest PNG


def _retina_crops(n, side, seed=0):
    ret = skimage.data.retina()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r, c = rng.integers(150, 1411 - 850, 2)
        out.append(np.asarray(Image.fromarray(ret[r:r + 700, c:c + 700]).resize((side, side), Image.LANCZOS)))
    return out


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """StyleGAN2-ADA layout: 00000/img*.png|jpg + dataset.json with labels; plus its .zip."""
    root = tmp_path_factory.mktemp("loaders")
    ds = root / "dataset"
    images = _retina_crops(N_IMAGES, SIDE)
    items = []
    (ds / "00000").mkdir(parents=True)
    for i, a in enumerate(images):
        name = f"00000/img{i:08d}." + ("jpg" if i % JPEG_EVERY == 0 else "png")
        if name.endswith("png"):
            write_png(str(ds / name), a)
        else:
            Image.fromarray(a).save(ds / name, quality=90)
        items.append((name, (i * 7) % 3 % 2))  # an irregular 0/1 pattern
    write_dataset_json(str(ds), items)
    zip_dataset(str(ds), str(root / "dataset.zip"))
    return {"dir": str(ds), "zip": str(root / "dataset.zip"), "items": items, "root": root}


def _decoded(ds, name):
    return np.array(Image.open(os.path.join(ds["dir"], name)).convert("RGB"))


def _collect(loader):
    xs, ys = zip(*[(x.clone(), y.clone()) for x, y in loader])
    return torch.cat(xs), torch.cat(ys), [len(y) for y in ys]


def _reference_resize(a, size):
    """Plain per-tap loops of the clamped triangle filter (independent of the module's vectorised one)."""
    def matrix(n_in, n_out):
        scale = n_in / n_out
        support = max(scale, 1.0)
        m = np.zeros((n_out, n_in))
        for j in range(n_out):
            centre = (j + 0.5) * scale
            for x in range(int(np.floor(centre - support)) - 1, int(np.ceil(centre + support)) + 2):
                w = max(0.0, 1 - abs((x + 0.5 - centre) / support))
                m[j, min(max(x, 0), n_in - 1)] += w
            m[j] /= m[j].sum()
        return m
    rows, cols = matrix(a.shape[0], size), matrix(a.shape[1], size)
    return np.stack([rows @ a[:, :, c].astype(np.float64) @ cols.T for c in range(a.shape[2])], axis=2)


# ----------------------------------------------------------------------------------------------


def test_augment_params_properties():
    kw = dict(seed=5, epoch=2, xflip=True, yflip=True, crop_scale=(0.9, 1.0))
    p = augment_params(300, 400, index=7, **kw)
    assert p == augment_params(300, 400, index=7, **kw)  # pure function
    assert p != augment_params(300, 400, index=8, **kw)
    assert p != augment_params(300, 400, index=7, **{**kw, "epoch": 3})
    draws = [augment_params(300, 400, index=i, **kw) for i in range(400)]
    for q in draws:
        assert 270 <= q.size <= 300 and 0 <= q.top <= 300 - q.size and 0 <= q.left <= 400 - q.size
    sizes = np.array([q.size for q in draws])
    assert sizes.min() <= 272 and sizes.max() >= 298  # the whole range is used
    assert 150 < sum(q.xflip for q in draws) < 250 and 150 < sum(q.yflip for q in draws) < 250
    assert abs(np.corrcoef([q.xflip for q in draws], [q.yflip for q in draws])[0, 1]) < 0.15
    lefts = np.array([q.left for q in draws])
    assert lefts.max() > 0.9 * (400 - 270) and lefts.min() < 10  # position spans the free room
    # Switching flips off leaves the box; no crop gives the centred largest square.
    off = augment_params(300, 400, index=7, **{**kw, "xflip": False, "yflip": False})
    assert (off.top, off.left, off.size, off.xflip, off.yflip) == (p.top, p.left, p.size, False, False)
    assert augment_params(300, 400, seed=0, epoch=0, index=0) == augment_params(
        300, 400, seed=0, epoch=0, index=0, crop_scale=None)
    c = augment_params(300, 400, seed=0, epoch=0, index=3)
    assert (c.top, c.left, c.size, c.xflip, c.yflip) == (0, 50, 300, False, False)
    for bad in [dict(crop_scale=(0, 1)), dict(crop_scale=(0.9, 1.1)), dict(crop_scale=(1.0, 0.9)),
                dict(crop_scale=0.9), dict(seed=-1), dict(epoch=1.5)]:
        arg = next(iter(bad))
        with pytest.raises(ValueError, match=arg):
            augment_params(300, 400, **{**dict(seed=0, epoch=0, index=0), **bad})


def test_epoch_order():
    assert np.array_equal(epoch_order(10, shuffle=False, seed=3, epoch=4), np.arange(10))
    a = epoch_order(50, shuffle=True, seed=3, epoch=4)
    assert sorted(a) == list(range(50)) and not np.array_equal(a, np.arange(50))
    assert np.array_equal(a, epoch_order(50, shuffle=True, seed=3, epoch=4))
    assert not np.array_equal(a, epoch_order(50, shuffle=True, seed=3, epoch=5))
    assert not np.array_equal(a, epoch_order(50, shuffle=True, seed=4, epoch=4))


def test_resize_matches_reference_filter():
    rng = np.random.default_rng(0)
    for shape, size in [((57, 57), 20), ((40, 61), 23), ((30, 30), 77), ((64, 64), 64)]:
        a = rng.integers(0, 256, shape + (3,)).astype(np.uint8)
        ours = resize_linear_aa(torch.from_numpy(a).permute(2, 0, 1).float().contiguous(), size)
        ref = _reference_resize(a, size)
        assert ours.shape == (3, size, size)
        assert np.abs(ours.permute(1, 2, 0).numpy() - ref).max() < 2e-3, (shape, size)
    same = torch.from_numpy(rng.integers(0, 256, (3, 32, 32))).float()
    assert torch.equal(resize_linear_aa(same, 32), same)


def test_torch_contract_and_order(dataset):
    loader = make_loader(dataset["dir"], backend="torch", batch_size=5, resolution=SIDE)
    assert len(loader) == 3
    assert loader.names == [n for n, _ in dataset["items"]]
    x, y, sizes = _collect(loader)
    assert sizes == [5, 5, 2]
    assert x.dtype == torch.float32 and x.shape == (N_IMAGES, 3, SIDE, SIDE) and x.device.type == "cpu"
    assert y.dtype == torch.int64 and y.tolist() == [lab for _, lab in dataset["items"]]
    assert x.min() >= -1 and x.max() <= 1
    # No augmentation at the native size: exactly the decoded pixels, x / 127.5 - 1, NCHW.
    for i in (0, 1, 11):
        want = torch.from_numpy(_decoded(dataset, dataset["items"][i][0])).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(x[i], want, atol=1e-6)
    dropped = make_loader(dataset["zip"], backend="torch", batch_size=5, resolution=SIDE, drop_last=True)
    assert len(dropped) == 2
    xz, yz, sizes = _collect(dropped)
    assert sizes == [5, 5] and torch.equal(xz, x[:10]) and torch.equal(yz, y[:10])  # zip == folder


def test_torch_augmentation_matches_reference(dataset):
    kw = dict(batch_size=4, resolution=RES, xflip=True, yflip=True, crop_scale=(0.6, 1.0), seed=11)
    loader = make_loader(dataset["dir"], backend="torch", shuffle=True, epoch=3, **kw)
    x, y, _ = _collect(loader)
    order = epoch_order(N_IMAGES, shuffle=True, seed=11, epoch=3)
    assert y.tolist() == [dataset["items"][i][1] for i in order]
    flips = set()
    for k, i in enumerate(order[:6]):
        a = _decoded(dataset, dataset["items"][i][0])
        p = augment_params(*a.shape[:2], seed=11, epoch=3, index=int(i), xflip=True, yflip=True,
                           crop_scale=(0.6, 1.0))
        ref = _reference_resize(a[p.top:p.top + p.size, p.left:p.left + p.size], RES)
        ref = ref[::-1 if p.yflip else 1, ::-1 if p.xflip else 1]
        flips.add((p.xflip, p.yflip))
        got = x[k].permute(1, 2, 0).numpy()
        assert np.abs((got + 1) * 127.5 - ref).max() < 2e-3
    assert len(flips) >= 2
    # Same (seed, epoch) again -> identical; another epoch -> another order and other draws.
    again, y2, _ = _collect(make_loader(dataset["zip"], backend="torch", shuffle=True, epoch=3,
                                        num_workers=2, **kw))
    assert torch.equal(again, x) and torch.equal(y2, y)
    loader.set_epoch(4)
    x4, y4, _ = _collect(loader)
    order4 = epoch_order(N_IMAGES, shuffle=True, seed=11, epoch=4)
    assert not np.array_equal(order4, order) and y4.tolist() == [dataset["items"][i][1] for i in order4]
    same_sample = int(np.flatnonzero(order4 == order[0])[0])
    assert not torch.equal(x4[same_sample], x[0])  # epoch 4 draws another crop for that image


def test_shuffle_is_a_permutation_of_the_unshuffled_batches(dataset):
    plain, _, _ = _collect(make_loader(dataset["dir"], batch_size=5, resolution=RES))
    shuffled = make_loader(dataset["dir"], batch_size=5, resolution=RES, shuffle=True, seed=2, epoch=7)
    xs, _, _ = _collect(shuffled)
    order = epoch_order(N_IMAGES, shuffle=True, seed=2, epoch=7)
    assert torch.equal(xs, plain[order])  # without augmentation a sample does not depend on its slot


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_dali_cpu_matches_torch(dataset, augment):
    kw = dict(batch_size=5, resolution=RES, seed=4, shuffle=True)
    if augment:
        kw.update(xflip=True, yflip=True, crop_scale=(0.7, 1.0))
    tl = make_loader(dataset["dir"], backend="torch", **kw)
    dl = make_loader(dataset["zip"] if augment else dataset["dir"], backend="dali", num_workers=2, **kw)
    assert len(dl) == len(tl) == 3
    for epoch in (0, 1):  # two epochs through one pipeline: reset and set_epoch work
        tl.set_epoch(epoch)
        dl.set_epoch(epoch)
        xt, yt, st = _collect(tl)
        xd, yd, sd = _collect(dl)
        assert sd == st == [5, 5, 2]
        assert xd.dtype == torch.float32 and xd.shape == xt.shape and yd.dtype == torch.int64
        assert torch.equal(yd, yt)
        assert xd.min() >= -1 - 1e-5 and xd.max() <= 1 + 1e-5
        diff = (xd - xt).abs() * 127.5  # grey levels
        assert diff.mean() <= 1.0, diff.mean()
        order = epoch_order(N_IMAGES, shuffle=True, seed=4, epoch=epoch)
        png = torch.tensor([int(i) % JPEG_EVERY != 0 for i in order])
        # PNG decodes are exact, so only float rounding of the same filter remains.
        assert diff[png].max() < 0.01, diff[png].max()
        assert diff[~png].max() <= 2.0, diff[~png].max()  # libjpeg builds may differ by a level


def test_dali_abandoned_epoch_restarts_cleanly(dataset):
    dl = make_loader(dataset["dir"], backend="dali", batch_size=4, resolution=32)
    first = next(iter(dl))[0].clone()  # leave the epoch after one batch
    x, y, sizes = _collect(dl)
    assert sizes == [4, 4, 4] and torch.equal(x[:4], first)
    assert y.tolist() == [lab for _, lab in dataset["items"]]


def test_plain_folder_grey_and_non_square(dataset, tmp_path):
    src = tmp_path / "plain"
    (src / "sub").mkdir(parents=True)
    a = _retina_crops(1, 300, seed=1)[0]
    rect = np.ascontiguousarray(a[:, 20:260])  # 300 x 240
    Image.fromarray(rect).save(src / "b_rect.png")
    Image.fromarray(a[:, :, 1]).save(src / "sub" / "a_grey.png")
    Image.fromarray(a).save(src / "c.jpeg", quality=92)
    (src / "notes.txt").write_text("not an image")
    assert [n for n, _ in list_source(src)] == ["b_rect.png", "c.jpeg", "sub/a_grey.png"]
    loader = make_loader(src, batch_size=3, resolution=240)
    x, y, _ = _collect(loader)
    assert y.tolist() == [-1, -1, -1]
    want = torch.from_numpy(rect[30:270]).permute(2, 0, 1).float() / 127.5 - 1  # centred square
    assert torch.allclose(x[0], want, atol=1e-6)
    assert torch.equal(x[2][0], x[2][1]) and torch.equal(x[2][1], x[2][2])  # grey -> RGB
    xd, yd, _ = _collect(make_loader(src, backend="dali", batch_size=3, resolution=240))
    assert torch.equal(yd, y) and ((xd - x).abs() * 127.5).mean() <= 1.0


def _copy_with_bad(dataset, tmp_path, index, content):
    ds = tmp_path / "bad"
    shutil.copytree(dataset["dir"], ds)
    name = dataset["items"][index][0]
    with open(ds / name, "r+b") as f:
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(content(data))
    return str(ds), name


def _sixteen_bit_png(_):
    b = io.BytesIO()
    Image.fromarray(np.full((SIDE, SIDE), 40000, np.uint16)).save(b, format="PNG")
    return b.getvalue()


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_bad_image_names_the_file(dataset, tmp_path, backend):
    cases = [(7, lambda d: d[:len(d) // 2], "truncated"),       # PNG, valid header, pixels cut
             (3, lambda d: b"not an image at all" * 20, "cannot decode"),
             (5, _sixteen_bit_png, "mode")]
    for index, content, why in cases:
        src, name = _copy_with_bad(dataset, tmp_path, index, content)
        loader = make_loader(src, backend=backend, batch_size=4, resolution=32)
        with pytest.raises(ValueError) as err:
            _collect(loader)
        assert name in str(err.value) and why in str(err.value), str(err.value)
        shutil.rmtree(src)


def test_bad_arguments(dataset, tmp_path):
    src = dataset["dir"]
    for kw, arg in [(dict(backend="tf"), "backend"), (dict(batch_size=0), "batch_size"),
                    (dict(resolution=0), "resolution"), (dict(num_workers=-1), "num_workers"),
                    (dict(crop_scale=(0.5, 2)), "crop_scale"), (dict(seed=-3), "seed"),
                    (dict(device="mps"), "device")]:
        with pytest.raises(ValueError, match=arg):
            make_loader(src, **kw)
    with pytest.raises(ValueError, match="source"):
        make_loader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no PNG/JPEG"):
        make_loader(tmp_path / "empty")
    assert list_images(src) == list_source(src)


def test_auto_backend_is_dali_on_cuda_only_when_installed(monkeypatch):
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("dali", "cpu") == "dali" and resolve_backend("torch", "cuda:1") == "torch"
    monkeypatch.setattr(loaders, "_dali_importable", lambda: True)
    assert resolve_backend("auto", "cuda") == "dali" and resolve_backend("auto", torch.device("cuda", 1)) == "dali"
    monkeypatch.setattr(loaders, "_dali_importable", lambda: False)
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("tf", "cpu")


def test_dali_importable_sees_a_missing_package(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)   # import raises ImportError
    assert not loaders._dali_importable()


def test_default_workers(monkeypatch):
    # on the CPU the model needs the cores; on CUDA the loader takes most of them, leaving two
    assert default_workers("torch", "cpu") == 0 and default_workers("dali", "cpu") == 1
    for cores, dali, torch_procs in [(16, 12, 8), (64, 12, 8), (8, 6, 6), (2, 1, 1), (1, 1, 1)]:
        monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_workers("dali", "cuda") == dali and default_workers("torch", "cuda:0") == torch_procs


def test_auto_loader_on_cpu(dataset):
    auto = make_loader(dataset["dir"], backend="auto", num_workers=None, batch_size=4, resolution=32)
    assert isinstance(auto, loaders.TorchLoader) and auto.num_workers == 0
    x, y, _ = _collect(auto)
    xt, yt, _ = _collect(make_loader(dataset["dir"], batch_size=4, resolution=32))
    assert torch.equal(x, xt) and torch.equal(y, yt)


@pytest.mark.cuda
def test_dali_gpu_matches_torch(dataset):
    kw = dict(batch_size=5, resolution=RES, seed=4, xflip=True, crop_scale=(0.7, 1.0))
    xt, yt, _ = _collect(make_loader(dataset["dir"], backend="torch", **kw))
    xd, yd, _ = _collect(make_loader(dataset["dir"], backend="dali", device="cuda", **kw))
    assert xd.device.type == "cuda" and yd.device.type == "cuda"
    assert torch.equal(yd.cpu(), yt)
    assert ((xd.cpu() - xt).abs() * 127.5).mean() <= 1.0


def test_check_images_finds_a_truncated_member_of_a_stored_zip(tmp_path):
    """The tails of stored zip members are read in place (no pass over the data); a truncated
    PNG among good ones is still found, by name."""
    import zipfile
    good = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
    for i, a in enumerate(good):
        write_png(str(tmp_path / f"img{i}.png"), a)
    data = [(tmp_path / f"img{i}.png").read_bytes() for i in range(3)]
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        z.writestr("a/img0.png", data[0])
        z.writestr("a/img1.png", data[1][:-20])   # truncated
        z.writestr("a/img2.png", data[2])
    with pytest.raises(ValueError, match=r"1 of 3 images are unusable, e.g. 'a/img1.png': PNG is truncated"):
        loaders.check_images(str(zpath))
    fixed = tmp_path / "fixed.zip"
    with zipfile.ZipFile(fixed, "w", zipfile.ZIP_STORED) as z:
        for i in range(3):
            z.writestr(f"a/img{i}.png", data[i])
    loaders.check_images(str(fixed))
