"""Vessel amount, skeleton length, zone-B SNR, real-vs-synthetic statistics, batch and CLI.

Truth comes from drawn images (vessels of known width, contrast, angle and noise) and from the phantom
(`retina_fast.data.phantom`), whose vessel mask, centrelines, clean image and noise sigma are known.
"""
import csv
import math
import os

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats
from scipy.spatial import cKDTree

from retina_fast.data.phantom import VESSEL_CONTRAST, make_fundus
from retina_fast.vessels import (compare, measure_folder, measure_image, skeleton_length, skeletonize,
                                 vessel_amount, zone_b_mask, zone_b_snr)
from retina_fast.vessels.batch import CSV_COLUMNS, read_metrics_csv
from retina_fast.vessels.snr import ZONES, _inverse_sd_bias

# ------------------------------------------------------------------------------------------ drawing


def capsule(shape, p0, p1, width):
    """Pixels within width/2 of the segment p0-p1 ((row, col) px): the phantom's vessel-mask rule."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / (d @ d), 0, 1)
    return np.hypot(yy - p0[0] - t * d[0], xx - p0[1] - t * d[1]) <= width / 2


def arc(shape, center, radius, width, start_deg, stop_deg):
    """Ring of `width` around a circle of `radius`, kept between two polar angles (degrees)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    r = np.hypot(yy - center[0], xx - center[1])
    ang = np.degrees(np.arctan2(yy - center[0], xx - center[1])) % 360
    return (np.abs(r - radius) <= width / 2) & (ang >= start_deg) & (ang <= stop_deg)


def render(mask, background, contrast, sigma, rng, dtype=float):
    img = np.where(mask, background * (1 - contrast), background) + rng.normal(0, sigma, mask.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8) if dtype == np.uint8 else img


DISC = (400.0, 400.0)
R = 60.0                 # disc radius: zone B (radii) is 120-180 px from the centre
SHAPE = (800, 800)
B, C, SIGMA, WIDTH = 150.0, 0.3, 5.0, 7.0
PLANTED = B * (1 - C) / SIGMA   # 21.0


def parallel_vessels(angle_deg, width=WIDTH):
    """Four straight vessels at `angle_deg` crossing zone B at 2.2 R and 2.6 R on both sides of the disc."""
    a = math.radians(angle_deg)
    u = np.array([math.sin(a), math.cos(a)])           # along the vessel, (row, col)
    nrm = np.array([-u[1], u[0]])
    m = np.zeros(SHAPE, bool)
    for off in (-2.6, -2.2, 2.2, 2.6):
        mid = np.array(DISC) + off * R * nrm
        m |= capsule(SHAPE, mid - 300 * u, mid + 300 * u, width)
    return m


# ------------------------------------------------------------------------------------- vessel amount


def test_vessel_amount_exact_on_phantom_mask():
    _, truth = make_fundus(1, size=(512, 512))
    m = truth.vessel_mask
    a = vessel_amount(m)
    assert a.vessel_pixels == int(m.sum())
    assert a.fov_pixels == m.size and a.vessel_fraction == pytest.approx(m.sum() / m.size, rel=1e-12)
    assert a.skeleton_pixels == int(skeletonize(m).sum())
    yy, xx = np.mgrid[:512, :512]
    fov = np.hypot(yy - truth.fov_center[0], xx - truth.fov_center[1]) <= truth.fov_radius * 0.8
    b = vessel_amount(m, fov)
    assert b.vessel_pixels == int((m & fov).sum()) and b.fov_pixels == int(fov.sum())
    assert b.vessel_fraction == pytest.approx((m & fov).sum() / fov.sum(), rel=1e-12)
    assert b.skeleton_length < a.skeleton_length
    assert b.skeleton_density == pytest.approx(b.skeleton_length / fov.sum(), rel=1e-12)


@pytest.mark.parametrize("angle", [0, 10, 22.5, 30, 44, 60, 80, 100, 135, 160])
@pytest.mark.parametrize("width", [3, 8])
def test_skeleton_length_of_straight_vessels(angle, width):
    # the skeleton of a capsule runs (about) from cap to cap: compare with the centreline length
    a = math.radians(angle)
    u = np.array([math.sin(a), math.cos(a)])
    c = np.array([150.3, 150.7])
    m = capsule((300, 300), c - 100 * u, c + 100 * u, width)
    length, chain = skeleton_length(skeletonize(m))
    assert length == pytest.approx(200.0, rel=0.03)
    # the plain chain code is the biased one at oblique angles (the reason it is not the estimate)
    if angle in (22.5, 30, 60):
        assert chain > 1.05 * 200.0


