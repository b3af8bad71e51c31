"""Field of view (circle fit, crop geometry) and optic-disc detection against planted truth."""
import numpy as np
import pytest
import skimage.data
from PIL import Image

from retina_fast.data.disc import DETECTORS, DiscDetector, DiscResult, detect_disc
from retina_fast.data.fov import (
    CropGeometry,
    FieldOfView,
    FOVNotFoundError,
    crop_to_fov,
    find_fov,
    fit_circle,
)
from retina_fast.data.phantom import make_fundus

SMALL = (384, 512)


@pytest.fixture(scope="module")
def phantoms():
    """60 phantoms at 384 x 512 (the FOV is clipped at top and bottom, as fundus cameras write)."""
    return [make_fundus(seed, size=SMALL) for seed in range(60)]


def _disc_image(shape, center, radius, colour=(190, 90, 40), noise=2.0, seed=0):
    """A black frame (exact zeros) with a uniformly coloured noisy disc: an exactly known circle."""
    rr, cc = np.mgrid[:shape[0], :shape[1]]
    inside = (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius ** 2
    img = np.zeros(shape + (3,), np.float32)
    img[inside] = colour + np.random.default_rng(seed).normal(0, noise, (inside.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ FOV
def test_fit_circle_exact_and_rejects_outliers():
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r = np.full(200, 30.0)
    r[::10] = 37.0  # 10 % outliers, 7 px off the circle (a notch, burned-in text)
    pts = np.column_stack([50 + r * np.sin(t), -20 + r * np.cos(t)])
    center, radius, keep = fit_circle(pts)
    assert np.allclose(center, (50, -20), atol=1e-6) and radius == pytest.approx(30, abs=1e-6)
    assert not keep[::10].any() and keep.sum() == 180
    with pytest.raises(ValueError, match="points"):
        fit_circle(np.zeros((5, 3)))


@pytest.mark.parametrize("center,radius,clipped", [
    ((384.3, 512.7), 340.0, (False, False)),      # wholly inside the frame
    ((380.0, 520.2), 455.5, (True, True)),        # clipped at top and bottom, like 45-degree cameras
    ((300.0, 500.0), 420.0, (True, False)),       # clipped at top only
])
def test_find_fov_planted_circle(center, radius, clipped):
    img = _disc_image((768, 1024), center, radius)
    fov = find_fov(img)
    assert np.hypot(fov.center[0] - center[0], fov.center[1] - center[1]) < 0.005 * radius
    assert abs(fov.radius - radius) < 0.005 * radius
    assert (fov.clipped_top, fov.clipped_bottom) == clipped
    assert not fov.zoomed


def test_find_fov_phantoms(phantoms):
    for image, truth in phantoms[:30]:
        fov = find_fov(image)
        err = max(np.hypot(fov.center[0] - truth.fov_center[0], fov.center[1] - truth.fov_center[1]),
                  abs(fov.radius - truth.fov_radius))
        assert err < 0.01 * truth.fov_radius, (err, truth.fov_radius)
        h, _w = truth.size
        assert fov.clipped_top == (truth.fov_center[0] - truth.fov_radius < -0.5 - 0.01 * truth.fov_radius)
        assert fov.clipped_bottom == (truth.fov_center[0] + truth.fov_radius > h - 0.5 + 0.01 * truth.fov_radius)
        assert not fov.zoomed


def test_find_fov_zoomed_phantom_and_full_size():
    image, truth = make_fundus(7, size=SMALL, zoom=1.4)
    fov = find_fov(image)  # the circle leaves the frame at left and right; corners are still black
    assert fov.zoomed and truth.fov_radius > SMALL[1] / 2
    assert abs(fov.radius - truth.fov_radius) < 0.02 * truth.fov_radius
    image, truth = make_fundus(7, size=SMALL, zoom=1.6)
    with pytest.raises(FOVNotFoundError):  # the retina covers (almost) the whole frame
        find_fov(image)
    # a real-size frame: the fit runs on a 4x downsampled copy and still lands within 1 % of the radius
    image, truth = make_fundus(3)
    fov = find_fov(image)
    assert np.hypot(fov.center[0] - truth.fov_center[0], fov.center[1] - truth.fov_center[1]) < 0.01 * truth.fov_radius
    assert abs(fov.radius - truth.fov_radius) < 0.01 * truth.fov_radius


def test_find_fov_real_photo():
    fov = find_fov(skimage.data.retina())
    # the photograph's circle spans cols ~7-1401 and rows ~6-1400 (viewed); a notch at top right is rejected
    assert abs(fov.center[0] - 703) < 8 and abs(fov.center[1] - 704) < 8 and abs(fov.radius - 697) < 8
    assert not (fov.clipped_top or fov.clipped_bottom or fov.zoomed)


def test_find_fov_bad_input():
    with pytest.raises(ValueError, match="image"):
        find_fov(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="image"):
        find_fov(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(FOVNotFoundError):
        find_fov(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(FOVNotFoundError):  # retina fills the frame: no boundary to fit
        find_fov(np.full((100, 120, 3), 120, np.uint8))


# ----------------------------------------------------------------------------------------------- crop
def test_crop_geometry_exact_without_resize():
    img = np.zeros((200, 300, 3), np.uint8)
    img[37, 151] = (255, 0, 0)
    fov = FieldOfView((100.0, 150.0), 80.0)
    square, g = crop_to_fov(img, fov, size=160)
    assert g == CropGeometry(top=20, left=70, side=160, size=160)
    assert square.shape == (160, 160, 3)
    assert tuple(np.argwhere(square[..., 0] == 255)[0]) == (17, 81)
    assert np.allclose(g.to_output((37, 151)), (17, 81))
    assert np.allclose(g.to_input(g.to_output([[3.5, 7.25], [150, 2]])), [[3.5, 7.25], [150, 2]])


def test_crop_pads_black_outside_frame_and_centres_circle():
    center, radius = (200.0, 400.0), 300.0  # leaves the 400 x 800 frame at top and bottom
    img = _disc_image((400, 800), center, radius)
    square, g = crop_to_fov(img, FieldOfView(center, radius), size=256, resample="lanczos")
    assert square.shape == (256, 256, 3)
    # rows 0-100 and 500-600 of the square were outside the frame: black (but for the rows the
    # LANCZOS kernel, 3 output px, reaches from the frame's edge)
    pad = int(np.floor((0 - g.top) * g.scale)) - 4
    assert pad > 30 and square[:pad].max() == 0 and square[-pad:].max() == 0
    # the circle is centred in the output: refit it there
    out_fov = find_fov(np.where(square > 0, square, 0).astype(np.uint8))
    assert np.allclose(out_fov.center, (127.5, 127.5), atol=1.0)
    assert out_fov.radius == pytest.approx(128 * 2 * radius / g.side, rel=0.01)
    with pytest.raises(ValueError, match="size"):
        crop_to_fov(img, FieldOfView(center, radius), size=2.5)
    with pytest.raises(ValueError, match="resample"):
        crop_to_fov(img, FieldOfView(center, radius), size=64, resample="nearest")


@pytest.mark.parametrize("resample", ["box", "lanczos"])
def test_crop_geometry_maps_disc(phantoms, resample):
    """The disc found in the output image is where the true disc maps through the crop."""
    for image, truth in phantoms[:10]:
        fov = find_fov(image)
        square, g = crop_to_fov(image, fov, size=256, resample=resample)
        expected = g.to_output(truth.disc_center)
        d = detect_disc(square, g.output_fov(fov))
        assert np.hypot(*(np.asarray(d.center) - expected)) < 0.25 * truth.disc_radius * g.scale
        # the FOV centre lands on the output's centre
        assert np.allclose(g.to_output(fov.center), (127.5, 127.5), atol=0.5 * g.scale + 1e-9)


# ----------------------------------------------------------------------------------------------- disc
def test_disc_on_phantoms(phantoms):
    """Centre within 0.25 disc radius on >= 95 % (60 here; the benchmark script runs 200)."""
    errors, ratios = [], []
    for image, truth in phantoms:
        d = detect_disc(image)
        assert d.found
        errors.append(np.hypot(d.center[0] - truth.disc_center[0], d.center[1] - truth.disc_center[1])
                      / truth.disc_radius)
        ratios.append(d.radius / truth.disc_radius)
    errors = np.array(errors)
    assert (errors < 0.25).mean() >= 0.95, np.sort(errors)[-5:]
    assert 0.8 < np.median(ratios) < 1.2


def test_disc_on_real_photo():
    """skimage's retina photograph: the disc (viewed) spans about rows 555-750, cols 120-320."""
    d = detect_disc(skimage.data.retina())
    assert d.found
    assert 600 <= d.center[0] <= 710 and 170 <= d.center[1] <= 300, d
    assert 60 <= d.radius <= 130


def test_no_disc_is_not_found(phantoms):
    for image, truth in phantoms[:5]:
        a = image.astype(np.float32)
        rr, cc = np.mgrid[:image.shape[0], :image.shape[1]]
        dist = np.hypot(rr - truth.disc_center[0], cc - truth.disc_center[1])
        ring = (dist > 1.8 * truth.disc_radius) & (dist < 2.5 * truth.disc_radius)
        covered = dist < 1.7 * truth.disc_radius
        a[covered] = np.median(a[ring], axis=0) + np.random.default_rng(0).normal(0, 2, (covered.sum(), 3))
        painted = np.clip(a, 0, 255).astype(np.uint8)
        fov = find_fov(image)
        assert detect_disc(image, fov).found
        d = detect_disc(painted, fov)
        assert not d.found and d.score < detect_disc(image, fov).score / 2
    # a featureless noisy FOV
    fov = FieldOfView((192.0, 256.0), 200.0)
    blank = _disc_image(SMALL, fov.center, fov.radius)
    assert not detect_disc(blank, fov).found


def test_disc_on_raw_and_prepared_agree(phantoms):
    image, truth = phantoms[0]
    fov = find_fov(image)
    square, g = crop_to_fov(image, fov, size=512)
    raw, prep = detect_disc(image, fov), detect_disc(square)  # fov found inside detect_disc
    assert np.hypot(*(g.to_output(raw.center) - np.asarray(prep.center))) < 0.15 * truth.disc_radius * g.scale


def test_detector_plugin_interface(phantoms):
    image, truth = phantoms[1]

    class Oracle:
        def __call__(self, image, fov):
            return DiscResult(True, truth.disc_center, truth.disc_radius, 1.0)

    assert isinstance(Oracle(), DiscDetector) and "classical" in DETECTORS
    assert detect_disc(image, detector=Oracle()).center == truth.disc_center
    assert detect_disc(Image.fromarray(image)).found  # PIL input
    with pytest.raises(ValueError, match="detector"):
        detect_disc(image, detector="deep")
    with pytest.raises(TypeError, match="DiscResult"):
        detect_disc(image, detector=lambda im, fov: (1, 2))
    with pytest.raises(TypeError, match="fov"):
        detect_disc(image, fov=(1, 2, 3))
