"""Phantom fundus frames, DICOM writer and synthetic cohort: planted truth is recovered."""
import csv
import json
import os

import numpy as np
import pydicom
import pytest
from scipy.spatial import cKDTree

from retina_fast.data.cohort import TRUTH_COLUMNS, make_cohort
from retina_fast.data.dicom import write_dicom
from retina_fast.data.phantom import FundusTruth, VesselSegment, make_fundus

SMALL = (384, 512)
MEDIUM = (768, 1024)


@pytest.fixture(scope="module")
def full_frame():
    return make_fundus(7)


@pytest.fixture(scope="module")
def medium_clean():
    return make_fundus(11, size=MEDIUM, return_clean=True)


def _off_vessels(*truths, margin=1.5):
    """Pixels farther than width/2 + `margin` from every centreline (anti-aliased rims included)."""
    h, w = truths[0].size
    keep = np.ones(h * w, bool)
    grid = np.column_stack([a.ravel() for a in np.mgrid[0:h, 0:w]]).astype(float)
    for t in truths:
        # conservative: the widest vessel's half width around every centreline point
        pts = np.concatenate([s.points for s in t.segments])
        reach = max(s.width for s in t.segments) / 2 + margin
        d, _ = cKDTree(pts).query(grid, distance_upper_bound=reach)
        keep &= ~np.isfinite(d)
    return keep.reshape(h, w)


def _ring(shape, center, r0, r1):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    d = np.hypot(yy - center[0], xx - center[1])
    return (d >= r0) & (d < r1)


# ----------------------------------------------------------------------------------------------
# make_fundus


def test_deterministic_per_seed():
    a, ta = make_fundus(3, size=SMALL)
    b, tb = make_fundus(3, size=SMALL)
    c, _ = make_fundus(4, size=SMALL)
    assert np.array_equal(a, b)
    assert np.array_equal(ta.vessel_mask, tb.vessel_mask)
    assert len(ta.segments) == len(tb.segments)
    for s, u in zip(ta.segments, tb.segments):
        assert np.array_equal(s.points, u.points) and s.width == u.width and s.contrast == u.contrast
    assert ta.disc_center == tb.disc_center and ta.fovea_center == tb.fovea_center
    assert not np.array_equal(a, c)


def test_shapes_dtypes_and_tree_structure():
    img, t = make_fundus(5, size=SMALL, return_clean=True)
    assert img.shape == (*SMALL, 3) and img.dtype == np.uint8
    assert isinstance(t, FundusTruth) and t.size == SMALL and t.label == "normal"
    assert t.vessel_mask.shape == SMALL and t.vessel_mask.dtype == bool
    assert t.clean.shape == (*SMALL, 3) and t.clean.dtype == np.float32
    assert len(t.segments) > 30
    kinds = set()
    for i, s in enumerate(t.segments):
        assert isinstance(s, VesselSegment)
        assert s.points.dtype == np.float64 and s.points.ndim == 2 and s.points.shape[1] == 2
        step = np.hypot(*np.diff(s.points, axis=0).T)
        assert step.max() <= 1.5 and step.min() > 0.5          # sampled about every 1 px
        assert 0.0 < s.contrast < 1.0
        kinds.add(s.kind)
        assert -1 <= s.parent < i
        if s.parent >= 0:                                       # children start on the parent
            assert np.allclose(s.points[0], t.segments[s.parent].points[-1])
    assert kinds == {"artery", "vein"}
    # trunks leave the disc
    for s in t.segments:
        if s.parent == -1:
            assert np.hypot(*(s.points[0] - t.disc_center)) < t.disc_radius


def test_default_size_widths_and_frame_geometry(full_frame):
    img, t = full_frame
    h, w = 1536, 2048
    assert img.shape == (h, w, 3)
    widths = np.array([s.width for s in t.segments])
    assert widths.min() >= 3.0 - 1e-9 and widths.max() <= 20.0 and widths.max() > 12.0
    veins = [s.width for s in t.segments if s.parent == -1 and s.kind == "vein"]
    arteries = [s.width for s in t.segments if s.parent == -1 and s.kind == "artery"]
    assert max(veins) > max(arteries)
    # FOV: diameter a bit above the frame height, clipped top and bottom, inside left/right
    cy, cx = t.fov_center
    assert cy - t.fov_radius < 0 and cy + t.fov_radius > h - 1
    assert cx - t.fov_radius > 0 and cx + t.fov_radius < w - 1
    # disc ~0.35-0.45 FOV radius nasal of the centre, fovea temporal of the disc
    off = abs(t.disc_center[1] - cx) / t.fov_radius
    assert 0.3 < off < 0.5
    side = np.sign(t.disc_center[1] - cx)
    assert np.sign(t.disc_center[1] - t.fovea_center[1]) == side
    assert t.eye == ("R" if side > 0 else "L")
    dd = np.hypot(*(np.subtract(t.fovea_center, t.disc_center))) / (2 * t.disc_radius)
    assert 2.2 < dd < 2.8
    # plenty of vessel, like the 1e5-2e5 vessel pixels of real frames
    assert 1e5 < t.vessel_mask.sum() < 4e5


