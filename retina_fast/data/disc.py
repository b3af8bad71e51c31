"""Optic-disc detection: a classical detector (brightness + vessel convergence) behind a plug-in interface.

A detector is any callable ``detector(image, fov) -> DiscResult`` (the `DiscDetector` protocol);
`detect_disc` runs a built-in one by name (`DETECTORS`) or any such callable, so a learned detector plugs
in without touching the ingest.

The classical detector works on a box-downsampled copy on which the field of view (FOV) is about
`ClassicalDiscDetector.work_diameter` px across, with the disc radius prior r0 = 0.13 x FOV radius,
inside the FOV circle less any black in it (the padding of a prepared image):

1. vessel removal: a grey closing (flat square, a little wider than the widest vessel) of the luminance
   0.5 R + G gives a vessel-free brightness map; the closing minus the luminance (a black top-hat) is
   a cheap vessel-likeness;
2. brightness term: the vessel-free luminance smoothed at the disc's scale minus its surround
   (a difference of box-smoothed maps, each normalised by the smoothed FOV mask so its edge adds
   nothing), on a 2x coarser grid;
3. vessel term: vessel-likeness density in a disc-sized window -- the large vessels are thick and
   converge on the disc;
4. both terms as robust z-scores (median / 1.4826 MAD inside the FOV), summed; the maximum is the disc;
5. the centre is refined on the vessel-free brightness alone near the peak (weighted centroid of its
   upper 60 %: the whole disc, not just its brighter, off-centre cup), and the radius from the radial profile of the vessel-free luminance: where it has
   fallen 65 % of the way from the disc's centre to its surround (2.2-3 prior radii out).

`score` is the summed z-score at the peak; `found` is ``score >= SCORE_THRESHOLD`` (see there).
"""
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from .fov import FieldOfView, as_pil, brightest_channel, find_fov

# Measured: a phantom whose disc is painted over with the surrounding colour peaks at a summed z-score
# of 2.7-4.1 (its vessels still converge there); a featureless noisy FOV under 1; phantom discs (200
# at 384 x 512) score 8.7 and more, skimage's real retina photograph 9.7.
SCORE_THRESHOLD = 6.0
# Floors of the robust spreads (MAD x 1.4826) of the two terms, in their units (luminance 0.5 R + G
# grey levels; black top-hat grey levels). Fundus photographs and phantoms have spreads of about 6-7 and
# 2-3; the floors keep a featureless, noise-only FOV (spread ~0.1) from turning noise into huge z-scores.
BRIGHT_SPREAD_FLOOR = 2.0
VESSEL_SPREAD_FLOOR = 0.75
# Disc radius prior, as a fraction of the FOV radius (the disc is about 0.06-0.07 of the FOV diameter
# in 45-degree photographs and in the phantom).
DISC_RADIUS_PRIOR = 0.13


@dataclass(frozen=True)
class DiscResult:
    """An optic-disc detection, in (row, col) pixels of the image it was run on.

    Attributes
    ----------
    found : bool
        Whether a disc-like peak was found (score over the detector's threshold).
    center : (float, float)
        Disc centre (row, col), px. The best candidate even when `found` is False.
    radius : float
        Disc radius, px.
    score : float
        Detector confidence; for the classical detector the summed robust z-score at the peak.
    """

    found: bool
    center: tuple
    radius: float
    score: float


@runtime_checkable
class DiscDetector(Protocol):
    """Anything called as ``detector(image, fov) -> DiscResult``.

    `image` is an (H, W, 3) uint8 RGB array or an RGB PIL image, `fov` a `FieldOfView` in its pixels.
    """

    def __call__(self, image, fov: FieldOfView) -> DiscResult: ...


def _box(a, size):
    size = max(1, round(size))
    return ndi.uniform_filter(a, size, mode="nearest")


def _smooth_in(a, weight, size):
    """Twice box-smoothed `a` (about Gaussian, sigma ~ 0.4 size) averaged over `weight` only."""
    num = _box(_box(a * weight, size), size)
    den = _box(_box(weight, size), size)
    return num / np.maximum(den, 1e-3)


