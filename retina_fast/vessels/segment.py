"""Retinal vessel segmentation: a training-free multi-scale Hessian vesselness, or a trained FPN.

`segment(image)` returns a `SegmentationResult` with a vessel probability map (float32, H x W, in
[0, 1]) and a boolean vessel mask, both in the pixel grid of the input image ((row, col) pixels).

Method 'hessian' (default, no weights, works offline)
----------------------------------------------------
Vessels are dark tubes on the brighter retina in the green channel. The green channel is divided by
its local background (a wide Gaussian mean over the field of view, FOV), so that a vessel reads as its
fractional contrast whatever the illumination; outside the (slightly eroded) FOV the normalised image is
set to exactly 0, its background level, so that the bright-to-black rim is not a dark valley. At each
scale sigma the Hessian of the Gaussian-smoothed image is computed, its eigenvalues l_small <= l_big
found in closed form, and the line response is

    R_sigma = sigma**2 * l_big * exp(-(l_small / l_big)**2 / (2 * beta**2))     where l_small + l_big > 0

(zero elsewhere): `sigma**2 * l_big` is the scale-normalised curvature across the vessel, and the
exponential (Frangi's blob ratio) suppresses round dark blobs (fovea, haemorrhages) and saddles. For a
bar of width w and fractional contrast C the response peaks at sigma = w / 2 with
R = 0.48 C at every width (about 0.4 C as sampled here), so R is in contrast units. The vesselness is
the maximum over scales, and

    prob = 1 - exp(-R**2 / (2 * c**2)),     c = `contrast` (default 0.03: R = c for C ~ 7 %),

Frangi's structureness term. Scales are computed on a Gaussian pyramid (each octave smoothed to
sigma >= 1 px and decimated by 2), so that every scale is a short filter on an image 1, 1/4 or 1/16 the
size; the coarse responses are linearly interpolated back.

Default scales: `DEFAULT_SIGMAS` (px at a short side of 1024 px, vessel widths about 2-13 px) times
min(H, W) / 1024, i.e. sigma 1-5.7 px at 1024 x 1024 and 1.5-8.5 px at 1536 x 2048.

Mask: hysteresis on prob (seeds over `threshold`; grown over pixels
above threshold / 2; components smaller than (3 sigma_min)^2 px dropped), then thinned by a half-maximum
rule (a pixel's R must be at least half the largest R within about the widest scale's radius, so the
mask edge sits at the vessel wall whatever the contrast: for a bar of width w the half-maximum width of
R is about w), plus the skeleton of the hysteresis mask, which keeps branches connected where the
half-maximum rule would cut them off at a larger vessel.

Automatic threshold (threshold=None): prob > 0.5 (R > 1.18 c = 0.035, a vessel of about 9 % contrast),
raised on noisy images to R > 4.5 x the median R over the FOV (most FOV pixels are background, so the
median response gauges the noise; on clean photos and phantoms with noise up to ~3 grey levels the
0.5 rule applies). The threshold used is returned in `SegmentationResult.threshold`.

Method 'fpn'
------------
A Feature Pyramid Network trained with `retina_fast.vessels.fpn.train_seg`; `checkpoint` is a local
path. See `retina_fast.vessels.fpn`.

Field of view
-------------
`fov_mask=None` estimates it (`retina_fast.vessels.image.estimate_fov_mask`): pixels whose red channel
(the image itself for 2-D input) exceeds 15 % of its 99th percentile (at least 8 grey levels on a 0-255
scale), holes filled, largest component kept. Both prob and mask are 0 outside the FOV. The pixel AUC
of a result against a truth mask is `retina_fast.vessels.auc.pixel_auc`.

Device
------
device='cpu' runs numpy/scipy; 'cuda' runs the same code with cupy / cupyx.scipy.ndimage (for
'hessian') or torch on CUDA (for 'fpn'); 'auto' or None picks CUDA when it is usable.
"""
from dataclasses import dataclass
import math

import numpy as np
from scipy import ndimage as ndi