def test_widths_scale_with_size():
    _, big = make_fundus(9, size=MEDIUM)
    _, small = make_fundus(9, size=SMALL)
    wb = [s.width for s in big.segments if s.parent == -1]
    ws = [s.width for s in small.segments if s.parent == -1]
    assert np.allclose(np.array(ws) * 2.0, wb)
    assert small.disc_radius * 2 == pytest.approx(big.disc_radius, rel=1e-6)


def test_mask_and_centrelines_agree():
    _, t = make_fundus(12, size=SMALL)
    h, w = t.size
    pts, half = [], []
    for s in t.segments:
        pts.append(s.points)
        half.append(np.full(len(s.points), s.width / 2))
    pts, half = np.concatenate(pts), np.concatenate(half)
    # every in-frame centreline point is on the mask (its pixel centre is within width/2 when
    # width/2 >= sqrt(2)/2; thinner vessels may fall between pixel centres)
    r, c = np.rint(pts[:, 0]).astype(int), np.rint(pts[:, 1]).astype(int)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w) & (np.hypot(r - pts[:, 0], c - pts[:, 1]) <= half)
    assert inside.sum() > 1000
    assert t.vessel_mask[r[inside], c[inside]].all()
    # every mask pixel lies within width/2 + 1 of a centreline point of some segment
    tree = cKDTree(pts)
    yy, xx = np.nonzero(t.vessel_mask)
    q = np.column_stack([yy, xx]).astype(float)
    near = tree.query_ball_point(q, r=half.max() + 1.0)
    ok = np.array([any(np.hypot(*(pts[j] - p)) <= half[j] + 1.0 for j in js) for p, js in zip(q, near)])
    assert ok.all()
    # and pixels well inside a vessel are on the mask (inside the FOV)
    grid = np.column_stack([a.ravel() for a in np.mgrid[0:h, 0:w]]).astype(float)
    d, j = tree.query(grid, distance_upper_bound=half.max())
    hit = np.isfinite(d)
    deep = np.zeros(len(grid), bool)
    deep[hit] = d[hit] <= half[j[hit]] - 1.0
    fov = np.hypot(grid[:, 0] - t.fov_center[0], grid[:, 1] - t.fov_center[1]) < t.fov_radius - 2
    assert t.vessel_mask.ravel()[deep & fov].all()
    # centreline length: positive, and mask area ~ sum(length * width) (overlaps only reduce it)
    length = t.centerline_length()
    area = sum(np.hypot(*np.diff(s.points, axis=0).T).sum() * s.width for s in t.segments)
    assert 0.5 * area < t.vessel_mask.sum() < 1.2 * area
    assert 0 < length <= sum(np.hypot(*np.diff(s.points, axis=0).T).sum() for s in t.segments)


def test_green_is_background_times_one_minus_contrast():
    # flat background: no texture, no fall-off; compare centreline with just outside the vessel
    _, t = make_fundus(21, size=MEDIUM, texture=False, illumination=False, noise_sigma=0.0,
                       return_clean=True)
    g = t.clean[..., 1]
    dist_mask = ~t.vessel_mask
    errors = []
    for s in t.segments:
        if s.width < 4 or len(s.points) < 40:
            continue
        k = len(s.points) // 2
        p = s.points[k]
        tangent = s.points[k + 3] - s.points[k - 3]
        normal = np.array([-tangent[1], tangent[0]]) / np.hypot(*tangent)
        if (np.hypot(*(p - t.disc_center)) < 2.5 * t.disc_radius
                or np.hypot(*(p - t.fovea_center)) < 3.5 * t.disc_radius):
            continue
        outs = []
        for sign in (-1, 1):
            q = np.rint(p + sign * normal * (s.width / 2 + 3)).astype(int)
            if not (0 <= q[0] < t.size[0] and 0 <= q[1] < t.size[1]) or not dist_mask[q[0], q[1]]:
                break
            outs.append(g[q[0], q[1]])
        c = np.rint(p).astype(int)
        if len(outs) != 2 or abs(outs[0] - outs[1]) > 1.0:
            continue
        errors.append(g[c[0], c[1]] / np.mean(outs) - (1 - s.contrast))
    assert len(errors) >= 10
    # other vessels crossing a centreline can only darken it further
    assert np.median(np.abs(errors)) < 0.01