@pytest.mark.parametrize("radius,width", [(40, 3), (90, 8), (150, 5)])
def test_skeleton_length_of_circles(radius, width):
    m = arc((340, 340), (170.4, 169.8), radius, width, 0, 360)
    length, _ = skeleton_length(skeletonize(m))
    assert length == pytest.approx(2 * math.pi * radius, rel=0.03)


def _covered_once_length(truth):
    """Centreline length on the mask, counting a stretch only once where a vessel runs inside an earlier
    one (child segments leave inside their parent; crossings): what any skeleton can at most see."""
    segs, (h, w) = truth.segments, truth.vessel_mask.shape
    pts = np.concatenate([s.points for s in segs])
    lab = np.concatenate([np.full(len(s.points), i) for i, s in enumerate(segs)])
    widths = np.array([s.width for s in segs])
    tree = cKDTree(pts)
    total = 0.0
    for i, s in enumerate(segs):
        p = s.points
        r, c = np.rint(p[:, 0]).astype(int), np.rint(p[:, 1]).astype(int)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        keep = np.zeros(len(p), bool)
        keep[ok] = truth.vessel_mask[r[ok], c[ok]]
        for k, nb in enumerate(tree.query_ball_point(p, r=0.5 * widths.max())):
            nb = np.asarray(nb, int)
            nb = nb[lab[nb] < i]
            if keep[k] and nb.size and np.any(np.hypot(*(pts[nb] - p[k]).T)
                                                <= 0.5 * np.maximum(widths[i], widths[lab[nb]])):
                keep[k] = False
        step = np.hypot(*np.diff(p, axis=0).T)
        total += float(step[keep[:-1] & keep[1:]].sum())
    return total


@pytest.mark.parametrize("seed", [0, 3])
def test_skeleton_length_on_phantom_between_truth_bounds(seed):
    # truth.centerline_length() counts overlapping stretches twice (about 10 % of it: branches leave
    # inside their parent, vessels cross), which no skeleton can see; the covered-once length drops
    # every overlapping stretch, including crossings the skeleton does run through. The skeleton
    # length must lie between the two.
    _, truth = make_fundus(seed, size=(768, 768))
    length = vessel_amount(truth.vessel_mask).skeleton_length
    once = _covered_once_length(truth)
    assert once <= length <= truth.centerline_length()
    assert length == pytest.approx(0.5 * (once + truth.centerline_length()), rel=0.08)


@pytest.mark.parametrize("seed,size", [(0, (768, 768)), (5, (768, 1024)), (1, (1536, 2048))])
def test_skeleton_length_of_phantom_trees_within_3_percent(seed, size):
    # One tree at a time (a trunk and all its branches), the planted centreline length is what a
    # skeleton can see: branches start on their parent's centreline and nothing else overlaps.
    _, truth = make_fundus(seed, size=size)
    measured = planted = 0.0
    for tree in truth.trees():
        measured += vessel_amount(truth.segment_mask(tree)).skeleton_length
        planted += truth.centerline_length(tree)
    assert measured == pytest.approx(planted, rel=0.03)


# ------------------------------------------------------------------------------------ zone-B SNR


@pytest.mark.parametrize("angle", [0, 30, 45, 60, 90, 135])
def test_snr_straight_vessels_recovers_planted(angle):
    rng = np.random.default_rng(angle)
    # Zhang-Suen (scikit-image's algorithm, reproduced exactly) erases some bars at exactly 45 degrees
    # entirely (e.g. this 7 px one at one of the offsets): 5 px bars survive there
    width = 5.0 if angle == 45 else WIDTH
    m = parallel_vessels(angle, width)
    img = render(m, B, C, SIGMA, rng)
    res = zone_b_snr(img, m, DISC, R, points_per_vessel=60)
    assert res.reason == ""
    assert res.n_segments == 4
    assert res.snr == pytest.approx(PLANTED, rel=0.05)
    assert res.snr_db == pytest.approx(20 * math.log10(res.snr), rel=1e-12)
    good = [p for p in res.points if np.isfinite(p.snr)]
    assert len(good) >= 0.95 * len(res.points)
    a = math.radians(angle)
    for p in good:
        assert abs(p.dir_row * math.sin(a) + p.dir_col * math.cos(a)) > 0.97     # direction along the vessel
        assert abs(p.width_px - width) <= 1.5                                     # +- one digital step
        assert p.signal == pytest.approx(B * (1 - C), abs=6 * SIGMA / math.sqrt(p.n_signal) + 0.5)
        d = math.hypot(p.row - DISC[0], p.col - DISC[1])
        assert 2 * R <= d <= 3 * R and m[round(p.row), round(p.col)]
        assert p.snr == pytest.approx(p.signal / p.noise / _inverse_sd_bias(p.n_noise), rel=1e-12)


