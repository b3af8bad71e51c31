"""Served Turing-test images carry no geometry that tells the arms apart (issue 22, hostile item 1).

Real-like arm: 4:3 camera frames (phantom frames at 480 x 640 as JPEG with EXIF, and the real photo
``skimage.data.retina()`` padded to 4:3), their field of view clipped at top and bottom. Synthetic-like
arm: square images cropped to the FOV as ``prepare`` does, at another size, as PNGs with text chunks.
Letterboxing them into a square (the old re-encoding) leaves different black rows in each arm; the
FOV placement must leave the same size, the same PNG header and the same pixels outside the FOV.
"""
import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from skimage import data as skdata
from sqlalchemy import select

from retina_fast.data.fov import crop_to_fov, find_fov
from retina_fast.data.phantom import make_fundus
from retina_fast.turing import db
from retina_fast.turing.reencode import FIT, Geometry, plan_geometry, reencode, served_mask
from retina_fast.turing.study import create_study

SIZE = 256


def _png_chunks(data):
    """(type, payload) of each chunk of a PNG byte string, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append((data[i + 4:i + 8].decode("ascii"), data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """(real_dir, synthetic_dir): 3 + 1 real-like 4:3 frames, 4 square synthetic-like images."""
    root = tmp_path_factory.mktemp("arms")
    real, syn = root / "real", root / "synthetic"
    real.mkdir()
    syn.mkdir()
    for k in range(3):
        img, _ = make_fundus(k, size=(480, 640))
        exif = Image.Exif()
        exif[0x0110] = "FundusCam 3000"           # Model: a camera would write this
        Image.fromarray(img).save(real / f"cam_{k}.jpg", quality=92, exif=exif.tobytes())
    photo = np.asarray(Image.fromarray(skdata.retina()).resize((480, 480), Image.Resampling.LANCZOS))
    Image.fromarray(np.pad(photo, ((0, 0), (80, 80), (0, 0)))).save(real / "photo.png")
    for k in range(4):
        img, _ = make_fundus(40 + k, size=(600, 800))
        square, _ = crop_to_fov(img, find_fov(img), 320)  # a generator trained on prepared images
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", "generator")
        Image.fromarray(square).save(syn / f"gen_{k}.png", pnginfo=info)
    return real, syn


def _served(tmp_path, real, syn, **kw):
    """create_study on the two folders; returns (truth, PNG bytes) of every stored image."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'study.db'}")
    sid, _ = create_study(engine, tmp_path / "store", "geometry", real, syn, seed=3, max_side=SIZE, **kw)
    with engine.connect() as conn:
        rows = conn.execute(select(db.images.c.id, db.images.c.truth).where(db.images.c.study_id == sid)).all()
    return [(truth, (tmp_path / "store" / f"{iid}.png").read_bytes()) for iid, truth in rows]


def _black_profile(rgb):
    black = (np.asarray(rgb) == 0).all(axis=-1)
    return black.sum(axis=1), black.sum(axis=0)


def test_served_images_do_not_separate_the_arms(tmp_path, arms):
    real, syn = arms
    sources = sorted(real.iterdir()) + sorted(syn.iterdir())
    # the test can see the leak: letterboxed, the arms differ in their black rows
    fit = {}
    for f in sources:
        reencode(f, tmp_path / "fit.png", SIZE, FIT)
        rows, _ = _black_profile(Image.open(tmp_path / "fit.png"))
        fit.setdefault(f.parent.name, set()).add(int((rows == SIZE).sum()))
    assert fit["real"].isdisjoint(fit["synthetic"]), fit

    served = _served(tmp_path, real, syn)
    assert sorted(t for t, _ in served) == ["real"] * 4 + ["synthetic"] * 4
    geometry = plan_geometry(sources, SIZE)
    assert geometry.kind == "fov" and geometry.window[0] > 0   # the 4:3 frames clip the FOV at the top
    mask = served_mask(SIZE, geometry.window)
    headers, outside, profiles = set(), set(), set()
    for truth, data in served:
        chunks = _png_chunks(data)
        kinds = [k for k, _ in chunks]
        assert kinds == ["IHDR"] + ["IDAT"] * (len(kinds) - 2) + ["IEND"]  # no metadata chunk
        headers.add(chunks[0][1])                       # width, height, depth, colour type, ...
        with Image.open(io.BytesIO(data)) as im:
            assert (im.size, im.mode, im.format, im.info) == ((SIZE, SIZE), "RGB", "PNG", {})
            rgb = np.asarray(im)
        outside.add(rgb[~mask].tobytes())
        rows, cols = _black_profile(rgb)
        profiles.add((rows.tobytes(), cols.tobytes()))
        assert rgb[mask].mean() > 20                    # the picture is there
    assert len(headers) == 1
    assert outside == {bytes(3 * int((~mask).sum()))}   # exactly black outside the FOV, in both arms
    # black pixels per row and per column: one profile for every image of both arms
    assert len(profiles) == 1
    np.testing.assert_array_equal(np.frombuffer(next(iter(profiles))[0], dtype=rows.dtype), (~mask).sum(axis=1))


