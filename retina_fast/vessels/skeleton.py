"""Skeletonisation of 2-D vessel masks: scikit-image's Zhang-Suen thinning, reimplemented with a work list.

`skeletonize(mask)` returns exactly what ``skimage.morphology.skeletonize(mask)`` returns for a 2-D mask
(scikit-image 0.26, default ``method='zhang'``): the same 256-entry lookup table, the same two
sub-iterations per iteration, and the same parallel semantics (every decision of a sub-iteration is made
on the image as it was at the start of that sub-iteration, so the scan order does not matter).

What differs is the amount of work: scikit-image rescans every pixel of the image in each sub-iteration.
Here only pixels whose 3 x 3 neighbourhood may have changed are re-examined: a pixel that survived a
sub-iteration can only be removed later if one of its neighbours was removed, or if its lookup value marks
it for removal in the *other* sub-iteration. Everything else is provably unchanged.
"""
import numpy as np
from numba import njit

__all__ = ["skeletonize"]

# scikit-image's table (skimage/morphology/_skeletonize_cy.pyx, `_fast_skeletonize`): index = sum of the
# 8 neighbours weighted NW 1, N 2, NE 4, E 8, SE 16, S 32, SW 64, W 128; value 1 = removable in the first
# sub-iteration, 2 = in the second, 3 = in both, 0 = never. It is CellProfiler's variant of Zhang-Suen,
# not the textbook conditions, so it is copied rather than derived (identity is the requirement).
_LUT = np.array([
    0, 0, 0, 1, 0, 0, 1, 3, 0, 0, 3, 1, 1, 0, 1, 3, 0, 0, 0, 0, 0, 0,
    0, 0, 2, 0, 2, 0, 3, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 2, 2, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0,
    0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 3, 0, 2, 0, 0, 0, 3, 1,
    0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 1, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 1, 3, 0, 0,
    1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 2, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3,
    0, 1, 0, 0, 0, 0, 2, 2, 0, 0, 2, 0, 0, 0], dtype=np.uint8)


@njit(cache=True)
def _thin(img, w, lut):
    """Zhang-Suen thinning in place on a zero-padded, flattened uint8 {0, 1} image of row stride `w`."""
    n = img.size
    m = 0
    for i in range(n):
        m += img[i]
    # one spare slot: the branch-free appends below write before they decide to count
    cand = np.empty(m + 1, np.int32)
    nxt = np.empty(m + 1, np.int32)
    removed = np.empty(m + 1, np.int32)
    m = 0
    for i in range(n):
        if img[i]:
            cand[m] = i
            m += 1
    queued = np.zeros(n, np.uint8)  # 1 while a pixel sits in the next step's list (no duplicates)
    offs = np.array([-w - 1, -w, -w + 1, -1, 1, w - 1, w, w + 1], np.int32)
    first = True  # scikit-image's first sub-iteration removes lut 1 and 3, the second 2 and 3
    while m > 0:
        want = 1 if first else 2
        nrem = 0
        nkeep = 0
        for k in range(m):
            i = cand[k]
            v = lut[img[i - w - 1] + 2 * img[i - w] + 4 * img[i - w + 1] + 8 * img[i + 1]
                    + 16 * img[i + w + 1] + 32 * img[i + w] + 64 * img[i + w - 1] + 128 * img[i - 1]]
            # branch-free bookkeeping: the outcome is data-dependent and mispredicts badly otherwise
            rem = np.uint8((v == 3) | (v == want))
            keep = np.uint8(v != 0) - rem  # v != 0 whenever rem is 1
            removed[nrem] = i
            nrem += rem
            nxt[nkeep] = i
            nkeep += keep
            queued[i] = keep
        for k in range(nrem):
            img[removed[k]] = 0
        for k in range(nrem):
            i = removed[k]
            for o in offs:
                j = i + o
                add = img[j] & (queued[j] ^ 1)
                queued[j] |= add
                nxt[nkeep] = j
                nkeep += add
        cand, nxt = nxt, cand
        m = nkeep
        first = not first
    return img


def _as_2d(mask, name="mask"):
    a = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    return a


def skeletonize(mask):
    """Skeleton of a 2-D binary mask, identical to ``skimage.morphology.skeletonize`` (Zhang-Suen).

    Parameters
    ----------
    mask : (H, W) array_like
        Nonzero (or True) pixels are foreground, as in scikit-image.

    Returns
    -------
    skeleton : (H, W) ndarray of bool
        One-pixel-wide, 8-connected skeleton, pixel for pixel equal to scikit-image 0.26's output.

    Notes
    -----
    Pixels outside the image count as background (the image is zero-padded by one pixel), as in
    scikit-image. Runs in time proportional to the number of foreground pixels times the thinning depth,
    instead of the image area times the depth.
    """
    a = _as_2d(mask)
    h, w = a.shape
    if (h + 2) * (w + 2) >= 2**31:
        raise ValueError(f"mask of shape {a.shape} is too large (flat indices are int32)")
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = a.astype(bool, copy=False)
    _thin(padded.reshape(-1), w + 2, _LUT)
    return padded[1:-1, 1:-1].astype(bool)