def test_snr_uint8_image_and_unbiased_switch():
    rng = np.random.default_rng(11)
    m = parallel_vessels(20)
    img = render(m, B, C, SIGMA, rng, dtype=np.uint8)
    res = zone_b_snr(img, m, DISC, R, points_per_vessel=60)
    assert res.snr == pytest.approx(PLANTED, rel=0.05)
    raw = zone_b_snr(img, m, DISC, R, points_per_vessel=60, unbiased=False)
    # 10 noise samples: the raw mean of signal / s overestimates signal / sigma by E[sigma/s] = 1.094
    assert raw.snr == pytest.approx(res.snr * _inverse_sd_bias(10), rel=0.01)
    assert _inverse_sd_bias(10) == pytest.approx(1.0942, abs=1e-4)


def test_snr_curved_vessels_recovers_planted():
    rng = np.random.default_rng(5)
    m = arc(SHAPE, DISC, 2.5 * R, WIDTH, 0, 300)                       # wide arc along zone B
    m |= arc(SHAPE, (DISC[0] + 2.5 * R, DISC[1]), 0.45 * R, 5.0, 0, 270)  # tight arc (radius 27 px)
    img = render(m, B, C, SIGMA, rng)
    res = zone_b_snr(img, m, DISC, R, points_per_vessel=80)
    assert res.reason == "" and res.n_segments >= 2
    assert res.snr == pytest.approx(PLANTED, rel=0.05)
    # directions follow the curve: perpendicular to the radius of the big arc
    for p in res.points:
        on_big = abs(math.hypot(p.row - DISC[0], p.col - DISC[1]) - 2.5 * R) < 2
        on_small = abs(math.hypot(p.row - DISC[0] - 2.5 * R, p.col - DISC[1]) - 0.45 * R) < 4
        polar = math.degrees(math.atan2(p.row - DISC[0], p.col - DISC[1])) % 360
        away_from_ends = 5 < polar < 295       # the cut ends fork (Zhang-Suen) over a few px
        if np.isfinite(p.snr) and on_big and not on_small and away_from_ends:
            radial = np.array([p.row - DISC[0], p.col - DISC[1]]) / (2.5 * R)
            assert abs(radial @ [p.dir_row, p.dir_col]) < 0.15


def test_snr_per_point_records_match_direct_computation():
    # horizontal vessel: the perpendicular is a pixel column, so everything can be recomputed by hand
    rng = np.random.default_rng(2)
    m = np.zeros(SHAPE, bool)
    top, bottom = 245, 251                                        # rows 245..251: width 7
    m[top:bottom + 1, 150:650] = True
    img = render(m, B, C, SIGMA, rng)
    res = zone_b_snr(img, m, DISC, R, points_per_vessel=5, halfwidth=5, gap=1)
    assert res.n_points == 5 and res.n_segments == 1
    for p in res.points:
        r, c = int(p.row), int(p.col)
        assert abs(p.dir_row) < 1e-9 and abs(abs(p.dir_col) - 1) < 1e-9
        assert p.width_px == pytest.approx(7.0)
        below = img[bottom + 2:bottom + 7, c]                      # gap of one pixel, then 5 pixels
        above = img[top - 6:top - 1, c]
        noise = np.std(np.concatenate([above, below]), ddof=1)
        assert p.noise == pytest.approx(noise, rel=1e-12) and p.n_noise == 10
        # signal: samples every 0.5 px on the column inside the vessel; linear interpolation
        # (at +-0.25, +-0.75, ... px; interpolation only between vessel pixels)
        ts = np.arange(top - r - 0.25, bottom - r + 0.25 + 1e-9, 0.5)
        vals = np.interp(np.clip(r + ts, top, bottom), np.arange(SHAPE[0]), img[:, c])
        assert p.signal == pytest.approx(vals.mean(), rel=1e-12) and p.n_signal == len(ts)
    # noise-free: the signal is exactly the vessel intensity (no background leaks in at the wall)
    clean = zone_b_snr(np.where(m, B * (1 - C), B), m, DISC, R)
    assert all(p.signal == pytest.approx(B * (1 - C), abs=1e-9) for p in clean.points)
    assert math.isnan(clean.snr) and "noise SD is 0" in clean.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snr_on_phantom_recovers_planted(seed):
    # texture and illumination off: the background is flat except for real structure (neighbouring
    # vessels, the disc rim), which the clean image shows. Planted per-point SNR = clean signal /
    # sqrt(sigma^2 + clean background SD^2 + 1/12 for the uint8 rounding), at the same points (the
    # points depend on the mask only).
    img, truth = make_fundus(seed, size=(1024, 1024), texture=False, illumination=False, noise_sigma=4.0,
                             return_clean=True)
    m = truth.vessel_mask
    res = zone_b_snr(img, m, truth.disc_center, truth.disc_radius, points_per_vessel=30)
    ref = zone_b_snr(truth.clean, m, truth.disc_center, truth.disc_radius, points_per_vessel=30)
    assert [(p.row, p.col) for p in res.points] == [(p.row, p.col) for p in ref.points]
    ok = np.array([np.isfinite(p.snr) for p in res.points])
    assert ok.mean() > 0.95 and res.n_points > 300
    sig = np.array([p.signal for p in ref.points])[ok]
    bg = np.array([p.noise for p in ref.points])[ok]
    planted = sig / np.sqrt(truth.noise_sigma ** 2 + bg ** 2 + 1 / 12)
    assert res.snr == pytest.approx(planted.mean(), rel=0.05)
    measured_signal = np.array([p.signal for p in res.points])[ok]
    assert np.median(np.abs(measured_signal - sig)) < 2.0
    # contrast kind: planted |clean background - clean signal| over the same noise
    bg_mean = np.array([p.background for p in ref.points])[ok]
    planted_cnr = np.abs(bg_mean - sig) / np.sqrt(truth.noise_sigma ** 2 + bg ** 2 + 1 / 12)
    assert res.snr_contrast == pytest.approx(planted_cnr.mean(), rel=0.07)
    measured_bg = np.array([p.background for p in res.points])[ok]
    assert np.median(np.abs(measured_bg - bg_mean)) < 2.0


