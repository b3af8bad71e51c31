"""Vessel amount: vessel pixel count and skeleton length, absolute and as fractions of the field of view."""
import math
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

from .skeleton import skeletonize

__all__ = ["VesselAmount", "vessel_amount", "skeleton_length", "check_mask"]

# Vossepoel & Smeulders (1982) corner-count weights: unbiased for straight digital lines of any
# orientation (error < 1 % on long lines), unlike the plain 1 / sqrt(2) chain code which overestimates
# lines at 22.5 degrees by 8 % (and random orientations by 5.5 % on average).
_W_EVEN, _W_ODD, _W_CORNER = 0.980, 1.406, -0.091


@dataclass(frozen=True)
class VesselAmount:
    """Vessel pixel count and skeleton length of one mask.

    Attributes
    ----------
    vessel_pixels : int
        Number of vessel pixels (inside the field of view when one was given).
    fov_pixels : int
        Number of field-of-view pixels (the whole image when no FOV mask was given).
    vessel_fraction : float
        vessel_pixels / fov_pixels.
    skeleton_pixels : int
        Number of skeleton pixels (inside the FOV).
    skeleton_length : float
        Skeleton length, px: the corner-count estimate (see `skeleton_length`).
    skeleton_chain_length : float
        Plain chain-code length, px: orthogonal steps 1, diagonal steps sqrt(2). Kept for reference;
        it overestimates oblique vessels by up to 8 %.
    skeleton_density : float
        skeleton_length / fov_pixels, px of centreline per px of FOV area (1/px).
    """

    vessel_pixels: int
    fov_pixels: int
    vessel_fraction: float
    skeleton_pixels: int
    skeleton_length: float
    skeleton_chain_length: float
    skeleton_density: float

    def as_dict(self):
        return asdict(self)


def check_mask(mask, name="vessel_mask", shape=None):
    """Return `mask` as a 2-D bool array; ValueError/TypeError naming `name` if it is not a binary mask.

    Accepts bool arrays and numeric arrays whose values are all 0 or 1 (a probability map or a 0/255
    image is rejected: threshold it first, so that the choice of threshold stays visible).
    """
    if mask is None:
        raise TypeError(f"{name} must be a 2-D binary array, got None")
    a = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D binary array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)} (the image's shape)")
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name} must be bool or numeric, got dtype {a.dtype}")
    if a.size and not np.all((a == 0) | (a == 1)):
        raise ValueError(f"{name} must be binary (bool or values 0/1); threshold it first "
                         f"(values range {np.nanmin(a)}..{np.nanmax(a)})")
    return a.astype(bool)


@njit(cache=True)
def _step_counts(p):
    # p: zero-padded uint8 skeleton. Graph edges are the 8-neighbour pairs, except a diagonal pair that is
    # already joined through a shared orthogonal neighbour (the redundant corner pixels Zhang-Suen leaves
    # on staircases), so that a staircase is walked once, not twice.
    h, w = p.shape
    n_even = 0
    n_odd = 0
    n_corner = 0
    for r in range(1, h - 1):
        for c in range(1, w - 1):
            if not p[r, c]:
                continue
            deg = 0
            a1 = 0
            b1 = 0
            a2 = 0
            b2 = 0
            for a in range(-1, 2):
                for b in range(-1, 2):
                    if (a == 0 and b == 0) or not p[r + a, c + b]:
                        continue
                    if a != 0 and b != 0:
                        if p[r + a, c] or p[r, c + b]:
                            continue
                        n_odd += 1
                    else:
                        n_even += 1
                    if deg == 0:
                        a1 = a
                        b1 = b
                    else:
                        a2 = a
                        b2 = b
                    deg += 1
            # a path pixel whose two steps are not collinear is a corner of the chain code
            if deg == 2 and not (a1 == -a2 and b1 == -b2):
                n_corner += 1
    return n_even // 2, n_odd // 2, n_corner


