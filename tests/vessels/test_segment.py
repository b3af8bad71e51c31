"""Vessel segmentation: Hessian vesselness on phantoms, a real photo and planted lines; pixel AUC; FPN."""
import re

import numpy as np
import pytest
from PIL import Image

from retina_fast.data.phantom import make_fundus
from retina_fast.vessels import fpn
from retina_fast.vessels.auc import pixel_auc
from retina_fast.vessels.image import estimate_fov_mask
from retina_fast.vessels.segment import SegmentationResult, _cupy, default_sigmas, segment


# ----------------------------------------------------------------------------------- synthetic


def _disc_image(n, seed):
    """An n x n bright retina disc (radial illumination fall-off, antialiased rim) on black, float RGB."""
    rr, cc = np.mgrid[:n, :n].astype(np.float32)
    c = (n - 1) / 2
    rad = np.hypot(rr - c, cc - c)
    radius = 0.47 * n
    illum = 1 - 0.35 * (rad / radius) ** 2
    inside = np.clip(radius + 0.5 - rad, 0, 1)
    base = np.stack([200 * illum, 110 * illum, 50 * illum], -1) * inside[..., None]
    return base, rad, radius, np.random.default_rng(seed)


def _line_distance(n, theta_deg, offset):
    """Distance (px) of every pixel from the straight line at `offset` px from the centre, normal at theta."""
    rr, cc = np.mgrid[:n, :n].astype(np.float32)
    c = (n - 1) / 2
    t = np.deg2rad(theta_deg)
    return np.abs((rr - c) * np.cos(t) + (cc - c) * np.sin(t) - offset)