@pytest.mark.parametrize("angle", [0, 60])
def test_snr_contrast_kind_recovers_planted_cnr(angle):
    rng = np.random.default_rng(100 + angle)
    m = parallel_vessels(angle)
    img = render(m, B, C, SIGMA, rng)
    res = zone_b_snr(img, m, DISC, R, points_per_vessel=60, kind="contrast")
    assert res.reason == "" and res.kind == "contrast"
    planted_cnr = B * C / SIGMA                                          # 45 / 5 = 9
    assert res.snr == pytest.approx(planted_cnr, rel=0.05)
    assert res.snr == res.snr_contrast and res.snr_db == pytest.approx(20 * math.log10(planted_cnr), abs=0.45)
    assert res.snr_signal == pytest.approx(PLANTED, rel=0.05)
    # the same points and the same per-point records as the default kind, whose snr is the other ratio
    lit = zone_b_snr(img, m, DISC, R, points_per_vessel=60)
    assert lit.kind == "signal" and lit.snr == res.snr_signal and lit.snr_contrast == res.snr_contrast
    for p, q in zip(res.points, lit.points):
        assert (p.background, p.noise, p.signal) == (q.background, q.noise, q.signal) or math.isnan(p.snr)
    good = [p for p in res.points if np.isfinite(p.snr)]
    assert len(good) >= 0.95 * len(res.points)
    for p in good:
        k = _inverse_sd_bias(p.n_noise)
        assert p.background == pytest.approx(B, abs=6 * SIGMA / math.sqrt(p.n_noise))
        assert p.snr == p.snr_contrast == pytest.approx(abs(p.background - p.signal) / p.noise / k, rel=1e-12)
        # dark vessel: signal + contrast = background, so the two ratios add up to background / noise
        assert p.snr_signal + p.snr_contrast == pytest.approx(p.background / p.noise / k, rel=1e-12)


def test_snr_kinds_under_offset_and_inversion():
    # the contrast ratio ignores the image's brightness; the paper's literal ratio scales with it
    rng = np.random.default_rng(8)
    m = parallel_vessels(30)
    img = render(m, B, C, SIGMA, rng)
    base = zone_b_snr(img, m, DISC, R, unbiased=False)
    brighter = zone_b_snr(img + 50.0, m, DISC, R, unbiased=False)
    inverted = zone_b_snr(255.0 - img, m, DISC, R, unbiased=False)      # bright vessels on a dark ground
    assert brighter.snr_contrast == pytest.approx(base.snr_contrast, rel=1e-9)
    assert inverted.snr_contrast == pytest.approx(base.snr_contrast, rel=1e-9)
    ok = [i for i, p in enumerate(base.points) if np.isfinite(p.snr)]
    assert brighter.snr_signal == pytest.approx(
        base.snr_signal + np.mean([50.0 / base.points[i].noise for i in ok]), rel=1e-9)
    for i in ok:
        p, q = base.points[i], inverted.points[i]
        assert q.background == pytest.approx(255.0 - p.background) and q.noise == pytest.approx(p.noise)
        assert q.snr_signal == pytest.approx((255.0 - p.signal) / p.noise, rel=1e-9)


def _snr_both_kinds(image, zones=("radii",)):
    """(signal, contrast) zone-B means per zone, with the Hessian mask and the detected disc."""
    from retina_fast.data.disc import detect_disc
    from retina_fast.vessels import segment
    mask = segment(image, device="cpu").mask
    disc = detect_disc(image)
    assert disc.found
    out = []
    for zone in zones:
        r = zone_b_snr(image, mask, disc.center, disc.radius, zone=zone)
        assert r.reason == "" and r.n_points > 50
        out.append((r.snr_signal, r.snr_contrast))
    return out