def test_disc_brighter_and_fovea_darker(medium_clean):
    _, t = medium_clean
    clean = t.clean
    shape = t.size
    lum = clean.sum(axis=2)
    no_vessel = ~t.vessel_mask
    disc = _ring(shape, t.disc_center, 0, 0.7 * t.disc_radius) & no_vessel
    around = _ring(shape, t.disc_center, 1.6 * t.disc_radius, 2.5 * t.disc_radius) & no_vessel
    assert lum[disc].mean() > 1.4 * lum[around].mean()
    assert np.hypot(*np.subtract(t.disc_center, t.fov_center)) + t.disc_radius < t.fov_radius
    dd = 2 * t.disc_radius
    fovea = _ring(shape, t.fovea_center, 0.03 * dd, 0.15 * dd) & no_vessel
    macula_edge = _ring(shape, t.fovea_center, 1.0 * dd, 1.4 * dd) & no_vessel
    assert clean[..., 1][fovea].mean() < 0.8 * clean[..., 1][macula_edge].mean()


def test_field_of_view_black_outside(medium_clean):
    img, t = medium_clean
    yy, xx = np.ogrid[: t.size[0], : t.size[1]]
    r = np.hypot(yy - t.fov_center[0], xx - t.fov_center[1])
    outside, inside = r > t.fov_radius + 2, r < t.fov_radius - 2
    assert outside.sum() > 0.1 * r.size
    assert np.all(t.clean[outside] == 0)
    assert img[outside].mean() < 2.0                   # only clipped sensor noise
    assert t.clean[inside].max(axis=1).min() > 20      # no black pixel inside the aperture
    # the FOV really is where the image says it is: column profile through the centre row
    row = int(round(t.fov_center[0]))
    bright = np.nonzero(img[row, :, 0] > 40)[0]
    assert abs(bright[0] - (t.fov_center[1] - t.fov_radius)) < 4
    assert abs(bright[-1] - (t.fov_center[1] + t.fov_radius)) < 4


def test_zoom_leaves_frame_left_and_right():
    img, t = make_fundus(2, size=SMALL, zoom=1.6)
    w = t.size[1]
    assert t.fov_center[1] - t.fov_radius < 0 and t.fov_center[1] + t.fov_radius > w
    row = int(round(t.fov_center[0]))
    assert img[row, 0, 0] > 40 and img[row, -1, 0] > 40
    _, t1 = make_fundus(2, size=SMALL)
    assert t.disc_radius > 1.4 * t1.disc_radius


def test_exposure_extremes():
    dark, t = make_fundus(4, size=SMALL, exposure=0.25)
    bright, _ = make_fundus(4, size=SMALL, exposure=3.2)
    normal, _ = make_fundus(4, size=SMALL)
    yy, xx = np.ogrid[: t.size[0], : t.size[1]]
    inside = np.hypot(yy - t.fov_center[0], xx - t.fov_center[1]) < t.fov_radius - 3
    assert dark[inside].max(axis=1).mean() < 65
    assert normal[inside].max(axis=1).mean() > 150
    assert (bright[inside][:, 0] == 255).mean() > 0.9
    assert bright[inside][:, 1].mean() > 180