from .image import check_fov_mask, check_image, estimate_fov_mask, image_channel
from .skeleton import skeletonize  # scikit-image's 2-D skeleton, identical output, faster

METHODS = ("hessian", "fpn")
# Scales (px) at a short side of 1024 px; the octave ratio sqrt(2) keeps the response within ~6 % of its
# peak between scales.
DEFAULT_SIGMAS = (1.0, 1.41, 2.0, 2.83, 4.0, 5.66)
# Frangi's beta: the blob ratio l_small / l_big at which the response is damped by exp(-1/2).
BETA = 0.5
# Fractional-contrast scale of the prob map (see module docstring).
DEFAULT_CONTRAST = 0.03
# Default threshold on prob: for 'hessian', R > 1.18 c, a vessel of about 9 % contrast.
DEFAULT_THRESHOLD = 0.5
# Automatic threshold: R must also exceed NOISE_FACTOR x the FOV's median R (a noise gauge).
NOISE_FACTOR = 4.5
# Half-maximum rule window: (2 * ceil(HALF_MAX_WINDOW * largest sigma) + 1) px square.
HALF_MAX_WINDOW = 1.25
# Components smaller than (MIN_SIZE_FACTOR * smallest sigma)^2 px are dropped from the mask.
MIN_SIZE_FACTOR = 3.0
# Background normalisation: Gaussian sigma of the local mean, in units of the largest scale.
BACKGROUND_SIGMA_FACTOR = 5.0
# The FOV used to estimate the background and to take pixel values from is the given FOV eroded by
# this many times sigma_min px: its rim pixels are darkened by vignetting and the camera's edge blur.
RIM_EROSION_FACTOR = 3.0
GAUSS_TRUNCATE = 3.0


@dataclass(frozen=True)
class SegmentationResult:
    """Vessel segmentation of one image.

    Attributes
    ----------
    prob : (H, W) float32 array
        Vessel probability (or vesselness mapped to [0, 1] for 'hessian'); 0 outside the FOV.
    mask : (H, W) bool array
        Vessel pixels.
    fov_mask : (H, W) bool array or None
        Field of view used.
    threshold : float or None
        Threshold applied to `prob` to make `mask` (the high one for hysteresis).
    """

    prob: np.ndarray
    mask: np.ndarray
    fov_mask: np.ndarray = None
    threshold: float = None


# -------------------------------------------------------------------------------- array modules


def _cupy():
    """The cupy module when a CUDA device is usable, else None."""
    try:
        import cupy
        if cupy.cuda.is_available():
            return cupy
    except Exception:  # not installed, no driver, no device
        pass
    return None


def _array_modules(device):
    """(xp, ndimage) for 'cpu' / 'cuda' / 'auto' / None."""
    if device is None or device == "auto":
        cp = _cupy()
        device = "cuda" if cp is not None else "cpu"
    if device == "cpu":
        return np, ndi
    if isinstance(device, str) and device.startswith("cuda"):
        cp = _cupy()
        if cp is None:
            raise RuntimeError(f"device={device!r} needs cupy with a usable CUDA GPU; none was found")
        import cupyx.scipy.ndimage as cndi
        return cp, cndi
    raise ValueError(f"device must be 'cpu', 'cuda', 'auto' or None, got {device!r}")


# ------------------------------------------------------------------------------------ vesselness


def _upsample(a, shape, factor, offset, xp):
    """Linear interpolation of `a` onto a `factor` times finer grid of `shape`.

    Coarse sample i lies at fine position factor * i + offset (both axes); values beyond the ends
    are held constant.
    """
    out = a
    for axis in (0, 1):
        n, m = shape[axis], out.shape[axis]
        pos = (xp.arange(n, dtype=xp.float32) - offset) / factor
        pos = xp.clip(pos, 0, m - 1)
        i0 = xp.minimum(xp.floor(pos).astype(xp.int32), m - 2) if m > 1 else xp.zeros(n, xp.int32)
        w = (pos - i0.astype(xp.float32)) if m > 1 else xp.zeros(n, xp.float32)
        lo = xp.take(out, i0, axis=axis)
        hi = xp.take(out, xp.minimum(i0 + 1, m - 1), axis=axis)
        w = w[:, None] if axis == 0 else w[None, :]
        out = lo + (hi - lo) * w
    return out.astype(xp.float32, copy=False)