def _prepared(image):
    """The 1024 x 1024 square `prepare` writes (FOV crop, box resize)."""
    from retina_fast.data.fov import crop_to_fov, find_fov
    return crop_to_fov(image, find_fov(image), 1024)[0]


def test_phantom_snr_in_the_range_of_the_real_photo():
    # the real photograph at its own resolution and as `prepare` writes it, in both zone definitions,
    # gives the range; the phantom's defaults (vessel_contrast, noise_sigma) were set to land in it
    import skimage.data
    real = skimage.data.retina()
    both = _snr_both_kinds(real, ZONES) + _snr_both_kinds(_prepared(real), ZONES)
    lo, hi = np.min(both, axis=0), np.max(both, axis=0)
    # measured: signal 20.3-26.8, contrast 3.6-4.5 (the paper's 1.69 is in neither: see the README)
    assert 15 < lo[0] and hi[0] < 30 and 3 < lo[1] and hi[1] < 5.5 and hi[0] / lo[1] > 4
    phantom = np.array([_snr_both_kinds(_prepared(make_fundus(seed)[0]))[0] for seed in range(4)])
    mean = phantom.mean(axis=0)
    assert np.all((lo <= mean) & (mean <= hi)), (mean, lo, hi)
    # every frame is within a quarter of the range's ends (frames differ in exposure and vessel tree)
    assert np.all((phantom >= 0.75 * lo) & (phantom <= 1.25 * hi)), phantom


def test_phantom_vessel_contrast_scales_the_planted_contrasts():
    img, t = make_fundus(3, size=(256, 320), noise_sigma=0.0, return_clean=True)
    img1, t1 = make_fundus(3, size=(256, 320), noise_sigma=0.0, vessel_contrast=1.0, return_clean=True)
    assert np.array_equal(t.vessel_mask, t1.vessel_mask) and len(t.segments) == len(t1.segments)
    for a, b in zip(t.segments, t1.segments):
        assert np.array_equal(a.points, b.points) and a.contrast == pytest.approx(VESSEL_CONTRAST * b.contrast)
    # inside the vessels the green darkening (1 - clean / background) scales with it too
    off = make_fundus(3, size=(256, 320), noise_sigma=0.0, vessel_contrast=0.0, return_clean=True)[1]
    inner = ndi.binary_erosion(t.vessel_mask, iterations=1)
    g, g1, g0 = t.clean[..., 1][inner], t1.clean[..., 1][inner], off.clean[..., 1][inner]
    assert np.median((1 - g / g0) / (1 - g1 / g0)) == pytest.approx(VESSEL_CONTRAST, rel=0.02)
    with pytest.raises(ValueError, match="vessel_contrast"):
        make_fundus(0, size=(64, 64), vessel_contrast=-0.1)


def test_zone_definitions():
    z = zone_b_mask((100, 100), (50, 50), 10, "radii")
    assert z[50, 50 + 20] and z[50, 50 + 30] and not z[50, 50 + 19] and not z[50, 50 + 31]
    z = zone_b_mask((200, 200), (100, 100), 10, "diameters")
    assert z[100, 100 + 40] and z[100, 100 + 60] and not z[100, 100 + 39] and not z[100, 100 + 61]
    m = arc(SHAPE, DISC, 2.5 * R, WIDTH, 0, 300)
    img = render(m, B, C, SIGMA, np.random.default_rng(0))
    # a vessel at 2.5 R is in the standard zone and not in the literal one (4-6 R)
    assert zone_b_snr(img, m, DISC, R, zone="radii").n_points > 0
    lit = zone_b_snr(img, m, DISC, R, zone="diameters")
    assert math.isnan(lit.snr) and lit.reason == "no vessel in zone B"
    assert lit.zone_radii == (4 * R, 6 * R)
    with pytest.raises(ValueError, match="zone"):
        zone_b_snr(img, m, DISC, R, zone="B")


def test_rgb_uses_green_channel():
    rng = np.random.default_rng(4)
    m = parallel_vessels(60)
    g = render(m, B, C, SIGMA, rng, dtype=np.uint8)
    rgb = np.stack([np.full_like(g, 200), g, rng.integers(0, 255, g.shape, dtype=np.uint8)], axis=-1)
    a = zone_b_snr(rgb, m, DISC, R)
    b = zone_b_snr(g, m, DISC, R)
    assert a.snr == b.snr and a.n_points == b.n_points
    assert zone_b_snr(rgb, m, DISC, R, channel="red").reason != ""   # flat red: zero noise everywhere