def test_served_fov_is_the_prepare_crop(tmp_path, arms):
    """Inside the mask the served pixels are the source's FOV crop (prepare's centring), exactly."""
    _, syn = arms
    sources = sorted(syn.iterdir())
    g = plan_geometry(sources, SIZE)
    mask = g.mask()
    for f in sources:
        reencode(f, tmp_path / "o.png", SIZE, g)
        got = np.asarray(Image.open(tmp_path / "o.png"))
        src = np.asarray(Image.open(f).convert("RGB"))
        want, _ = crop_to_fov(src, find_fov(src), SIZE, "lanczos")
        np.testing.assert_array_equal(got[mask], want[mask])
        assert not got[~mask].any()


def test_mixed_or_no_fov_sources_get_one_crop_geometry(tmp_path, arms):
    real, _ = arms
    rng = np.random.default_rng(0)
    noise = []
    for i, (h, w) in enumerate([(60, 80), (80, 60), (70, 70)]):
        noise.append(tmp_path / f"noise_{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(noise[-1])
    fundus = sorted(real.iterdir())
    with pytest.warns(UserWarning, match=r"1 of 5 image\(s\) show no circular field of view.*noise_0.png"):
        g = plan_geometry(fundus + noise[:1], SIZE)
    assert g == Geometry("crop", SIZE)
    with pytest.raises(ValueError, match="noise_0.png"):
        plan_geometry(fundus + noise[:1], SIZE, "fov")
    with pytest.raises(ValueError, match="noise_0.png: no circular field of view"):
        reencode(noise[0], tmp_path / "x.png", SIZE, plan_geometry(fundus, SIZE))
    assert not (tmp_path / "x.png").exists()
    # no fundus at all: central squares, no padding, one size
    g = plan_geometry(noise, 64)
    assert g.kind == "crop"
    for f in noise:
        reencode(f, tmp_path / "c.png", 64, g)
        rgb = np.asarray(Image.open(tmp_path / "c.png"))
        assert rgb.shape == (64, 64, 3) and not (rgb == 0).all(axis=-1).all(axis=1).any()
    with pytest.raises(ValueError, match="kind must be"):
        plan_geometry(noise, 64, "letterbox")
    with pytest.raises(ValueError, match="planned for size"):
        reencode(fundus[0], tmp_path / "y.png", 128, plan_geometry(fundus, SIZE))


def test_study_refuses_a_frame_clipping_the_fov_to_a_strip(tmp_path, arms):
    real, syn = arms
    img, _ = make_fundus(7, size=(480, 640))
    strip = tmp_path / "strip"
    strip.mkdir()
    Image.fromarray(img[150:330]).save(strip / "strip.png")   # 180 of ~520 px of FOV height
    sources = sorted(syn.iterdir()) + [strip / "strip.png"]
    with pytest.raises(ValueError, match="strip.png: its frame clips the field of view"):
        plan_geometry(sources, SIZE)
    with pytest.raises(ValueError, match="strip.png"):
        create_study(db.make_engine(f"sqlite:///{tmp_path / 's.db'}"), tmp_path / "store", "s", strip, syn,
                     seed=0, max_side=SIZE)
    assert not (tmp_path / "store").exists()   # inputs checked before any output