def _robust_z(a, mask, floor=0.0):
    v = a[mask][::2]  # every second pixel: the statistics barely move, the sort halves
    med = np.median(v)
    mad = np.median(np.abs(v - med)) * 1.4826
    return (a - med) / max(mad, floor, 1e-6)


@dataclass(frozen=True)
class ClassicalDiscDetector:
    """Brightness + vessel-convergence optic-disc detector (no training). See the module docstring.

    Parameters
    ----------
    work_diameter : int
        FOV diameter (px) of the downsampled working copy.
    threshold : float
        Minimum score for `found`.
    vessel_weight : float
        Weight of the vessel term against the brightness term.
    """

    work_diameter: int = 256
    threshold: float = SCORE_THRESHOLD
    vessel_weight: float = 1.0

    def __call__(self, image, fov):
        pil = as_pil(image)
        factor = max(1, round(2 * fov.radius / self.work_diameter))
        small = np.asarray(pil.reduce(factor) if factor > 1 else pil).astype(np.float32)
        off = (factor - 1) / 2.0
        fov_s = FieldOfView(((fov.center[0] - off) / factor, (fov.center[1] - off) / factor),
                            fov.radius / factor)
        r0 = DISC_RADIUS_PRIOR * fov_s.radius
        h, w = small.shape[:2]
        # the FOV circle less any black inside it (the padding of a prepared image whose circle the
        # camera frame clipped), eroded so edge pixels blended with black are left out
        lit = brightest_channel(small) > max(10.0, 0.15 * float(np.percentile(small[..., 0], 99)))
        inside = fov_s.mask((h, w), erode=2.0) & ndi.binary_erosion(lit, iterations=2)
        if inside.sum() < 100:
            raise ValueError("field of view has under 100 pixels at working scale")

        lum = 0.5 * small[..., 0] + small[..., 1]
        # fill the surround with the FOV's median so the filters see no black edge
        lum = np.where(inside, lum, np.float32(np.median(lum[inside][::3])))
        k = max(3, round(0.09 * fov_s.radius) | 1)  # a little wider than the widest vessel
        lum_closed = ndi.grey_closing(lum, size=(k, k))
        vessels = lum_closed - lum  # black top-hat: thick dark lines (vessels) light up

        # the disc-scale maps are smooth: compute them on a 2x coarser grid
        hc, wc = h // 2 * 2, w // 2 * 2

        def coarse(a):
            return a[:hc, :wc].reshape(hc // 2, 2, wc // 2, 2).mean(axis=(1, 3))

        weight_c = coarse(inside.astype(np.float32))
        in_c = weight_c > 0.99
        lum_c, ves_c = coarse(lum_closed), coarse(vessels)
        rc = r0 / 2
        bright = _smooth_in(lum_c, weight_c, 1.2 * rc) - _smooth_in(lum_c, weight_c, 4 * rc)
        density = _smooth_in(ves_c, weight_c, 2 * rc)
        total = _robust_z(bright, in_c, BRIGHT_SPREAD_FLOOR) + \
            self.vessel_weight * _robust_z(density, in_c, VESSEL_SPREAD_FLOOR)
        fov_c = FieldOfView(((fov_s.center[0] - 0.5) / 2, (fov_s.center[1] - 0.5) / 2), fov_s.radius / 2)
        core = fov_c.mask(total.shape, erode=0.5 * rc + 1) & in_c
        total[~core] = -np.inf
        pc = np.unravel_index(np.argmax(total), total.shape)
        score = float(total[pc])
        peak = (2 * pc[0] + 0.5, 2 * pc[1] + 0.5)

        # refine on vessel-free brightness near the peak, at working scale, in a window around it
        m = int(np.ceil(2.5 * r0))
        r_lo, r_hi = max(0, int(peak[0]) - m), min(h, int(peak[0]) + m + 1)
        c_lo, c_hi = max(0, int(peak[1]) - m), min(w, int(peak[1]) + m + 1)
        sub = lum_closed[r_lo:r_hi, c_lo:c_hi]
        sub_in = inside[r_lo:r_hi, c_lo:c_hi]
        fine = _smooth_in(sub, sub_in.astype(np.float32), 0.5 * r0)
        rr, cc = np.mgrid[r_lo:r_hi, c_lo:c_hi]
        win = (np.hypot(rr - peak[0], cc - peak[1]) <= 1.5 * r0) & sub_in
        if not win.any():
            return DiscResult(found=False, center=(peak[0] * factor + off, peak[1] * factor + off),
                              radius=float(r0 * factor), score=score)
        top, floor = fine[win].max(), np.percentile(fine[win], 20)
        sel = win & (fine >= floor + 0.4 * (top - floor))
        wts = (fine - floor)[sel]
        cy = float(np.sum(rr[sel] * wts) / np.sum(wts))
        cx = float(np.sum(cc[sel] * wts) / np.sum(wts))

        radius_s = self._radius(sub, sub_in, (cy - r_lo, cx - c_lo), r0)
        center = (cy * factor + off, cx * factor + off)
        return DiscResult(found=score >= self.threshold, center=center,
                          radius=float(radius_s * factor), score=score)

    @staticmethod
    def _radius(lum, inside, center, r0):
        """Radius where the radial mean profile has fallen 65 % of the way from the disc to its surround."""
        h, w = lum.shape
        rr = np.hypot(np.arange(h)[:, None] - center[0], np.arange(w)[None, :] - center[1])
        sel = inside & (rr < 3 * r0)
        bins = np.minimum((rr[sel] / (0.1 * r0)).astype(int), 29)
        prof = np.bincount(bins, weights=lum[sel], minlength=30) / np.maximum(
            np.bincount(bins, minlength=30), 1)
        ring = prof[22:30][np.bincount(bins, minlength=30)[22:30] > 0]
        if ring.size == 0:
            return r0
        inner, outer = prof[:3].mean(), ring.mean()
        half = outer + 0.35 * (inner - outer)
        below = np.nonzero(prof[3:] < half)[0]
        if below.size == 0 or inner <= outer:
            return r0
        i = below[0] + 3
        # linear interpolation of the crossing between bins i-1 and i (bin centres at (j + 0.5) 0.1 r0)
        a, b = prof[i - 1], prof[i]
        t = (a - half) / max(a - b, 1e-6)
        r = (i - 0.5 + t) * 0.1 * r0
        return float(np.clip(r, 0.5 * r0, 2.0 * r0))


DETECTORS = {"classical": ClassicalDiscDetector}


def detect_disc(image, fov=None, detector="classical"):
    """Detect the optic disc of a fundus photograph.

    Parameters
    ----------
    image : (H, W, 3) uint8 RGB array or RGB PIL.Image
        A raw frame or a prepared (cropped, resized) image.
    fov : FieldOfView, optional
        Its field of view in `image` pixels; found with `find_fov` when None.
    detector : str or DiscDetector
        A name in `DETECTORS` ('classical') or any callable ``detector(image, fov) -> DiscResult``.

    Returns
    -------
    DiscResult
        Centre (row, col) and radius in `image` pixels, score, and `found`.
    """
    if isinstance(detector, str):
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {sorted(DETECTORS)} or a callable, got {detector!r}")
        detector = DETECTORS[detector]()
    elif not callable(detector):
        raise TypeError(f"detector must be a name or a callable, got {type(detector).__name__}")
    if fov is None:
        fov = find_fov(image)
    elif not isinstance(fov, FieldOfView):
        raise TypeError(f"fov must be a FieldOfView, got {type(fov).__name__}")
    result = detector(image, fov)
    if not isinstance(result, DiscResult):
        raise TypeError(f"detector returned {type(result).__name__}, expected DiscResult")
    return result