def test_bad_inputs_give_errors_or_reasons():
    m = parallel_vessels(0)
    img = render(m, B, C, SIGMA, np.random.default_rng(0))
    empty = zone_b_snr(img, np.zeros_like(m), DISC, R)
    assert math.isnan(empty.snr) and empty.reason == "empty vessel mask"
    full = zone_b_snr(img, np.ones_like(m), DISC, R)
    assert math.isnan(full.snr) and full.reason
    outside = zone_b_snr(img, m, (-50.0, 400.0), R)
    assert math.isnan(outside.snr) and "outside the image" in outside.reason
    far = np.zeros_like(m)
    far[10:17, 10:300] = True
    none = zone_b_snr(img, far, DISC, R)
    assert math.isnan(none.snr) and none.reason == "no vessel in zone B"
    with pytest.raises(ValueError, match="vessel_mask"):
        zone_b_snr(img, m.astype(float) * 0.7, DISC, R)            # a probability map, not a mask
    with pytest.raises(ValueError, match="vessel_mask"):
        zone_b_snr(img, m[:-1], DISC, R)                           # shape mismatch
    with pytest.raises(ValueError, match="disc_radius"):
        zone_b_snr(img, m, DISC, 0)
    with pytest.raises(ValueError, match="disc_center"):
        zone_b_snr(img, m, (np.nan, 3), R)
    with pytest.raises(ValueError, match="image"):
        zone_b_snr(np.zeros((4, 800, 800)), m, DISC, R)
    with pytest.raises(ValueError, match="kind"):
        zone_b_snr(img, m, DISC, R, kind="cnr")
    for bad in ({"points_per_vessel": 0}, {"halfwidth": 1}, {"gap": -1}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))} must be an integer >= "):
            zone_b_snr(img, m, DISC, R, **bad)
    with pytest.raises(TypeError, match="points_per_vessel must be an integer"):   # not truncated to 2
        zone_b_snr(img, m, DISC, R, points_per_vessel=2.5)
    with pytest.raises(ValueError, match="mask"):
        vessel_amount(np.full((5, 5), 2))
    with pytest.raises(ValueError, match="fov_mask"):
        vessel_amount(m, np.ones((3, 3), bool))
    # all-vessel and empty masks are still measurable amounts
    assert vessel_amount(np.ones((50, 60), bool)).vessel_fraction == 1.0
    e = vessel_amount(np.zeros((50, 60), bool))
    assert e.vessel_pixels == 0 and e.skeleton_length == 0.0


# ---------------------------------------------------------------------------------------- compare


def test_compare_matches_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW
    rng = np.random.default_rng(0)
    a = rng.normal(1.18e5, 2.0e4, 300)
    b = rng.normal(1.14e5, 2.8e4, 250)
    b[:5] = np.nan
    res = compare(a, b, name="vessel amount", image_size=1024 * 1024)
    bb = b[5:]
    assert res.n_real == 300 and res.n_synthetic == 245 and res.n_dropped == 5
    s = stats.ttest_ind(a, bb, equal_var=True)
    w = stats.ttest_ind(a, bb, equal_var=False)
    assert res.p_student == pytest.approx(s.pvalue, rel=1e-10) and res.t_student == pytest.approx(s.statistic)
    assert res.p_welch == pytest.approx(w.pvalue, rel=1e-10) and res.t_welch == pytest.approx(w.statistic)
    cm = CompareMeans(DescrStatsW(a), DescrStatsW(bb))
    assert np.allclose(res.ci_student, cm.tconfint_diff(usevar="pooled"), rtol=1e-10)
    assert np.allclose(res.ci_welch, cm.tconfint_diff(usevar="unequal"), rtol=1e-10)
    assert res.df_welch == pytest.approx(cm.ttest_ind(usevar="unequal")[2], rel=1e-10)
    diff = a.mean() - bb.mean()
    assert res.mean_difference == pytest.approx(diff)
    assert res.difference_pct_of_image == pytest.approx(100 * abs(diff) / 1024 ** 2)
    assert res.difference_pct_of_real == pytest.approx(100 * abs(diff) / a.mean())
    pooled = math.sqrt((299 * a.var(ddof=1) + 244 * bb.var(ddof=1)) / 543)
    assert res.cohens_d == pytest.approx(diff / pooled)
    md = res.to_markdown()
    assert "vessel amount" in md and "±" in md and md.count("\n") == 3


def test_cohens_d_recovers_planted_effect():
    rng = np.random.default_rng(1)
    for d in (0.2, 0.5, 1.0):
        res = compare(rng.normal(d, 1.0, 20000), rng.normal(0.0, 1.0, 20000))
        assert res.cohens_d == pytest.approx(d, abs=0.04)
        assert res.ci_d[0] < d < res.ci_d[1]
        assert res.ci_d[1] - res.ci_d[0] == pytest.approx(2 * 1.96 * math.sqrt(2 / 20000 + d * d / 80000), rel=1e-3)
    same = compare(rng.normal(0, 1, 5000), rng.normal(0, 1, 5000))
    assert abs(same.cohens_d) < 0.06 and same.p_welch > 0.001


