"""Skeletonisation of 2-D vessel masks: scikit-image's Zhang-Suen thinning, 64 pixels at a time.

`skeletonize(mask)` returns exactly what ``skimage.morphology.skeletonize(mask)`` returns for a 2-D mask
(scikit-image 0.26, default ``method='zhang'``): the same 256-entry lookup table, the same two
sub-iterations per iteration, and the same parallel semantics (every decision of a sub-iteration is made
on the image as it was at the start of that sub-iteration, so the evaluation order does not matter).

Because a sub-iteration is parallel, it can be computed on a bit-packed image: each row is stored as
uint64 words (bit b of word k is column 64 k + b), the 8 neighbour planes of a word come from shifts of
it and of its 8 neighbouring words, and "removable in this sub-iteration" is a boolean circuit on those
planes (`removable_bits`, derived from the lookup table and checked against it on all 256 codes). Only
words that read a bit changed since they were last evaluated for the same kind of sub-iteration are
evaluated again, so a sub-iteration costs about one circuit per 64 pixels of the shrinking boundary
rather than a table lookup per pixel of the image, on thin and on thick, dense masks alike
(benchmarks/skeleton_density.py measures both against scikit-image).
"""
import numpy as np
from numba import njit, uintp

__all__ = ["skeletonize", "removable_bits", "ZHANG_LUT"]