def _block_mean(a, k, xp):
    """Mean over k x k blocks (edge-padded to a multiple of k); block i is centred at k*i + (k-1)/2."""
    h, w = a.shape
    ph, pw = -h % k, -w % k
    if ph or pw:
        a = xp.pad(a, ((0, ph), (0, pw)), mode="edge")
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).mean(axis=(1, 3))


def _normalised_green(green, fov, sigma_bg, erode_px, xp, ndx):
    """Green divided by its local FOV background, minus 1 (vessels < 0); exactly 0 outside the FOV.

    The background is a normalised convolution (mean of FOV pixels only) computed on a block-averaged
    copy, so its cost does not grow with sigma_bg.
    """
    k = max(1, int(2 ** math.floor(math.log2(max(sigma_bg / 4.0, 1.0)))))
    core = fov
    if erode_px >= 1:
        # erosion as a threshold on a blurred mask: cheap at any radius
        core = ndx.gaussian_filter(fov.astype(xp.float32), erode_px / 2.0, truncate=GAUSS_TRUNCATE) > 0.98
        if not bool(core.any()):
            core = fov
    cf = core.astype(xp.float32)
    num = ndx.gaussian_filter(_block_mean(green * cf, k, xp), sigma_bg / k, mode="nearest")
    den = ndx.gaussian_filter(_block_mean(cf, k, xp), sigma_bg / k, mode="nearest")
    bg = num / xp.maximum(den, 1e-6)
    # blocks with no FOV pixel near them: fall back to the FOV mean
    fallback = xp.float32(float((green * cf).sum()) / max(float(cf.sum()), 1.0))
    bg = xp.where(den > 1e-3, bg, fallback)
    bg = _upsample(bg.astype(xp.float32), green.shape, k, (k - 1) / 2.0, xp)
    bg = xp.maximum(bg, xp.float32(1.0))  # dark frames: avoid dividing by ~0
    return xp.where(core, green / bg - xp.float32(1.0), xp.float32(0.0)).astype(xp.float32), core


def _line_response(s, sigma, xp):
    """sigma^2-normalised dark-line response of the smoothed image `s` at scale `sigma` (px)."""
    # second differences of the Gaussian-smoothed image: with sigma >= 1 px they match the Gaussian
    # derivatives to a few percent, at a fraction of the cost of three more Gaussian filters
    p = xp.pad(s, 1, mode="edge")
    c = p[1:-1, 1:-1]
    hrr = p[2:, 1:-1] + p[:-2, 1:-1] - 2 * c
    hcc = p[1:-1, 2:] + p[1:-1, :-2] - 2 * c
    hrc = (p[2:, 2:] + p[:-2, :-2] - p[2:, :-2] - p[:-2, 2:]) * xp.float32(0.25)
    m = (hrr + hcc) * xp.float32(0.5)
    d = xp.sqrt(((hrr - hcc) * xp.float32(0.5)) ** 2 + hrc * hrc)
    big = m + d
    small = m - d
    # m > 0: the dominant eigenvalue is the positive one (a dark valley, not a bright ridge)
    ratio = small / xp.where(big > 0, big, xp.float32(1.0))
    r = xp.float32(sigma * sigma) * big * xp.exp(ratio * ratio * xp.float32(-0.5 / BETA ** 2))
    return xp.where(m > 0, r, xp.float32(0.0))


