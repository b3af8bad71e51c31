"""Circular field of view (FOV) of a fundus photograph: find it, centre it, square-crop and resize.

Coordinates are (row, col) in pixels of the image given, with pixel centres at integer positions
(pixel (0, 0) covers [-0.5, 0.5) x [-0.5, 0.5)).

The FOV is found on a box-downsampled copy (short side about 384 px): the retina is every pixel whose
brightest channel is over a threshold between the black surround and the retina (a fraction of the
retina's 99th percentile, at least 10 grey levels), kept to its largest connected component. Each
row and column is scanned for its first and last retina pixel; the crossings that are not on the frame
edge (where a fundus camera clips the circle at top/bottom) are located to sub-pixel precision and a
least-squares circle (Kasa) is fitted to them, with iterative rejection of outliers (notches,
burned-in text, clipped corners). Row scans and column scans are also fitted alone and the circle
most points agree with wins: in an image padded with black (a prepared image) the column scans land
on the straight padding edges.
"""
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

# Short side of the working copy the FOV is found on: boundary points to ~0.25 px there are ~1 px at
# 1536 x 2048, and hundreds of them make the circle fit far better than 1 % of the radius.
WORK_SIDE = 384
# A circle leaving the frame by more than this fraction of its radius counts as clipped on that side.
CLIP_TOLERANCE = 0.01
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
            "bicubic": Image.Resampling.BICUBIC}


class FOVNotFoundError(ValueError):
    """No circular field of view could be fitted (empty, black or featureless image)."""


@dataclass(frozen=True)
class FieldOfView:
    """A circular field of view in pixel coordinates of its image.

    Attributes
    ----------
    center : (float, float)
        Circle centre (row, col), px.
    radius : float
        Circle radius, px.
    clipped_top, clipped_bottom, clipped_left, clipped_right : bool
        Whether the circle leaves the frame on that side (by more than `CLIP_TOLERANCE` x radius).
    """

    center: tuple
    radius: float
    clipped_top: bool = False
    clipped_bottom: bool = False
    clipped_left: bool = False
    clipped_right: bool = False

    @property
    def zoomed(self):
        """True when the FOV leaves the frame at left or right: the periphery is missing."""
        return self.clipped_left or self.clipped_right

    def mask(self, shape, erode=0.0):
        """Boolean (H, W) mask of pixels whose centre is inside the circle shrunk by `erode` px."""
        rows = np.arange(shape[0], dtype=np.float32)[:, None] - self.center[0]
        cols = np.arange(shape[1], dtype=np.float32)[None, :] - self.center[1]
        r = max(self.radius - erode, 0.0)
        return rows * rows + cols * cols <= r * r


@dataclass(frozen=True)
class CropGeometry:
    """The square crop `crop_to_fov` took, to map points between input and output pixels.

    The square covers input pixels [top, top + side) x [left, left + side) (it may extend past the
    frame, where it is black) and is resized to `size` x `size`.
    """

    top: int
    left: int
    side: int
    size: int

    @property
    def scale(self):
        """Output pixels per input pixel."""
        return self.size / self.side

    def to_output(self, points):
        """Map (..., 2) input (row, col) points to output pixel coordinates."""
        p = np.asarray(points, dtype=np.float64)
        origin = np.array([self.top, self.left], dtype=np.float64)
        # pixel centres: input index c is continuous c + 0.5, output index o is continuous o + 0.5
        return (p + 0.5 - origin) * self.scale - 0.5

    def to_input(self, points):
        """Map (..., 2) output (row, col) points back to input pixel coordinates."""
        p = np.asarray(points, dtype=np.float64)
        origin = np.array([self.top, self.left], dtype=np.float64)
        return (p + 0.5) / self.scale + origin - 0.5

    def output_fov(self, fov):
        """The FieldOfView `fov` (in input pixels) as it lies in the output image."""
        center = tuple(float(v) for v in self.to_output(fov.center))
        return FieldOfView(center, fov.radius * self.scale)