# scikit-image's table (skimage/morphology/_skeletonize_cy.pyx, `_fast_skeletonize`): index = sum of the
# 8 neighbours weighted NW 1, N 2, NE 4, E 8, SE 16, S 32, SW 64, W 128; value 1 = removable in the first
# sub-iteration, 2 = in the second, 3 = in both, 0 = never. It is CellProfiler's variant of Zhang-Suen,
# not the textbook conditions, so it is copied rather than derived (identity is the requirement). The
# thinning itself uses the circuits of `removable_bits`; this table is their reference (tests compare).
ZHANG_LUT = np.array([
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
ZHANG_LUT.flags.writeable = False

_U1 = np.uint64(1)
_U63 = np.uint64(63)


@njit(cache=True, inline="always")
def removable_bits(nw, n, ne, e, se, s, sw, w, first):
    """Which pixels ZHANG_LUT marks for removal, given their 8 neighbours as bit planes.

    Parameters
    ----------
    nw, n, ne, e, se, s, sw, w : np.uint64
        Bit b of each is the value of pixel b's neighbour in that direction (rows grow southwards).
    first : bool
        True for scikit-image's first sub-iteration (removes table values 1 and 3), False for the
        second (values 2 and 3).

    Returns
    -------
    np.uint64
        Bit b set where ``ZHANG_LUT[code of pixel b]`` is removable in that sub-iteration, whether or not
        pixel b itself is foreground. The circuits (54 and 58 gates) were computed once: minimal sums of
        products of the table's 36 and 35 removable codes (Quine-McCluskey, sympy's ``SOPform``), then
        factored by repeatedly taking out the literal shared by most products.
    """
    if first:
        return ((~se & ((n & ((~s & ((~w & ~sw & (e | ne | nw)) | (w & (~e | (ne & nw)))))
                              | (~e & nw & sw & w)))
                        | (~ne & ((w & ~e & ((nw & sw) | (~n & s & ~sw)))
                                  | (e & ~n & ~nw & s & ~sw & ~w)))))
                | (s & ((sw & ~ne & ((se & ~nw & ~n & (~e | ~w)) | (~e & nw & w)))
                        | (e & ~n & ne & ~nw & se & ~w)))
                | (~sw & ~s & ne & e & ((n & nw) | (~nw & ~w))))
    return ((~nw & ((~w & ((e & ((s & ((~n & (sw | ~ne)) | (ne & se))) | (~sw & ~s & (se | (n & ~ne)))))
                           | (~n & ~ne & s & sw)))
                    | (w & ~ne & ~e & ((~n & s) | (n & ~s & ~se & ~sw)))
                    | (e & ~n & s & se & sw)))
            | (~se & ((~s & nw & n & ((~sw & ne & (~e | ~w)) | (~e & sw & w)))
                      | (~e & ~n & ~ne & sw & w)))
            | (se & ((e & n & ne & ~sw & ~w) | (~n & ~ne & s & sw & w))))


@njit(cache=True)
def _thin_bits(img, stride):
    """Zhang-Suen thinning in place of a bit-packed image (flat uint64, `stride` words a row).

    The first and last row and the first and last word of every row are zero (the border), so the
    neighbours of every other word are in bounds.
    """
    one = uintp(1)
    st = uintp(stride)
    nwords = img.size
    # A word evaluated for one kind of sub-iteration gives the same answer for that kind later unless
    # a bit it reads (its own, the rows above and below, bit 63 of its left and bit 0 of its right
    # neighbours) changed meanwhile: `flags` bit t says "evaluate at the next sub-iteration of kind t"
    # (0 first, 1 second) and `todo0`, `todo1` list those words, each once.
    flags = np.zeros(nwords, np.uint8)
    todo0 = np.empty(nwords, np.uint32)
    todo1 = np.empty(nwords, np.uint32)
    n0 = 0
    for i in range(nwords):
        if img[i] != 0:
            flags[i] = 3
            todo0[n0] = i
            n0 += 1
    todo1[:n0] = todo0[:n0]
    n1 = n0
    cur = np.empty(nwords, np.uint32)
    changed = np.empty(nwords, np.uint32)
    removed = np.empty(nwords, np.uint64)
    first = True
    # skimage stops after a full iteration removes nothing; here the lists run dry at that same fixed
    # point (a sub-iteration that removes nothing leaves the image as it was)
    while n0 > 0 or n1 > 0:
        # this kind's list becomes the work of this sub-iteration; its words are queued afresh below
        if first:
            cur, todo0 = todo0, cur
            m, n0 = n0, 0
            keep = np.uint8(2)
        else:
            cur, todo1 = todo1, cur
            m, n1 = n1, 0
            keep = np.uint8(1)
        nch = 0
        # decide every word on the image as it was at the start of the sub-iteration ...
        for k in range(m):
            i = uintp(cur[k])
            flags[i] &= keep
            c = img[i]
            if c == 0:
                continue
            a = img[i - st]
            b = img[i + st]
            rem = c & removable_bits(
                (a << _U1) | (img[i - st - one] >> _U63), a, (a >> _U1) | (img[i - st + one] << _U63),
                (c >> _U1) | (img[i + one] << _U63),
                (b >> _U1) | (img[i + st + one] << _U63), b, (b << _U1) | (img[i + st - one] >> _U63),
                (c << _U1) | (img[i - one] >> _U63), first)
            # branch-free append: whether a word changes is data-dependent and mispredicts otherwise
            changed[nch] = i
            removed[nch] = rem
            nch += rem != 0
        # ... then apply, and queue for both kinds the words that read a changed bit: the words above
        # and below always, the left column only if bit 0 changed, the right one only if bit 63 did
        for k in range(nch):
            i = uintp(changed[k])
            r = removed[k]
            img[i] &= ~r
            for col in range(i - (r & _U1), i + (r >> _U63) + one):
                for j in (col - st, col, col + st):
                    f = flags[j]
                    if f != 3 and img[j] != 0:  # a zero word stays zero; the border is never queued
                        if (f & 1) == 0:
                            todo0[n0] = j
                            n0 += 1
                        if (f & 2) == 0:
                            todo1[n1] = j
                            n1 += 1
                        flags[j] = 3
        first = not first
    return img


def _as_2d(mask, name="mask"):
    a = np.asarray(mask)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape}")
    return a


def skeletonize(mask):
    """Skeleton of a 2-D binary mask, identical to ``skimage.morphology.skeletonize`` (Zhang-Suen [1]_).

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
    Pixels outside the image count as background, as in scikit-image. The image is bit-packed (64
    pixels a word) and each sub-iteration evaluates only the words near the previous changes, with a
    boolean circuit per word instead of a table lookup per pixel; single-threaded, like scikit-image.

    References
    ----------
    .. [1] T. Y. Zhang and C. Y. Suen, "A fast parallel algorithm for thinning digital patterns",
           Communications of the ACM 27(3), 236-239, 1984. https://doi.org/10.1145/357994.358023
    """
    a = _as_2d(mask)
    h, w = a.shape
    nbytes = (w + 7) // 8
    stride = (w + 63) // 64 + 2  # words a row, with a zero word at either end
    if (h + 2) * stride >= 2**32:
        raise ValueError(f"mask of shape {a.shape} is too large (word indices are uint32)")
    # little-endian bit order within bytes and bytes within words (x86, ARM): column x is bit x % 64
    # of word 1 + x // 64
    buf = np.zeros((h + 2, stride * 8), np.uint8)
    buf[1:h + 1, 8:8 + nbytes] = np.packbits(a.astype(bool, copy=False), axis=1, bitorder="little")
    _thin_bits(buf.reshape(-1).view("<u8"), stride)
    return np.unpackbits(buf[1:h + 1, 8:8 + nbytes], axis=1, count=w, bitorder="little").view(bool)
