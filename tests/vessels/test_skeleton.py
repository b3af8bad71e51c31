"""`retina_fast.vessels.skeletonize` must equal scikit-image's 2-D skeletonize pixel for pixel."""
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import skeletonize as sk_skeletonize

from retina_fast.data.phantom import make_fundus
from retina_fast.vessels import skeletonize
from retina_fast.vessels.skeleton import ZHANG_LUT, removable_bits


def _same(mask):
    ours = skeletonize(mask)
    ref = sk_skeletonize(np.asarray(mask).astype(bool))
    assert ours.dtype == bool and ours.shape == ref.shape
    diff = np.argwhere(ours != ref)
    assert diff.size == 0, f"{len(diff)} pixels differ, first at {diff[:3].tolist()}"


def _random_masks(seed, n):
    rng = np.random.default_rng(seed)
    for t in range(n):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        kind = t % 5
        if kind == 0:                                   # salt noise at a random density
            yield rng.random((h, w)) < rng.random()
        elif kind == 1:                                 # smooth random blobs, many touching the edges
            yield ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 4)) > 0.5
        elif kind == 2:                                 # thick dots
            yield ndi.binary_dilation(rng.random((h, w)) < 0.02, iterations=int(rng.integers(1, 6)))
        elif kind == 3:                                 # dense noise with holes
            yield rng.random((h, w)) < 0.75
        else:                                           # thick random lines
            m = np.zeros((h, w), bool)
            yy, xx = np.mgrid[:h, :w]
            for _ in range(int(rng.integers(1, 5))):
                p0, p1 = rng.uniform(-5, max(h, w) + 5, 2), rng.uniform(-5, max(h, w) + 5, 2)
                d = p1 - p0
                t_ = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
                m |= np.hypot(yy - p0[0] - t_ * d[0], xx - p0[1] - t_ * d[1]) <= rng.uniform(0.5, 8)
            yield m


@pytest.mark.parametrize("seed", range(4))
def test_identical_on_random_masks(seed):
    for mask in _random_masks(seed, 120):
        _same(mask)


def test_identical_on_exhaustive_3x3_and_4x4_patterns():
    # every 3 x 3 pattern and a large random sample of 4 x 4 ones, alone in the frame (edge-touching)
    for code in range(512):
        _same(((code >> np.arange(9)) & 1).reshape(3, 3).astype(bool))
    rng = np.random.default_rng(0)
    for code in rng.choice(1 << 16, 3000, replace=False):
        _same(((int(code) >> np.arange(16)) & 1).reshape(4, 4).astype(bool))


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (1, 1), (1, 7), (7, 1), (2, 2), (33, 1)])
def test_degenerate_shapes(shape):
    for fill in (False, True):
        _same(np.full(shape, fill))


def test_empty_and_full():
    _same(np.zeros((64, 80), bool))
    _same(np.ones((64, 80), bool))
    _same(np.ones((5, 300), bool))


def test_non_bool_input_is_nonzero_foreground():
    rng = np.random.default_rng(3)
    m = ndi.gaussian_filter(rng.random((60, 70)), 2) > 0.5
    as_u8 = m.astype(np.uint8) * 255
    as_f = m * rng.uniform(0.1, 3.0, m.shape)
    assert np.array_equal(skeletonize(as_u8), sk_skeletonize(m))
    assert np.array_equal(skeletonize(as_f), sk_skeletonize(m))


def _polyline_mask(rng, shape, width, n_lines):
    """Random-walk polylines dilated to `width` px: dense, thick vessel-like masks."""
    from skimage.draw import line
    h, w = shape
    centre = np.zeros(shape, bool)
    for _ in range(n_lines):
        p, ang = rng.uniform((0, 0), (h, w)), rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(2, 6))):
            ang += rng.normal(0, 0.6)
            q = p + rng.uniform(10, 60) * np.array([np.sin(ang), np.cos(ang)])
            rr, cc = line(int(p[0]), int(p[1]), int(q[0]), int(q[1]))
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            centre[rr[ok], cc[ok]] = True
            p = q
    return ndi.distance_transform_edt(~centre) <= (width - 1) / 2


@pytest.mark.parametrize("width", [3, 5, 9, 15, 20])
def test_identical_on_dense_thick_polyline_masks(width):
    # the benchmark's dense, thick case at small sizes: 1-90 % foreground, vessels merging into blobs
    rng = np.random.default_rng(width)
    for t in range(24):
        shape = (int(rng.integers(40, 160)), int(rng.integers(40, 200)))
        m = _polyline_mask(rng, shape, width, n_lines=int(rng.integers(2, 12)))
        _same(m)
        _same(m[::-1].T)  # other orientations meet the two sub-iterations' asymmetry differently


@pytest.mark.parametrize("seed", [0, 7])
def test_identical_on_phantom_vessel_masks(seed):
    _, truth = make_fundus(seed, size=(384, 512))
    _same(truth.vessel_mask)
    # cropped so that vessels run off every edge
    _same(truth.vessel_mask[100:300, 150:420])


def test_identical_on_full_size_phantom():
    _, truth = make_fundus(3, size=(1024, 1024))
    _same(truth.vessel_mask)


def test_removal_circuits_equal_the_lookup_table():
    # all 256 neighbour codes at once, one per bit lane of four words, for both sub-iterations: the
    # circuits must equal scikit-image's table lane by lane (no lane may leak into another)
    codes = np.arange(256).reshape(4, 64)
    planes = [np.array([int(sum(int((c >> d) & 1) << lane for lane, c in enumerate(row)))
                        for row in codes], np.uint64) for d in range(8)]
    for first, removable in ((True, (1, 3)), (False, (2, 3))):
        for k in range(4):
            got = int(removable_bits(*(p[k] for p in planes), first))
            want = sum(1 << lane for lane, c in enumerate(codes[k]) if ZHANG_LUT[c] in removable)
            assert got == want, (first, k, f"{got ^ want:064b}")


@pytest.mark.parametrize("width", [63, 64, 65, 127, 128, 129, 200])
def test_identical_across_word_boundaries(width):
    # the image is packed 64 columns to a word: structures crossing, touching and ending at word
    # boundaries and the right image edge, at widths around multiples of 64
    rng = np.random.default_rng(width)
    for t in range(6):
        m = _polyline_mask(rng, (int(rng.integers(30, 120)), width), int(rng.integers(3, 16)), n_lines=6)
        _same(m)
        _same(m.T)
        _same(~m)  # background-dominated complement: wide blobs that fill whole words
    stripes = np.zeros((40, width), bool)
    stripes[:, 60:70] = True
    stripes[:, max(0, width - 9):] = True
    _same(stripes)
    _same(stripes.T)


def test_input_not_modified_and_rejects_3d():
    m = np.ones((10, 12), bool)
    before = m.copy()
    skeletonize(m)
    assert np.array_equal(m, before)
    with pytest.raises(ValueError, match="mask"):
        skeletonize(np.ones((4, 4, 3), bool))