def as_pil(image, name="image"):
    """An RGB `PIL.Image` view of `image` (HxWx3 uint8 array, or a PIL image which is returned as is)."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"{name} must be RGB, got PIL mode {image.mode!r}")
        return image
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got {a.dtype} {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def working_copy(image, side=WORK_SIDE):
    """Box-downsample `image` by an integer factor so its short side is about `side` px.

    Returns
    -------
    small : (h, w, 3) uint8 array
    factor : int
        Input pixel (r, c) maps to small pixel ((r - (factor - 1) / 2) / factor, ...).
    """
    pil = as_pil(image)
    factor = max(1, round(min(pil.size) / side))
    small = pil.reduce(factor) if factor > 1 else pil
    return np.asarray(small), factor


def fit_circle(points, *, iterations=5, min_points=12):
    """Least-squares (Kasa) circle through (N, 2) (row, col) `points`, rejecting outliers.

    Each round drops points whose distance from the circle exceeds max(3 x 1.4826 x MAD, 0.5 px)
    and refits. Returns (center (row, col), radius, inlier mask).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {p.shape}")
    keep = np.ones(len(p), bool)
    center, radius = None, None
    for _ in range(iterations):
        if keep.sum() < min_points:
            raise FOVNotFoundError(f"only {int(keep.sum())} FOV boundary points (need {min_points})")
        q = p[keep]
        mean = q.mean(axis=0)  # centring keeps the normal equations well conditioned
        x, y = (q - mean).T
        a = np.column_stack([x, y, np.ones_like(x)])
        sol, *_ = np.linalg.lstsq(a, x * x + y * y, rcond=None)
        cx, cy = sol[0] / 2, sol[1] / 2
        radius = float(np.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0)))
        center = (float(cx + mean[0]), float(cy + mean[1]))
        resid = np.abs(np.hypot(p[:, 0] - center[0], p[:, 1] - center[1]) - radius)
        mad = np.median(resid[keep])
        new_keep = resid <= max(3 * 1.4826 * mad, 0.5)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return center, radius, keep


def _crossings(values, mask, threshold, axis):
    """Sub-pixel first/last retina crossings along `axis` of a 2-D map.

    Returns (N, 2) (row, col) points; crossings on the frame edge are left out.
    """
    v = values if axis == 1 else values.T
    m = mask if axis == 1 else mask.T
    n = v.shape[1]
    any_ = m.any(axis=1)
    lines = np.nonzero(any_)[0]
    first = m[lines].argmax(axis=1)
    last = n - 1 - m[lines, ::-1].argmax(axis=1)
    pts = []
    for idx, step in ((first, -1), (last, 1)):
        inside = (idx > 0) & (idx < n - 1)
        ln, i = lines[inside], idx[inside]
        a = v[ln, i].astype(np.float64)       # retina side
        b = v[ln, i + step].astype(np.float64)  # background side
        # where the linear ramp between the two pixel centres crosses the threshold
        t = np.clip((a - threshold) / np.maximum(a - b, 1e-6), 0.0, 1.0)
        pos = i + step * t
        pts.append(np.column_stack([ln, pos]))
    p = np.concatenate(pts)
    return p if axis == 1 else p[:, ::-1]


def find_fov(image):
    """Find the circular field of view of a fundus photograph.

    Parameters
    ----------
    image : (H, W, 3) uint8 array or RGB PIL.Image
        A fundus photograph: retina inside a circle on a black surround. The circle may be clipped by
        the frame (usually at top and bottom).

    Returns
    -------
    FieldOfView
        Centre (row, col) and radius in pixels of `image`, and on which sides the circle leaves the frame.

    Raises
    ------
    FOVNotFoundError (a ValueError)
        When no circle can be fitted: the image is blank, or the retina fills the whole frame.
    """
    small, factor = working_copy(image)
    shape = (image.size[1], image.size[0]) if isinstance(image, Image.Image) else np.shape(image)[:2]
    return fov_from_working_copy(small, factor, shape)


def brightest_channel(small):
    """Per-pixel maximum of the three channels of an (h, w, 3) uint8 array."""
    # channel-wise np.maximum is several times faster than a strided .max(axis=2)
    return np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2])


def retina_mask(small):
    """Rough retina mask of a working copy: (mask, threshold on the brightest channel).

    The largest connected region brighter than max(10, 0.15 x its 99th percentile) grey levels: noise
    specks and burned-in text off the retina are smaller components; text touching it gives boundary
    points that the circle fit rejects. May be empty.
    """
    bright = brightest_channel(small)
    counts = np.cumsum(np.bincount(bright.ravel(), minlength=256))
    p99 = float(np.searchsorted(counts, 0.99 * counts[-1]))
    threshold = max(10.0, 0.15 * p99)
    mask = bright > threshold
    labels, n = ndi.label(mask)
    if n == 0:
        return mask, threshold
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax(), threshold