def vesselness(green, fov_mask, sigmas, *, xp=np, ndx=ndi):
    """Multi-scale dark-line response R (fractional-contrast units) of a 2-D image.

    Parameters
    ----------
    green : (H, W) float32 array (numpy or cupy, matching `xp`)
        Green channel, 0-255 scale.
    fov_mask : (H, W) bool array
    sigmas : sequence of float
        Scales in px (increasing).
    xp, ndx : modules
        numpy and scipy.ndimage, or cupy and cupyx.scipy.ndimage: the same code runs on both.

    Returns
    -------
    R : (H, W) float32 array, 0 outside the FOV
    """
    sigmas = sorted(float(s) for s in sigmas)
    if not sigmas or sigmas[0] <= 0:
        raise ValueError(f"sigmas must be positive, got {sigmas}")
    shape = green.shape
    norm, _ = _normalised_green(green, fov_mask, BACKGROUND_SIGMA_FACTOR * sigmas[-1],
                                RIM_EROSION_FACTOR * sigmas[0], xp, ndx)
    best = xp.zeros(shape, xp.float32)
    cur, cur_sigma, level = norm, 0.0, 0  # cur_sigma: blur of `cur`, in its own pixels
    for sigma in sigmas:
        # octave: the coarsest level at which the scale is still >= 1 px (at most 1/8 resolution)
        want = min(max(int(math.floor(math.log2(sigma))), 0), 3)
        while level < want and min(cur.shape) >= 32:
            if cur_sigma < 1.0:
                cur = ndx.gaussian_filter(cur, math.sqrt(1.0 - cur_sigma ** 2), truncate=GAUSS_TRUNCATE)
                cur_sigma = 1.0
            cur = cur[::2, ::2]
            cur_sigma /= 2.0
            level += 1
        s_level = sigma / 2 ** level
        if s_level > cur_sigma:
            cur = ndx.gaussian_filter(cur, math.sqrt(s_level ** 2 - cur_sigma ** 2), truncate=GAUSS_TRUNCATE)
            cur_sigma = s_level
        r = _line_response(cur, s_level, xp)
        if level:
            r = _upsample(r, shape, 2 ** level, 0.0, xp)
        best = xp.maximum(best, r)
    return xp.where(fov_mask, best, xp.float32(0.0))


def default_sigmas(shape):
    """`DEFAULT_SIGMAS` scaled to an image of `shape` (by min(H, W) / 1024)."""
    f = min(shape[:2]) / 1024.0
    return tuple(s * f for s in DEFAULT_SIGMAS)


# ------------------------------------------------------------------------------------- threshold


def threshold_mask(prob, fov_mask, threshold=0.5, *, min_size=0, within=None):
    """Vessel mask from `prob` by hysteresis thresholding.

    Pixels over `threshold` seed the mask; pixels over `threshold` / 2 are kept when connected
    (8-neighbourhood) to a seed; connected components under `min_size` px are dropped.

    Parameters
    ----------
    prob : (H, W) float array in [0, 1]
    fov_mask : (H, W) bool array
        Nothing outside it is kept.
    threshold : float in [0, 1]
    min_size : int
        Smallest component kept, px.
    within : (H, W) bool array, optional
        A further condition every mask pixel must meet.

    Returns
    -------
    (H, W) bool array
    """
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    low = (prob > threshold / 2) & fov_mask
    if within is not None:
        low &= within
    lab, n = ndi.label(low, structure=np.ones((3, 3), bool))
    if n == 0:
        return low
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[low & (prob > threshold)])] = True
    if min_size > 0:
        keep &= np.bincount(lab.ravel(), minlength=n + 1) >= min_size
    keep[0] = False
    return keep[lab]


# -------------------------------------------------------------------------------------- segment