def _tortuosity_near(truth, radius, window=30):
    """Mean arc/chord ratio over `window`-point stretches of centreline within `radius` of the fovea."""
    ratios = []
    for s in truth.segments:
        p = s.points
        near = np.hypot(p[:, 0] - truth.fovea_center[0], p[:, 1] - truth.fovea_center[1]) < radius
        for k in range(0, len(p) - window, window // 2):
            if near[k:k + window + 1].all():
                arc = np.hypot(*np.diff(p[k:k + window + 1], axis=0).T).sum()
                ratios.append(arc / np.hypot(*(p[k + window] - p[k])))
    return np.mean(ratios), len(ratios)


def test_erm_sheen_and_tortuosity_in_macula():
    for seed in (1, 2):
        # texture off: its nerve-fibre reflex follows the (ERM-displaced) vessels
        _, tn = make_fundus(seed, size=MEDIUM, return_clean=True, noise_sigma=0, texture=False)
        _, te = make_fundus(seed, size=MEDIUM, disease="erm", return_clean=True, noise_sigma=0, texture=False)
        assert tn.label == "normal" and te.label == "erm"
        assert tn.disc_center == te.disc_center and tn.fovea_center == te.fovea_center
        dd = 2 * tn.disc_radius
        bg = _off_vessels(tn, te)
        macula = _ring(tn.size, tn.fovea_center, 0.2 * dd, 1.0 * dd) & bg
        far = _ring(tn.size, tn.fovea_center, 3.5 * dd, 4.5 * dd) & bg
        gain = te.clean[..., 1][macula].mean() / tn.clean[..., 1][macula].mean()
        assert gain > 1.15                        # glossy sheen brightens the macula
        same = np.abs(te.clean[..., 1][far] - tn.clean[..., 1][far]) < 0.5     # and only there
        assert same.mean() > 0.97
        tort_n, n_n = _tortuosity_near(tn, 1.5 * dd)
        tort_e, n_e = _tortuosity_near(te, 1.5 * dd)
        assert n_n >= 5 and n_e >= 5
        assert tort_e > tort_n + 0.02
        far_n, _ = _tortuosity_near(tn, 10 * dd)
        assert tort_n < 1.02 and far_n < 1.02   # normal vessels: gently curving


def test_noise_sigma_matches():
    img, t = make_fundus(6, size=SMALL, texture=False, illumination=False, noise_sigma=5.0,
                         return_clean=True)
    ok = (t.clean > 20) & (t.clean < 235)
    diff = img.astype(np.float64)[ok] - t.clean[ok]
    expected = np.sqrt(5.0 ** 2 + 1 / 12)    # rounding to integers adds at most 1/12
    assert diff.std() == pytest.approx(expected, rel=0.03)
    assert abs(diff.mean()) < 0.05
    assert t.noise_sigma == 5.0
    img0, t0 = make_fundus(6, size=SMALL, texture=False, illumination=False, noise_sigma=0.0,
                           return_clean=True)
    assert np.array_equal(img0, np.clip(np.floor(t0.clean.astype(np.float64) + 0.5), 0, 255).astype(np.uint8))
    assert np.array_equal(t0.clean, t.clean)


def test_texture_and_illumination_switches():
    _, tf = make_fundus(8, size=SMALL, texture=False, illumination=False, noise_sigma=0, return_clean=True)
    _, tt = make_fundus(8, size=SMALL, noise_sigma=0, return_clean=True)
    # far from disc/macula, vessels excluded: flat background is constant, textured one is not
    dd = 2 * tf.disc_radius
    yy, xx = np.ogrid[: SMALL[0], : SMALL[1]]
    bg = (_off_vessels(tf, tt)
          & (np.hypot(yy - tf.disc_center[0], xx - tf.disc_center[1]) > 2 * dd)
          & (np.hypot(yy - tf.fovea_center[0], xx - tf.fovea_center[1]) > 2 * dd)
          & (np.hypot(yy - tf.fov_center[0], xx - tf.fov_center[1]) < tf.fov_radius - 3))
    assert bg.sum() > 5000
    assert np.ptp(tf.clean[..., 1][bg]) < 0.1
    assert tt.clean[..., 1][bg].std() > 2.0
    # fall-off: rim darker than centre
    rim = bg & (np.hypot(yy - tt.fov_center[0], xx - tt.fov_center[1]) > 0.85 * tt.fov_radius)
    mid = bg & (np.hypot(yy - tt.fov_center[0], xx - tt.fov_center[1]) < 0.5 * tt.fov_radius)
    assert tt.clean[..., 0][rim].mean() < 0.9 * tt.clean[..., 0][mid].mean()


@pytest.mark.parametrize("kwargs, exc", [
    ({"seed": "a"}, TypeError),
    ({"seed": 1, "disease": "amd"}, ValueError),
    ({"seed": 1, "size": (10, 10)}, ValueError),
    ({"seed": 1, "exposure": 0}, ValueError),
    ({"seed": 1, "noise_sigma": -1}, ValueError),
])
def test_bad_arguments(kwargs, exc):
    kwargs = dict(kwargs)
    seed = kwargs.pop("seed")
    with pytest.raises(exc, match=next(iter(kwargs), "seed")):
        make_fundus(seed, **kwargs)


# ----------------------------------------------------------------------------------------------
# write_dicom

PLANTED = {"patient_name": "Quackenbush^Hortensia", "patient_id": "PIDX9912345", "birth_date": "19591231",
               "sex": "F", "age": 63, "study_date": "20230405", "institution": "Saint Nowhere Eye Hospital"}


@pytest.mark.parametrize("syntax, uid", [("explicit", "1.2.840.10008.1.2.1"),
                                         ("jpeg", "1.2.840.10008.1.2.4.50"),
                                         ("rle", "1.2.840.10008.1.2.5")])
def test_write_dicom_round_trip(tmp_path, syntax, uid):
    img, _ = make_fundus(1, size=(256, 320))
    path = tmp_path / f"x_{syntax}.dcm"
    out = write_dicom(path, img, transfer_syntax=syntax, private_text="Seen by Dr Zebulon Frobisher",
                      burned_in_annotation=True, study_uid="1.2.3.4.5.6", sop_uid="1.2.3.4.5.7",
                      extra={"InstitutionAddress": "99 Nowhere Street", "AccessionNumber": "ACC55501"},
                      **PLANTED)
    assert out == str(path)
    assert os.listdir(tmp_path) == [path.name]          # no temporary left behind
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == uid
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.5.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "1.2.3.4.5.7"
    assert ds.PhotometricInterpretation == ("YBR_FULL_422" if syntax == "jpeg" else "RGB")
    assert ds.PatientAge == "063Y" and ds.PatientSex == "F" and ds.BurnedInAnnotation == "YES"
    assert ds.PatientBirthDate == "19591231" and ds.StudyDate == "20230405"
    assert ds.private_block(0x0029, "RETINA_FAST_TEST")[0x01].value == "Seen by Dr Zebulon Frobisher"
    px = ds.pixel_array
    assert px.shape == img.shape and px.dtype == np.uint8
    if syntax == "jpeg":
        assert np.abs(px.astype(float) - img).mean() < 3.0
    else:
        assert np.array_equal(px, img)
    raw = path.read_bytes()
    for text in ("Quackenbush^Hortensia", "PIDX9912345", "19591231", "20230405", "Saint Nowhere Eye Hospital",
                 "99 Nowhere Street", "ACC55501", "1.2.3.4.5.6", "Zebulon Frobisher"):
        assert text.encode() in raw


def test_write_dicom_grayscale_and_header_only(tmp_path):
    img, _ = make_fundus(1, size=(128, 160))
    write_dicom(tmp_path / "g.dcm", img[..., 1], **PLANTED)
    ds = pydicom.dcmread(tmp_path / "g.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
    assert np.abs(ds.pixel_array.astype(float) - img[..., 1]).mean() < 3.0
    write_dicom(tmp_path / "n.dcm", None, transfer_syntax="explicit", **PLANTED)
    ds = pydicom.dcmread(tmp_path / "n.dcm")
    assert "PixelData" not in ds and ds.PatientID == "PIDX9912345"


def test_write_dicom_bad_input(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_dicom(tmp_path / "a.dcm", img, transfer_syntax="jpeg2000", **PLANTED)
    with pytest.raises(ValueError, match="image"):
        write_dicom(tmp_path / "a.dcm", img.astype(np.float32), **PLANTED)
    with pytest.raises(ValueError, match="birth_date"):
        write_dicom(tmp_path / "a.dcm", img, **{**PLANTED, "birth_date": "1959-12-31"})
    with pytest.raises(ValueError, match="extra"):
        write_dicom(tmp_path / "a.dcm", img, extra={"PatientNickname": "x"}, **PLANTED)
    with pytest.raises(ValueError, match="sex"):
        write_dicom(tmp_path / "a.dcm", img, **{**PLANTED, "sex": "X"})
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# make_cohort


def test_make_cohort(tmp_path):
    try:
        from retina_fast.data.reasons import REASONS
    except ImportError:  # the ingest's vocabulary (contract section 3)
        REASONS = ("unreadable", "no_pixel_data", "not_colour", "burned_in_annotation", "zoomed",
                   "saturated", "dark", "disc_not_found", "second_visit")
    records = make_cohort(tmp_path / "a", 3, seed=5, size=SMALL, erm_fraction=0.34, workers=1)
    out = tmp_path / "a"
    with open(out / "cohort_truth.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == TRUTH_COLUMNS
        rows = list(reader)
    assert len(rows) == len(records)
    files = sorted(p for p in os.listdir(out) if p.endswith(".dcm"))
    assert files == sorted(r["file"] for r in rows)
    expected = [r["expected"] for r in rows]
    assert all(e == "accepted" or e in REASONS for e in expected)
    assert expected.count("accepted") == 3
    for reason in ("unreadable", "no_pixel_data", "not_colour", "burned_in_annotation", "zoomed", "dark",
                   "saturated"):
        assert reason in expected
    assert sum(r["label"] == "erm" for r in rows if r["expected"] in ("accepted", "second_visit")) >= 1
    planted = json.loads((out / "planted_identifiers.json").read_text())
    blob = b"".join((out / f).read_bytes() for f in files)
    by_id = {}
    for r in rows:
        assert 30 <= int(r["age"]) <= 85 and r["sex"] in ("M", "F")
        by_id.setdefault(r["patient_id"], []).append(r)
        path = out / r["file"]
        if r["expected"] in ("accepted", "second_visit", "zoomed", "dark", "saturated"):
            ds = pydicom.dcmread(path)
            assert ds.PatientID == r["patient_id"] and int(ds.PatientAge[:3]) == int(r["age"])
            assert ds.Laterality == ("R" if float(r["disc_col"]) > float(r["fov_col"]) else "L")
            px = ds.pixel_array
            assert px.shape == (*SMALL, 3)
            yy, xx = np.ogrid[: SMALL[0], : SMALL[1]]
            disc_r = 0.5 * float(r["disc_radius"])
            disc = np.hypot(yy - float(r["disc_row"]), xx - float(r["disc_col"])) < disc_r
            if r["expected"] != "saturated":   # the planted disc is where the pixels are brightest
                lum = px.astype(float).sum(axis=2)
                assert lum[disc].mean() > np.percentile(lum, 97)
        for p in (r["patient_id"],):
            assert p in planted
    # second visits: same patient, later study date, expected 'second_visit'
    for rs in by_id.values():
        if len(rs) > 1:
            rs.sort(key=lambda r: int(r["visit"]))
            assert [r["expected"] for r in rs] == ["accepted", "second_visit"]
            d1 = pydicom.dcmread(out / rs[0]["file"]).StudyDate
            d2 = pydicom.dcmread(out / rs[1]["file"]).StudyDate
            assert d2 > d1
    # every planted identifier is in some file (truncated/text files may hide a few)
    found = sum(p.encode() in blob for p in planted)
    assert found >= 0.9 * len(planted)
    # the same seed gives the same cohort, whether rendered in one process or two
    again = make_cohort(tmp_path / "b", 3, seed=5, size=SMALL, erm_fraction=0.34, workers=2)
    assert again == records
    for f in files:
        assert (tmp_path / "b" / f).read_bytes() == (out / f).read_bytes()


def test_make_cohort_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_patients"):
        make_cohort(tmp_path, 0)
    with pytest.raises(ValueError, match="erm_fraction"):
        make_cohort(tmp_path, 2, erm_fraction=1.5)
    with pytest.raises(ValueError, match="transfer_syntax"):
        make_cohort(tmp_path, 2, transfer_syntax="jpeg2000")
    # counts are integers: 2.5 patients or workers is refused, not truncated
    with pytest.raises(TypeError, match="n_patients must be an integer"):
        make_cohort(tmp_path, 2.5)
    with pytest.raises(TypeError, match="workers must be None or an integer"):
        make_cohort(tmp_path, 2, workers=1.5)
    with pytest.raises(ValueError, match="second_visit_fraction"):
        make_cohort(tmp_path, 2, second_visit_fraction=float("nan"))
    assert os.listdir(tmp_path) == []


def test_trees_partition_segments_and_their_masks_rebuild_the_vessel_mask():
    _, truth = make_fundus(2, size=(384, 512))
    trees = truth.trees()
    assert sorted(i for t in trees for i in t) == list(range(len(truth.segments)))
    for t in trees:
        assert truth.segments[t[0]].parent == -1
        assert all(truth.segments[i].parent in t for i in t[1:])
    union = np.zeros_like(truth.vessel_mask)
    for t in trees:
        union |= truth.segment_mask(t)
    assert np.array_equal(union, truth.vessel_mask)
    assert truth.centerline_length() == pytest.approx(sum(truth.centerline_length(t) for t in trees))