def _noisy(base, rng, sigma=2.0):
    return np.clip(base + rng.normal(0, sigma, base.shape), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------- hessian


@pytest.fixture(scope="module")
def phantoms():
    return [make_fundus(seed, size=(768, 1024)) for seed in (11, 12, 13)]


def test_hessian_recovers_phantom_vessels(phantoms):
    for image, truth in phantoms:
        res = segment(image, device="cpu")
        assert isinstance(res, SegmentationResult)
        assert res.prob.dtype == np.float32 and res.prob.shape == image.shape[:2]
        assert res.mask.dtype == bool and res.mask.shape == image.shape[:2]
        assert 0.0 <= res.prob.min() and res.prob.max() <= 1.0
        fov = res.fov_mask
        truth_v = truth.vessel_mask & fov
        assert pixel_auc(res.prob, truth.vessel_mask, fov) >= 0.90
        # the automatic mask has about the planted vessel area and overlaps it
        dice = 2 * (res.mask & truth_v).sum() / (res.mask.sum() + truth_v.sum())
        assert dice >= 0.7, dice
        assert 0.6 <= res.mask.sum() / truth_v.sum() <= 1.5
        # and keeps the planted tree connected
        from scipy import ndimage as ndi
        lab, n = ndi.label(res.mask, structure=np.ones((3, 3)))
        assert np.bincount(lab.ravel())[1:].max() > 0.8 * res.mask.sum()


@pytest.mark.parametrize("kw", [dict(noise_sigma=6.0), dict(exposure=0.5), dict(disease="erm")])
def test_hessian_mask_on_hard_phantoms(kw):
    # noisy, dark and ERM frames: the automatic threshold rises with the noise, the mask stays close
    image, truth = make_fundus(40, size=(768, 1024), **kw)
    res = segment(image, device="cpu")
    truth_v = truth.vessel_mask & res.fov_mask
    assert pixel_auc(res.prob, truth.vessel_mask, res.fov_mask) >= 0.95
    assert 2 * (res.mask & truth_v).sum() / (res.mask.sum() + truth_v.sum()) >= 0.75
    if kw.get("noise_sigma"):
        assert res.threshold > 0.5


def test_estimated_fov_matches_phantom_circle(phantoms):
    image, truth = phantoms[0]
    rr, cc = np.mgrid[:image.shape[0], :image.shape[1]]
    d = np.hypot(rr - truth.fov_center[0], cc - truth.fov_center[1]) - truth.fov_radius
    fov = estimate_fov_mask(image)
    assert fov[d < -4].all()
    assert not fov[d > 4].any()


def test_real_retina_mask_is_sane(tmp_path):
    import skimage.data

    from retina_fast.data.fov import find_fov

    image = skimage.data.retina()
    res = segment(image, device="cpu")
    overlay = image.copy()
    overlay[res.mask] = (0, 255, 0)
    Image.fromarray(np.concatenate([image, overlay], axis=1)).save(tmp_path / "retina_vessels.png")
    assert (tmp_path / "retina_vessels.png").stat().st_size > 0

    circle = find_fov(image)  # fitted independently of segment's own FOV estimate
    rr, cc = np.mgrid[:image.shape[0], :image.shape[1]]
    d = np.hypot(rr - circle.center[0], cc - circle.center[1]) - circle.radius
    interior = d < -20
    coverage = res.mask[interior].mean()
    assert 0.05 <= coverage <= 0.20, coverage
    # nothing outside the retina (the photo's small notch at the top right is outside the circle)
    assert res.mask[d > 5].mean() < 0.005
    # the bright-to-black rim is not a vessel: the 15 px band along it has fewer vessel pixels than
    # the interior (vessels do cross it)
    assert res.mask[(d >= -10) & (d <= 5)].mean() < 0.5 * coverage
    # the vessels form a tree: the largest connected component holds most of the mask
    from scipy import ndimage as ndi
    lab, n = ndi.label(res.mask, structure=np.ones((3, 3)))
    assert np.bincount(lab.ravel())[1:].max() > 0.6 * res.mask.sum()


def test_blank_retina_gives_no_vessels():
    # illumination fall-off, noise and the bright-to-black rim, and no vessel
    base, rad, radius, rng = _disc_image(512, 0)
    res = segment(_noisy(base, rng), sigmas=default_sigmas((1024, 1024)), device="cpu")
    assert abs(res.fov_mask.sum() - (rad <= radius).sum()) < 0.01 * res.fov_mask.sum()
    assert res.mask.sum() == 0
    assert np.quantile(res.prob[res.fov_mask], 0.99) < 0.3


@pytest.mark.parametrize("theta", [0, 30, 45, 90, 120])
def test_straight_lines_detected(theta):
    n, widths, offsets = 512, (2, 4, 7, 12), (-150, -50, 50, 150)
    base, rad, radius, rng = _disc_image(n, theta)
    shade = np.ones((n, n), np.float32)
    dists = []
    for w, o in zip(widths, offsets, strict=True):
        d = _line_distance(n, theta, o)
        dists.append(d)
        shade *= 1 - 0.25 * np.clip(w / 2 + 0.5 - d, 0, 1)  # 25 % darker, antialiased edges
    res = segment(_noisy(base * shade[..., None], rng), sigmas=default_sigmas((1024, 1024)), device="cpu")
    inner = rad < radius - 30
    for w, d in zip(widths, dists, strict=True):
        assert np.median(res.prob[(d <= 0.71) & inner]) > 0.9, w
        assert res.mask[(d <= max(w / 2 - 1, 0.71)) & inner].mean() > 0.75, w
    dmin = np.min(dists, axis=0)
    far = (dmin > 20) & inner
    assert np.quantile(res.prob[far], 0.99) < 0.2
    assert res.mask[far].mean() == 0
    # the mask hugs the lines: nearly all of it within 1.5 px of a line's wall
    near = np.zeros((n, n), bool)
    for w, d in zip(widths, dists, strict=True):
        near |= d <= w / 2 + 1.5
    assert (res.mask & near).sum() >= 0.98 * res.mask.sum()


def test_inputs_accepted_and_threshold():
    image, truth = make_fundus(5, size=(384, 512))
    a = segment(image, device="cpu")
    # a 2-D green channel gives the same vesselness when given the same FOV
    b = segment(image[..., 1], fov_mask=a.fov_mask, device="cpu")
    np.testing.assert_allclose(a.prob, b.prob, atol=1e-6)
    # a higher threshold gives a smaller mask, inside the lower one's but for skeleton pixels
    low = segment(image, threshold=0.3, device="cpu")
    c = segment(image, threshold=0.95, device="cpu")
    assert c.threshold == 0.95 and c.mask.sum() < 0.9 * low.mask.sum()
    assert (c.mask & ~low.mask).sum() <= 0.05 * c.mask.sum()
    np.testing.assert_array_equal(low.prob, c.prob)
    assert a.threshold >= 0.5
    # float input in [0, 1] reads like uint8
    d = segment(image.astype(np.float32) / 255, device="cpu")
    np.testing.assert_allclose(a.prob, d.prob, atol=1e-4)


def test_bad_input():
    good = make_fundus(1, size=(192, 256))[0]
    with pytest.raises(TypeError, match="dtype"):
        segment(good.astype(np.complex64))
    with pytest.raises(TypeError, match="dtype"):
        segment(good > 0)
    with pytest.raises(ValueError, match="shape"):
        segment(good[..., :2])
    with pytest.raises(ValueError, match="shape"):
        segment(good[None])
    with pytest.raises(ValueError, match="shape"):
        segment(good[0, :, 0])
    with pytest.raises(ValueError, match="empty"):
        segment(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(TypeError, match="None"):
        segment(None)
    with pytest.raises(ValueError, match="field of view"):
        segment(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="method"):
        segment(good, method="unet")
    with pytest.raises(ValueError, match="checkpoint"):
        segment(good, method="fpn")
    with pytest.raises(ValueError, match="fov_mask"):
        segment(good, fov_mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="threshold"):
        segment(good, threshold=1.5, device="cpu")
    with pytest.raises(ValueError, match="device"):
        segment(good, device="tpu")
    nan = good.astype(np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        segment(nan)
    if _cupy() is None:
        with pytest.raises(RuntimeError, match="cuda"):
            segment(good, device="cuda")


@pytest.mark.cuda
def test_hessian_gpu_matches_cpu():
    if _cupy() is None:
        pytest.skip("cupy cannot use a CUDA device")
    image, truth = make_fundus(21, size=(1024, 1024))
    cpu = segment(image, device="cpu")
    gpu = segment(image, device="cuda")
    assert gpu.prob.dtype == np.float32 and isinstance(gpu.prob, np.ndarray)
    assert np.abs(gpu.prob - cpu.prob).max() < 2e-3
    assert (gpu.mask != cpu.mask).sum() <= 1e-3 * cpu.fov_mask.sum()
    assert abs(pixel_auc(gpu.prob, truth.vessel_mask, cpu.fov_mask)
               - pixel_auc(cpu.prob, truth.vessel_mask, cpu.fov_mask)) < 1e-3


# ----------------------------------------------------------------------------------------- AUC


def _brute_auc(p, t):
    pos, neg = p[t], p[~t]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


def test_pixel_auc_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape = (int(rng.integers(3, 15)), int(rng.integers(3, 15)))
        t = rng.random(shape) < rng.uniform(0.1, 0.9)
        if t.all() or not t.any():
            continue
        p = np.round(rng.random(shape) + 0.3 * t, 1).astype(np.float32)  # many ties
        assert pixel_auc(p, t) == pytest.approx(_brute_auc(p.ravel(), t.ravel()), abs=1e-12)
        valid = rng.random(shape) < 0.7
        if (t & valid).any() and (~t & valid).any():
            assert pixel_auc(p, t, valid) == pytest.approx(_brute_auc(p[valid], t[valid]), abs=1e-12)


def test_pixel_auc_edge_cases():
    t = np.array([[True, False], [False, True]])
    assert pixel_auc(t.astype(float), t) == 1.0
    assert pixel_auc(1.0 - t, t) == 0.0
    assert pixel_auc(np.full(t.shape, 0.3), t) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        pixel_auc(np.zeros((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        pixel_auc(np.zeros((2, 3)), t)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auc(np.array([[np.nan, 0], [0, 1]]), t)


# ----------------------------------------------------------------------------------------- FPN


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, one_thread):
    # one 96 x 96 patch around a phantom's optic disc (many vessels), the crop the whole patch: every
    # step sees the same pixels (flipped / transposed), so the loss must fall within a few steps
    image, truth = make_fundus(2, size=(384, 512))
    r0, c0 = (int(v) for v in truth.disc_center)
    patch = (slice(r0 - 48, r0 + 48), slice(c0 - 48, c0 + 48))
    ck = tmp_path_factory.mktemp("fpn") / "seg.pt"
    result = fpn.train_seg([(image[patch], truth.vessel_mask[patch])], ck, epochs=2, batch_size=2, crop=96,
                           crops_per_image=12, lr=1e-3, device="cpu", seed=0, progress=False)
    return result, ck, image[patch]


def test_fpn_loss_decreases(tiny_run):
    result, ck, _ = tiny_run
    losses = np.array(result["losses"])
    assert result["steps"] == 12 and len(losses) == 12 and np.isfinite(losses).all()
    assert losses[-4:].mean() < 0.8 * losses[:4].mean()
    assert losses[-4:].mean() < losses[0]


def test_fpn_checkpoint_round_trip(tiny_run, tmp_path):
    result, ck, image = tiny_run
    assert ck.is_file() and not list(ck.parent.glob(".*tmp*"))  # renamed into place
    loaded = fpn.load_model(ck)
    assert loaded.config == result["model"].config
    p_mem = fpn.predict(image, result["model"])
    p_disk = fpn.predict(image, ck, device="cpu")
    np.testing.assert_array_equal(p_mem, p_disk)
    res = segment(image, method="fpn", checkpoint=ck, device="cpu")
    np.testing.assert_array_equal(res.prob, p_disk)
    assert res.prob.dtype == np.float32 and res.mask.shape == image.shape[:2]
    assert not res.prob[~res.fov_mask].any()
    # tiled inference (the image is 96 x 96: 2 x 2 tiles of 64 px) covers the image
    p_tiled = fpn.predict(image, loaded, tile=64, overlap=16)
    assert p_tiled.shape == p_disk.shape and np.isfinite(p_tiled).all()


def test_fpn_missing_or_bad_checkpoint(tmp_path, one_thread):
    image = make_fundus(1, size=(192, 256))[0]
    missing = tmp_path / "nope" / "seg.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        segment(image, method="fpn", checkpoint=missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        fpn.load_model(junk)
    with pytest.raises(ValueError, match="URL"):
        fpn.load_model("https://example.org/seg.pt")


def test_fpn_folder_layout(tmp_path, one_thread):
    # DRIVE-like names: images/21_training.png + manual1/21_manual1.png + mask/21_training_mask.png
    image, truth = make_fundus(4, size=(128, 160))
    for sub in ("images", "manual1", "mask"):
        (tmp_path / sub).mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "21_training.png")
    Image.fromarray(truth.vessel_mask.astype(np.uint8) * 255).save(tmp_path / "manual1" / "21_manual1.png")
    Image.fromarray(estimate_fov_mask(image).astype(np.uint8) * 255).save(
        tmp_path / "mask" / "21_training_mask.png")
    Image.fromarray(image).save(tmp_path / "images" / "22_training.png")  # no label: skipped
    pairs, skipped = fpn.list_pairs(tmp_path)
    assert [(p[0].name, p[1].name, p[2].name) for p in pairs] == [
        ("21_training.png", "21_manual1.png", "21_training_mask.png")]
    assert [s[0].name for s in skipped] == ["22_training.png"]
    with pytest.warns(UserWarning, match="22_training"):
        result = fpn.train_seg(tmp_path, tmp_path / "ck.pt", epochs=1, batch_size=1, crop=64,
                               crops_per_image=1, device="cpu", progress=False)
    assert result["n_images"] == 1 and result["steps"] == 1
    with pytest.raises(ValueError, match="images/"):
        fpn.list_pairs(tmp_path / "mask")


@pytest.mark.cuda
def test_fpn_gpu_matches_cpu(tiny_run):
    result, ck, image = tiny_run
    cpu = fpn.predict(image, ck, device="cpu")
    gpu = fpn.predict(image, ck, device="cuda")
    assert np.abs(gpu - cpu).max() < 1e-3
