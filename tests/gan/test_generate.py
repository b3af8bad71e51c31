"""`retina_fast.gan.generate`: seeds, determinism, batch independence, PNG and synthetic-marked DICOM."""
import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retina_fast.gan.generate import (
    add_generate_args,
    generate_images,
    generate_main,
    parse_seeds,
)
from retina_fast.gan.networks import make_networks


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A 'retina_fast.gan/1' snapshot of the tiny 32 px preset with random weights."""
    torch.manual_seed(0)
    G, D = make_networks("32")
    G_ema, _ = make_networks("32")
    # w_avg away from zero, so truncation has a visible target
    with torch.no_grad():
        G_ema.mapping.w_avg.copy_(torch.randn_like(G_ema.mapping.w_avg))
        for name, p in G_ema.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)  # initialised to 0: make the noise modes matter
    path = tmp_path_factory.mktemp("gen") / "snap.pt"
    torch.save({"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(), "cur_nimg": 0}, path)
    return str(path)


def _read(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        return np.asarray(im)


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds(" 5 , 2-3 ") == [5, 2, 3]
    assert parse_seeds([4, 4, 1]) == [4, 1]
    assert parse_seeds(9) == [9]
    assert parse_seeds(range(3)) == [0, 1, 2]
    assert parse_seeds(f"{2**32 - 1}") == [2 ** 32 - 1]
    for bad in ("5-2", "a", "1,,2", "", [-1], [2 ** 32]):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    for bad in (None, [1.5], [True]):
        with pytest.raises(TypeError, match="seeds"):
            parse_seeds(bad)


def test_deterministic_per_seed_and_independent_of_order_and_batch(snapshot, tmp_path):
    a = generate_images(snapshot, "0-6", tmp_path / "a")
    generate_images(snapshot, [5, 0, 3, 1, 6, 2, 4], tmp_path / "b")
    c = generate_images(snapshot, [3], tmp_path / "c")
    assert [os.path.basename(p) for p in a] == [f"seed{s:06d}.png" for s in range(7)]
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.path.basename(p) for p in a)  # no temporaries
    imgs = {s: _read(tmp_path / "a" / f"seed{s:06d}.png") for s in range(7)}
    for s in range(7):
        assert imgs[s].shape == (32, 32, 3) and imgs[s].dtype == np.uint8
        # bit-identical whatever the order of the seeds
        assert (tmp_path / "b" / f"seed{s:06d}.png").read_bytes() == (tmp_path / "a" / f"seed{s:06d}.png").read_bytes()
    assert np.array_equal(_read(c[0]), imgs[3])
    # different seeds, different images; not a flat image
    assert not np.array_equal(imgs[0], imgs[1])
    assert imgs[0].std() > 5
    # a rerun reproduces the files
    again = generate_images(snapshot, "0-1", tmp_path / "d")
    assert np.array_equal(_read(again[1]), imgs[1])
    # batched forward passes: same latents, the same images up to float rounding (<= 1 grey level, rare)
    for bs in (2, 7):
        batched = generate_images(snapshot, [5, 0, 3, 1, 6, 2, 4], tmp_path / f"bs{bs}", batch_size=bs)
        diffs = [np.abs(_read(p).astype(int) - imgs[int(os.path.basename(p)[4:10])]) for p in batched]
        assert max(d.max() for d in diffs) <= 1
        assert sum((d > 0).sum() for d in diffs) <= 0.001 * 7 * imgs[0].size


def test_png_matches_generator_output(snapshot, tmp_path):
    from retina_fast.gan.networks import Generator
    G = Generator.from_checkpoint(snapshot)
    with torch.no_grad():
        img = G([11], None, truncation_psi=0.5, noise_mode="const")
    expect = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    (path,) = generate_images(snapshot, [11], tmp_path, truncation_psi=0.5)
    assert np.array_equal(_read(path), expect)
    # truncation psi 0 maps every seed to w_avg: all images identical
    p0 = generate_images(snapshot, [1, 2, 3], tmp_path / "psi0", truncation_psi=0.0, batch_size=2)
    first = _read(p0[0])
    assert all(np.array_equal(_read(p), first) for p in p0[1:])
    # noise_mode 'random' draws fresh noise: valid images, but not those of 'const'
    (pr,) = generate_images(snapshot, [11], tmp_path / "rand", truncation_psi=0.5, noise_mode="random")
    assert _read(pr).shape == (32, 32, 3) and not np.array_equal(_read(pr), expect)


def test_dicom_marked_synthetic(snapshot, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    paths = generate_images(snapshot, [3, 8], tmp_path, dicom=True, truncation_psi=0.7)
    dss = []
    for png, seed in zip(paths, (3, 8), strict=True):
        dcm = png[:-4] + ".dcm"
        assert os.path.isfile(dcm)
        ds = pydicom.dcmread(dcm)
        dss.append(ds)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.BurnedInAnnotation == "NO"
        assert ds.DerivationDescription.startswith(f"synthetic, retina_fast StyleGAN2 seed {seed}")
        assert "psi 0.7" in ds.DerivationDescription
        assert "SYNTHETIC" in ds.ImageComments and str(ds.PatientName) == "SYNTHETIC"
        assert ds.PatientID == f"SYNTHETIC-{seed}"
        assert ds.PatientBirthDate == "" and ds.PatientAge == "" and ds.PatientSex == ""
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # lossless
        assert np.array_equal(ds.pixel_array, _read(png))
    assert dss[0].SeriesInstanceUID == dss[1].SeriesInstanceUID
    assert dss[0].SOPInstanceUID != dss[1].SOPInstanceUID


def test_bad_arguments(snapshot, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        generate_images(tmp_path / "nowhere.pt", [0], tmp_path)
    with pytest.raises(ValueError, match="noise_mode"):
        generate_images(snapshot, [0], tmp_path, noise_mode="static")
    with pytest.raises(ValueError, match="batch_size"):
        generate_images(snapshot, [0], tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="class_idx"):
        generate_images(snapshot, [0], tmp_path, class_idx=1)
    assert not list(tmp_path.glob("*.png"))


def test_cli_args(snapshot, tmp_path, capsys):
    parser = add_generate_args(argparse.ArgumentParser())
    args = parser.parse_args(["--network", snapshot, "--seeds", "2-4", "--outdir", str(tmp_path), "--batch", "2",
                              "--device", "cpu", "--trunc", "0.8"])
    assert generate_main(args) == 0
    assert sorted(os.listdir(tmp_path)) == ["seed000002.png", "seed000003.png", "seed000004.png"]
    assert "3 images" in capsys.readouterr().out
    ref = generate_images(snapshot, [3], tmp_path / "ref", truncation_psi=0.8)
    assert (tmp_path / "seed000003.png").read_bytes() == Path(ref[0]).read_bytes()