def test_compare_rejects_too_few_values():
    with pytest.raises(ValueError, match="at least 2"):
        compare([1.0, np.nan], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="empty"):
        compare([], [1.0, 2.0])
    with pytest.raises(ValueError, match="image_size"):
        compare([1.0, 2.0], [1.0, 2.0], image_size=0)


# ------------------------------------------------------------------------------------ batch / CLI


def _phantom_folder(folder, seeds, size=(256, 256)):
    from retina_fast.data.dataset import write_png
    os.makedirs(folder, exist_ok=True)
    truths = {}
    for s in seeds:
        img, truth = make_fundus(s, size=size)
        name = f"img{s:03d}.png"
        write_png(os.path.join(folder, name), img)
        truths[name] = (img, truth)
    return truths


def test_measure_folder_with_injected_segmenter_matches_measure_image(tmp_path):
    truths = _phantom_folder(tmp_path / "imgs", [0, 1, 2])
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    by_pixels = {img.tobytes(): t for img, t in truths.values()}

    def segmenter(image):
        return by_pixels[image.tobytes()].vessel_mask

    class Disc:
        def __init__(self, t):
            self.found, self.center, self.radius = True, t.disc_center, t.disc_radius

    def detector(image):
        return Disc(by_pixels[image.tobytes()])

    out = tmp_path / "m.csv"
    rows = measure_folder(tmp_path / "imgs", out, workers=2, segmenter=segmenter, disc_detector=detector,
                          progress=False)
    assert [r["image"] for r in rows] == ["broken.png", "img000.png", "img001.png", "img002.png"]
    assert rows[0]["reason"].startswith("unreadable") and math.isnan(rows[0]["snr"])
    for r in rows[1:]:
        img, t = truths[r["image"]]
        want = measure_image(img, t.vessel_mask, t.disc_center, t.disc_radius)
        for k, v in want.items():
            assert r[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(r[k])), k
        assert r["disc_source"] == "detected" and r["vessel_pixels"] == int(t.vessel_mask.sum())
        assert r["snr_kind"] == "signal" and r["snr"] == r["snr_signal"] and r["snr_contrast"] > 0
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert tuple(got[0]) == CSV_COLUMNS and len(got) == 4
    assert {"snr_kind", "snr_signal", "snr_contrast"} <= set(got[0])
    assert float(got[1]["snr_contrast"]) == rows[1]["snr_contrast"] and got[1]["snr_kind"] == "signal"
    # kind='contrast': the snr column is the contrast ratio; both kinds stay in their own columns
    cnr = measure_folder(tmp_path / "imgs", None, workers=0, segmenter=segmenter, disc_detector=detector,
                         progress=False, kind="contrast")
    for a, b in zip(rows[1:], cnr[1:]):
        assert b["snr_kind"] == "contrast" and b["snr"] == b["snr_contrast"] == a["snr_contrast"]
        assert b["snr_signal"] == a["snr_signal"] and b["snr_db"] == pytest.approx(20 * math.log10(b["snr"]))
    with pytest.raises(ValueError, match="kind"):
        measure_folder(tmp_path / "imgs", None, workers=0, segmenter=segmenter, progress=False, kind="cnr")
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    back = read_metrics_csv(out)
    assert back["vessel_pixels"][1] == rows[1]["vessel_pixels"]


def test_measure_dataset_uses_manifest_disc_and_survives_errors(tmp_path):
    from retina_fast.data.dataset import image_name, write_dataset_json, write_png
    ds = tmp_path / "out" / "dataset"
    items, manifest = [], []
    for i, s in enumerate([4, 5]):
        img, t = make_fundus(s, size=(256, 256))
        name = image_name(i)
        os.makedirs(ds / os.path.dirname(name), exist_ok=True)
        write_png(ds / name, img)
        items.append((name, 0))
        manifest.append({"status": "accepted", "output": name, "disc_row": t.disc_center[0] + 1,
                         "disc_col": t.disc_center[1], "disc_radius": t.disc_radius})
    write_dataset_json(ds, items)
    with open(tmp_path / "out" / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(manifest[0]))
        w.writeheader()
        w.writerows(manifest)

    def segmenter(image):
        if image[0, 0, 0] == 255:
            raise RuntimeError("boom")
        return image[:, :, 1] < 40

    def no_detector(image):
        raise AssertionError("the manifest has every disc")

    rows = measure_folder(ds, None, workers=0, segmenter=segmenter, disc_detector=no_detector, progress=False)
    assert len(rows) == 2
    for r, m in zip(rows, manifest):
        assert r["disc_source"] == "manifest" and r["disc_row"] == m["disc_row"] and r["label"] == 0
    # a segmenter failure is a row with a reason, not a crash
    img = np.full((32, 32, 3), 255, np.uint8)
    write_png(ds / image_name(0), img)
    rows = measure_folder(ds, None, workers=0, segmenter=segmenter, disc_detector=no_detector, progress=False)
    assert rows[0]["reason"].startswith("error: RuntimeError: boom")
    assert not rows[1]["reason"].startswith("error") and rows[1]["vessel_pixels"] > 0