def skeleton_length(skeleton):
    """Length of a one-pixel-wide skeleton, px.

    Parameters
    ----------
    skeleton : (H, W) array_like of bool
        8-connected skeleton (e.g. from `skeletonize`).

    Returns
    -------
    length : float
        Corner-count estimate ``0.980 n_e + 1.406 n_o - 0.091 n_c`` (Vossepoel & Smeulders [1]_)
        where n_e / n_o are the orthogonal / diagonal 8-connected steps and n_c the pixels where the
        step direction changes. Within about 2 % of the true length for straight lines at any angle and
        for circular arcs, where the plain chain code (1, sqrt 2) is off by up to 8 %.
    chain_length : float
        The plain chain-code length ``n_e + sqrt(2) n_o``.

    Notes
    -----
    A diagonal step between two pixels that also share an orthogonal skeleton neighbour is not counted
    (the two orthogonal steps already join them).

    References
    ----------
    .. [1] A. M. Vossepoel and A. W. M. Smeulders, "Vector code probability and metrication error
           in the representation of straight lines of finite length", Computer Graphics and Image
           Processing 20(4), 347-364, 1982.
    """
    a = check_mask(skeleton, "skeleton")
    p = np.zeros((a.shape[0] + 2, a.shape[1] + 2), np.uint8)
    p[1:-1, 1:-1] = a
    n_even, n_odd, n_corner = _step_counts(p)
    length = _W_EVEN * n_even + _W_ODD * n_odd + _W_CORNER * n_corner
    return max(float(length), 0.0), float(n_even + math.sqrt(2.0) * n_odd)


def vessel_amount(mask, fov_mask=None, *, skeleton=None):
    """Vessel pixel count and skeleton length of a binary vessel mask.

    Parameters
    ----------
    mask : (H, W) array_like of bool or {0, 1}
        Vessel mask.
    fov_mask : (H, W) array_like of bool, optional
        Field of view. When given, only vessel and skeleton pixels inside it count and fractions are
        relative to its area; otherwise the whole image is the field of view.
    skeleton : (H, W) bool array, optional
        ``skeletonize(mask)`` when already computed (it is not recomputed; it must belong to `mask`).

    Returns
    -------
    VesselAmount
        Pixel counts, skeleton length (px) and their fractions of the field of view.

    Notes
    -----
    Kim et al. [1]_ compare the vessel amount (pixels, from skeletonised vessel maps) of real and
    synthesised images; this reports both the vessel pixel count and the skeleton's pixel count and
    length, the latter the corner-count estimate of Vossepoel & Smeulders [2]_.

    References
    ----------
    .. [1] M. Kim, Y. N. Kim, M. Jang, J. Hwang, H.-K. Kim, S. C. Yoon, Y. J. Kim and N. Kim,
           "Synthesizing realistic high-resolution retina image by style-based generative
           adversarial network and its utilization", Scientific Reports 12, 2022.
           https://doi.org/10.1038/s41598-022-20698-3
    .. [2] A. M. Vossepoel and A. W. M. Smeulders, "Vector code probability and metrication error
           in the representation of straight lines of finite length", Computer Graphics and Image
           Processing 20(4), 347-364, 1982.
    """
    m = check_mask(mask, "mask")
    if skeleton is None:
        skeleton = skeletonize(m)
    else:
        skeleton = check_mask(skeleton, "skeleton", m.shape)
    if fov_mask is not None:
        fov = check_mask(fov_mask, "fov_mask", m.shape)
        m = m & fov
        skeleton = skeleton & fov
        fov_pixels = int(np.count_nonzero(fov))
    else:
        fov_pixels = int(m.size)
    vessel_pixels = int(np.count_nonzero(m))
    length, chain = skeleton_length(skeleton)
    frac = vessel_pixels / fov_pixels if fov_pixels else float("nan")
    dens = length / fov_pixels if fov_pixels else float("nan")
    return VesselAmount(vessel_pixels=vessel_pixels, fov_pixels=fov_pixels, vessel_fraction=frac,
                        skeleton_pixels=int(np.count_nonzero(skeleton)), skeleton_length=length,
                        skeleton_chain_length=chain, skeleton_density=dens)