def fov_from_working_copy(small, factor, shape, mask=None):
    """`find_fov` on a working copy `small` (from `working_copy`) of an image of `shape` (H, W).

    `mask` is `retina_mask(small)` when the caller has it already.
    """
    h, w = small.shape[:2]
    mask, threshold = retina_mask(small) if mask is None else mask
    bright = brightest_channel(small)
    if mask.sum() < 0.05 * h * w:
        raise FOVNotFoundError("bright region covers under 5 % of the frame: no field of view")
    rows = _crossings(bright, mask, threshold, 1)
    cols = _crossings(bright, mask, threshold, 0)
    pts = np.concatenate([rows, cols])
    # An image cropped with black padding (a prepared image, a clipped circle) has straight chord edges
    # inside the frame; the column scan then lands mostly on them and least squares from all points
    # would start from a wrong circle. So fit each scan alone and all together, keep the circle most
    # points agree with (within 1.5 px), and refit on those points.
    best, best_n = None, -1
    for cand in (rows, cols, pts):
        try:
            c, r, _ = fit_circle(cand)
        except (FOVNotFoundError, np.linalg.LinAlgError):
            continue
        n = int(np.sum(np.abs(np.hypot(pts[:, 0] - c[0], pts[:, 1] - c[1]) - r) < 1.5))
        if n > best_n:
            best, best_n = (c, r), n
    if best is None or best_n < 0.1 * len(pts):
        raise FOVNotFoundError("boundary is not circular")
    agree = np.abs(np.hypot(pts[:, 0] - best[0][0], pts[:, 1] - best[0][1]) - best[1]) < 1.5
    center_s, radius_s, _ = fit_circle(pts[agree])
    off = (factor - 1) / 2.0
    center = (center_s[0] * factor + off, center_s[1] * factor + off)
    radius = radius_s * factor
    H, W = shape
    tol = CLIP_TOLERANCE * radius
    # the frame's outer edges are at -0.5 and H - 0.5 in pixel-centre coordinates
    return FieldOfView(
        center=(float(center[0]), float(center[1])), radius=float(radius),
        clipped_top=bool(center[0] - radius < -0.5 - tol),
        clipped_bottom=bool(center[0] + radius > H - 0.5 + tol),
        clipped_left=bool(center[1] - radius < -0.5 - tol),
        clipped_right=bool(center[1] + radius > W - 0.5 + tol),
    )


def crop_geometry(fov, size=1024):
    """The integer square around `fov` that `crop_to_fov` takes: side = ceil(diameter), centred."""
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    side = int(np.ceil(2 * fov.radius))
    # in PIL's continuous coordinates (pixel i spans [i, i + 1)) the circle's centre is at center + 0.5
    top = round(fov.center[0] + 0.5 - side / 2)
    left = round(fov.center[1] + 0.5 - side / 2)
    return CropGeometry(top=top, left=left, side=side, size=int(size))


def crop_to_fov_pil(image, fov, size=1024, resample="box"):
    """`crop_to_fov` on PIL images (no numpy copies): returns (PIL.Image, CropGeometry)."""
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    pil = as_pil(image)
    g = crop_geometry(fov, size)
    # PIL's crop fills the part of the box outside the frame with black
    square = pil.crop((g.left, g.top, g.left + g.side, g.top + g.side))
    if g.side != g.size:
        square = square.resize((g.size, g.size), RESAMPLE[resample])
    return square, g


def crop_to_fov(image, fov, size=1024, resample="box"):
    """Centre the field of view, square-crop around it and resize to `size` x `size`.

    The square has side ceil(2 x radius) and is centred on the circle (to the nearest pixel); where it
    leaves the frame it is padded with black. The resize is antialiased: Pillow's BOX filter (default;
    area averaging, like OpenCV's INTER_AREA) or LANCZOS (StyleGAN2-ADA dataset_tool's choice: a
    little sharper, ~2.5x slower at 1672 -> 1024).

    Parameters
    ----------
    image : (H, W, 3) uint8 array or RGB PIL.Image
    fov : FieldOfView
        In pixels of `image`.
    size : int
        Output side, px.
    resample : {'box', 'lanczos', 'bicubic'}

    Returns
    -------
    square : (size, size, 3) uint8 array
    geometry : CropGeometry
        Maps points between `image` and `square` pixels (`geometry.to_output`).
    """
    square, g = crop_to_fov_pil(image, fov, size, resample)
    return np.asarray(square), g