def test_cli_measure_and_compare_end_to_end(tmp_path, capsys):
    from retina_fast.cli import main
    _phantom_folder(tmp_path / "real", [10, 11, 12], size=(320, 320))
    _phantom_folder(tmp_path / "synth", [20, 21, 22], size=(320, 320))
    for k in ("real", "synth"):
        assert main(["vessels", "measure", str(tmp_path / k), "--out", str(tmp_path / f"{k}.csv"),
                     "--workers", "2"]) == 0
        vals = read_metrics_csv(tmp_path / f"{k}.csv")
        assert len(vals["image"]) == 3
        assert np.all(vals["vessel_pixels"] > 0.03 * 320 * 320)
        assert np.all(vals["skeleton_length"] > 0)
        assert np.isfinite(vals["snr"]).sum() >= 2
    assert main(["vessels", "measure", str(tmp_path / "real"), "--out", str(tmp_path / "cnr.csv"),
                 "--workers", "1", "--snr-kind", "contrast"]) == 0
    cnr, lit = read_metrics_csv(tmp_path / "cnr.csv"), read_metrics_csv(tmp_path / "real.csv")
    assert cnr["snr_kind"] == ["contrast"] * 3 and lit["snr_kind"] == ["signal"] * 3
    np.testing.assert_array_equal(cnr["snr"], cnr["snr_contrast"])
    np.testing.assert_array_equal(cnr["snr_contrast"], lit["snr_contrast"])
    out = tmp_path / "cmp"
    assert main(["vessels", "compare", str(tmp_path / "real.csv"), str(tmp_path / "synth.csv"),
                 "--out", str(out), "--image-size", str(320 * 320)]) == 0
    md = (out / "comparison.md").read_text()
    assert "| vessel amount (px) |" in md and "Cohen's d" in md and "p (Welch)" in md
    with open(out / "comparison.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["name"] == "vessel amount (px)" and float(rows[0]["n_real"]) == 3
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "hist_vessel_pixels.png" in pngs and "box_vessel_pixels.png" in pngs
    for p in pngs:
        data = (out / p).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # a CSV measured as contrast against one measured as signal: `snr` is not compared, the per-kind rows are
    capsys.readouterr()
    assert main(["vessels", "compare", str(tmp_path / "cnr.csv"), str(tmp_path / "synth.csv"),
                 "--out", str(tmp_path / "mixed"), "--image-size", str(320 * 320)]) == 0
    assert "skipped zone-B SNR: measured as ['contrast'] (real) and ['signal']" in capsys.readouterr().err
    with open(tmp_path / "mixed" / "comparison.csv", newline="") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    assert "zone-B SNR" not in names and "zone-B CNR, |background - vessel| / SD" in names


def test_cli_train_seg_help_is_forwarded(capsys):
    from retina_fast.cli import main
    with pytest.raises(SystemExit) as e:
        main(["vessels", "train-seg", "--help"])
    assert e.value.code == 0
    assert "--epochs" in capsys.readouterr().out


def test_split_segments_at_junctions_and_prunes_spurs():
    from retina_fast.vessels.snr import split_segments
    sk = np.zeros((80, 80), bool)
    sk[40, 5:75] = True                      # a horizontal vessel ...
    sk[41:75, 40] = True                     # ... with a branch going down,
    sk[30:40, 20] = True                     # ... a 10 px side branch up (two junctions: five segments)
    sk[36:40, 60] = True                     # ... and a 4 px spur, pruned (the vessel is not cut there)
    labels, n = split_segments(sk, spur_px=6)
    assert n == 5
    assert labels[40, 60] == labels[40, 50] != 0 and labels[37, 60] == 0
    assert len({labels[40, 10], labels[40, 30], labels[40, 60], labels[60, 40], labels[33, 20]}) == 5
    assert labels[40, 40] == 0 and labels[40, 20] == 0          # junction pixels (and neighbours) removed
    # a diagonal staircase (Zhang-Suen leaves these) is not a junction
    st = np.zeros((20, 20), bool)
    for k in range(8):
        st[2 + k, 2 + k] = st[2 + k, 3 + k] = True
    assert split_segments(st, spur_px=0)[1] == 1