def _segment_hessian(a, fov, threshold, sigmas, contrast, device):
    xp, ndx = _array_modules(device)
    if sigmas is None:
        sigmas = default_sigmas(a.shape)
    sigmas = sorted(float(s) for s in np.atleast_1d(sigmas))
    green = image_channel(a, 1)
    on_device = xp is not np
    g = xp.asarray(green) if on_device else green
    f = xp.asarray(fov) if on_device else fov
    r = vesselness(g, f, sigmas, xp=xp, ndx=ndx)
    prob = xp.float32(1.0) - xp.exp(r * r * xp.float32(-0.5 / contrast ** 2))
    if threshold is None:
        # most FOV pixels are background, so the median response measures the noise
        noise = float(xp.median(r[::4, ::4][f[::4, ::4]]))
        threshold = max(DEFAULT_THRESHOLD, 1.0 - math.exp(-0.5 * (NOISE_FACTOR * noise / contrast) ** 2))
    # half-maximum rule: a pixel belongs to a vessel only where its response is at least half the
    # strongest response within about one vessel radius (the widest scale), which puts the mask edge
    # at the vessel wall whatever the vessel's contrast
    size = 2 * int(math.ceil(HALF_MAX_WINDOW * sigmas[-1])) + 1
    ridge = r >= xp.float32(0.5) * ndx.maximum_filter(r, size=size)
    if on_device:
        prob, ridge = xp.asnumpy(prob), xp.asnumpy(ridge)
    prob = prob.astype(np.float32, copy=False)
    wide = threshold_mask(prob, fov, threshold, min_size=int(round((MIN_SIZE_FACTOR * sigmas[0]) ** 2)))
    # the half-maximum rule alone cuts small branches where they meet a big vessel (the big one's
    # response is within their window); the skeleton of the wide mask reconnects them, adding a
    # 1 px centreline only
    mask = (wide & ridge) | skeletonize(wide)
    return SegmentationResult(prob, mask, fov, float(threshold))


def segment(image, method="hessian", *, fov_mask=None, threshold=None, checkpoint=None, device=None,
            sigmas=None, contrast=DEFAULT_CONTRAST, tile=512):
    """Segment the retinal vessels of a fundus photograph.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB array, or (H, W) array
        Integer images are read on their dtype's range scaled to 0-255 by their maximum (uint8 as
        is); float images in [0, 1] or 0-255. 'hessian' uses the green channel (2-D: the image).
    method : {'hessian', 'fpn'}
    fov_mask : (H, W) bool array, optional
        Field of view; default `estimate_fov_mask(image)`.
    threshold : float in [0, 1], optional
        Threshold on `prob` (hysteresis: half of it for pixels connected to one over it). Default:
        0.5 for 'fpn'; for 'hessian' automatic, at least 0.5 (see the module docstring).
    checkpoint : str, path-like or `retina_fast.vessels.fpn.SegModel`
        'fpn' only: local path to a checkpoint written by `retina_fast.vessels.fpn.train_seg`, or a
        model from `fpn.load_model` (to segment many images without reloading it).
    device : {'cpu', 'cuda', 'auto', None}
        None or 'auto' use CUDA when usable (cupy for 'hessian', torch for 'fpn').
    sigmas : sequence of float, optional
        'hessian' scales in px; default `default_sigmas(image.shape)`.
    contrast : float
        'hessian': fractional-contrast scale c of the prob map.
    tile : int
        'fpn': inference tile size in px (a multiple of 32); images up to it run whole.

    Returns
    -------
    SegmentationResult
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a = check_image(image)
    fov = estimate_fov_mask(a) if fov_mask is None else check_fov_mask(fov_mask, a.shape[:2])
    if not fov.any():
        raise ValueError("no field of view found: the image is black (all pixels below 8 grey levels)")
    if method == "hessian":
        if checkpoint is not None:
            raise ValueError("checkpoint is only used with method='fpn'")
        if not contrast > 0:
            raise ValueError(f"contrast must be positive, got {contrast}")
        return _segment_hessian(a, fov, threshold, sigmas, float(contrast), device)
    if checkpoint is None:
        raise ValueError("method='fpn' needs checkpoint=PATH (a model trained with "
                         "`retina-fast vessels train-seg`); no weights are ever downloaded")
    from . import fpn
    prob = fpn.predict(a, checkpoint, device=device, fov_mask=fov, tile=tile)
    t = DEFAULT_THRESHOLD if threshold is None else threshold
    return SegmentationResult(prob, threshold_mask(prob, fov, t), fov, float(t))
