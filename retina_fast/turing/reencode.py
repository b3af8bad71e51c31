"""Uniform, metadata-free PNG copies of study images, so that nothing but pixels tells real from synthetic.

Every image is decoded with Pillow, turned upright by its EXIF orientation, converted to 8-bit RGB and
written as a fresh PNG built from the pixel array alone: no EXIF, ICC profile, text chunk, DPI or
original format survives. Encoded file sizes still differ with content (PNG is lossless), so byte
counts carry a little information; that is inherent to serving the pixels.

The geometry must not tell the arms apart either: camera frames are 4:3 with the field of view (FOV)
clipped at top and bottom, generator output is square, so fitting each into a square with black
padding would leave different black rows in each arm. A study therefore places every image one way
(`plan_geometry`):

- ``'fov'`` (every image shows a FOV circle that fits between its left and right edges): the circle
  is found (`retina_fast.data.fov.find_fov`), centred and square-cropped as ``prepare`` does
  (`crop_to_fov_pil`, padded with black where it leaves the frame), and everything outside one
  canonical circle (centred, radius ``(1 - FOV_MARGIN) x size / 2``) and outside the rows and
  columns that every source frame covers (``window``) is set to exact black. The served mask is then
  the same for every image of the study;
- ``'crop'`` (some image shows no such circle: not fundus photographs): the central square of each
  image, no padding, nothing masked;
- ``'fit'`` (one image on its own, no study): aspect ratio kept, letterboxed on black.
"""
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retina_fast.checks import check_int
from retina_fast.data.fov import FOVNotFoundError, crop_geometry, crop_to_fov_pil, find_fov
from retina_fast.fileio import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GEOMETRY_KINDS = ("fov", "crop", "fit")
# The canonical circle sits this fraction of the radius inside the fitted FOV edge, so that the rim
# (vignetting, the antialiased edge, a fit off by a pixel) is black in every image alike.
FOV_MARGIN = 0.02
# Lanczos reaches 3 source pixels either side: black from outside a clipped frame bleeds that far.
LANCZOS_SUPPORT = 3
# Brightest-channel level at or below which a pixel is black (find_fov's lowest threshold).
DARK_LEVEL = 10
# Smallest output side at which a FOV is located and masked (crop_geometry needs >= 8).
MIN_FOV_SIZE = 16


@dataclass(frozen=True)
class Geometry:
    """How every image of a study is placed in its ``size x size`` square.

    Attributes
    ----------
    kind : {'fov', 'crop', 'fit'}
        See the module docstring.
    size : int or None
        Output side, px (``'fov'`` only: `window` is in these pixels).
    window : (int, int, int, int) or None
        ``'fov'`` only: output rows ``[top, bottom)`` and columns ``[left, right)`` that every source
        frame of the study covers; pixels outside it are black in every served image.
    """

    kind: str = "fit"
    size: int = None
    window: tuple = None

    def mask(self):
        """Boolean ``(size, size)`` mask of the served pixels (``'fov'`` only)."""
        if self.kind != "fov":
            raise ValueError(f"only a 'fov' geometry has a mask, this one is {self.kind!r}")
        return served_mask(self.size, self.window)


FIT = Geometry("fit")


def served_mask(size, window=None):
    """The canonical field of view in a ``size x size`` square, cut to `window`.

    Parameters
    ----------
    size : int
        Side, px.
    window : (top, bottom, left, right) or None
        Keep only output rows ``[top, bottom)`` and columns ``[left, right)``.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` bool: inside the circle centred on the square with radius
        ``(1 - FOV_MARGIN) x size / 2`` px (pixel centres) and inside `window`.
    """
    d = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    r = (1.0 - FOV_MARGIN) * size / 2.0
    m = d[:, None] ** 2 + d[None, :] ** 2 <= r * r
    if window is not None:
        top, bottom, left, right = window
        m[:top] = False
        m[bottom:] = False
        m[:, :left] = False
        m[:, right:] = False
    return m


def fov_window(fov, shape, size):
    """Output rows and columns that the source frame covers after `crop_to_fov_pil` to `size`.

    Parameters
    ----------
    fov : retina_fast.data.fov.FieldOfView
        In pixels of the source.
    shape : (int, int)
        Source (H, W), px.
    size : int
        Output side, px.

    Returns
    -------
    (top, bottom, left, right)
        Output rows ``[top, bottom)`` and columns ``[left, right)`` holding only source pixels, less
        the reach of the Lanczos filter (where the square leaves the frame it is padded black, and
        the filter smears that black inwards).
    """
    g = crop_geometry(fov, size)
    s = g.scale
    margin = math.ceil(LANCZOS_SUPPORT * max(1.0, s)) + 1
    h, w = shape

    def span(start, extent):
        # the square covers source [start, start + side); the frame is [0, extent)
        lo = 0 if start >= 0 else min(size, math.ceil(-start * s) + margin)
        hi = size if start + g.side <= extent else max(0, math.floor((extent - start) * s) - margin)
        return lo, hi

    (top, bottom), (left, right) = span(g.top, h), span(g.left, w)
    return top, bottom, left, right


def image_max_side(path):
    """Longest side in pixels of the image at `path`, read from the header only."""
    try:
        with Image.open(path) as im:
            return max(im.size)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def fit_square(rgb, size):
    """Fit an HxWx3 uint8 image into a ``size x size`` black square, aspect ratio kept.

    Parameters
    ----------
    rgb : PIL.Image.Image
        RGB image.
    size : int
        Side of the output in pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 array, the image centred ((row, col) offsets split evenly).
    """
    w, h = rgb.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.LANCZOS)
    out = np.zeros((size, size, 3), np.uint8)
    r0, c0 = (size - nh) // 2, (size - nw) // 2
    out[r0:r0 + nh, c0:c0 + nw] = np.asarray(rgb, dtype=np.uint8)
    return out


def centre_square(rgb, size):
    """The central square of an RGB image (side = its short side), resized to ``size x size``.

    Parameters
    ----------
    rgb : PIL.Image.Image
        RGB image.
    size : int
        Side of the output in pixels.

    Returns
    -------
    numpy.ndarray
        ``(size, size, 3)`` uint8 array; no padding.
    """
    w, h = rgb.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    sq = rgb.crop((left, top, left + side, top + side))
    if side != size:
        sq = sq.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(sq, dtype=np.uint8)


def _to_rgb(im):
    """8-bit RGB view of a Pillow image; 16/32-bit integer grey is scaled, not clipped, to 0-255."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # Pillow's own convert() clips these at 255, which would turn a 16-bit photo white.
        a = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8))
    return im.convert("RGB")


def _decode(src, size):
    """Upright 8-bit RGB PIL image of `src`; JPEGs decoded at a reduced scale still >= `size`."""
    try:
        with Image.open(src) as im:
            im.draft("RGB", (size, size))
            return _to_rgb(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{src}: not a readable image ({e})") from None


def _full_fov(rgb):
    """The FOV of `rgb` when it has one that fits between the left and right edges, else None."""
    try:
        fov = find_fov(rgb)
    except FOVNotFoundError:
        return None
    # a frame zoomed past its left/right edges has no full-width circle to centre on
    return None if fov.zoomed else fov


def padding_window(pixels, margin):
    """Rows and columns of a FOV-centred square that are not black padding baked into the image.

    A generator trained on prepared images reproduces their black chords (the frame's clipping,
    padded by ``prepare``); a frame's own clipping shows the same way. Rows (columns) at the edges in
    which fewer than half of the canonical circle's pixels are brighter than `DARK_LEVEL` in their
    brightest channel are padding; when there are any, `margin` more rows (columns) go with them.

    Parameters
    ----------
    pixels : (size, size, 3) uint8 array
        A square with the FOV centred (`crop_to_fov_pil`).
    margin : int
        Rows (columns) dropped beyond a detected padding edge (its blur), px.

    Returns
    -------
    (top, bottom, left, right)
        Output rows ``[top, bottom)`` and columns ``[left, right)``.
    """
    size = pixels.shape[0]
    inside = served_mask(size)
    lit = (pixels.max(axis=2) > DARK_LEVEL) & inside
    out = []
    for axis in (1, 0):
        n_in, n_lit = inside.sum(axis=axis), lit.sum(axis=axis)
        has = np.flatnonzero(n_in)
        ok = np.flatnonzero((n_in > 0) & (n_lit >= 0.5 * n_in))
        if len(ok) == 0:
            return 0, 0, 0, 0
        lo = 0 if ok[0] == has[0] else min(size, int(ok[0]) + margin)
        hi = size if ok[-1] == has[-1] else max(0, int(ok[-1]) + 1 - margin)
        out += [lo, hi]
    return tuple(out)


def _placed(rgb, fov, size):
    """`rgb` cropped to `fov` at `size` (uint8 array) and the window its frame and padding leave."""
    square, g = crop_to_fov_pil(rgb, fov, size, "lanczos")
    pixels = np.array(square, dtype=np.uint8)
    margin = math.ceil(LANCZOS_SUPPORT * max(1.0, g.scale)) + 1
    a = fov_window(fov, (rgb.size[1], rgb.size[0]), size)
    b = padding_window(pixels, margin)
    return pixels, (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))


def locate_fov(src, size):
    """Where the field of view of `src` lands in the output, as `reencode` will place it.

    Parameters
    ----------
    src : str or Path
        Source image.
    size : int
        Output side, px (JPEGs are decoded at a reduced scale still >= `size`, as `reencode` does).

    Returns
    -------
    (int, int, int, int) or None
        Output rows ``[top, bottom)`` and columns ``[left, right)`` that hold picture: inside the
        source frame (`fov_window`) and not black padding (`padding_window`). None when the image shows
        no FOV circle within its left/right edges (or `size` < `MIN_FOV_SIZE`).

    Raises
    ------
    ValueError
        If `src` cannot be decoded (the message names the file).
    """
    rgb = _decode(src, size)
    if size < MIN_FOV_SIZE:
        return None
    fov = _full_fov(rgb)
    return None if fov is None else _placed(rgb, fov, size)[1]


def plan_geometry(sources, size, kind="auto", workers=1):
    """One geometry for all images of a study (see the module docstring).

    Parameters
    ----------
    sources : sequence of str or Path
        Every image of the study, both arms.
    size : int
        Output side, px.
    kind : {'auto', 'fov', 'crop'}
        'auto': 'fov' when every image shows a FOV circle within its left/right edges, else 'crop'
        with a warning naming the images without one; 'fov': refuse in that case; 'crop': always.
    workers : int
        Threads locating the FOVs (Pillow releases the GIL while decoding).

    Returns
    -------
    Geometry

    Raises
    ------
    ValueError
        An unreadable image, `kind` 'fov' with an image lacking a FOV, or FOVs clipped so much that
        the rows/columns every frame covers leave under half the square.
    """
    if kind not in ("auto", "fov", "crop"):
        raise ValueError(f"kind must be 'auto', 'fov' or 'crop', got {kind!r}")
    size = check_int("size", size, 1)
    sources = list(sources)
    if not sources:
        raise ValueError("sources: no images")
    if kind == "crop":
        return Geometry("crop", size)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        windows = list(pool.map(lambda f: locate_fov(f, size), sources))
    missing = [Path(f).name for f, w in zip(sources, windows) if w is None]
    if missing:
        what = (f"{len(missing)} of {len(sources)} image(s) show no circular field of view within their "
                f"left/right edges (e.g. {', '.join(missing[:3])})")
        if kind == "fov" or len(missing) < len(sources):
            # A fundus study where only some images lack a FOV: centre-cropping all of them keeps one
            # geometry but no longer hides how each arm was framed.
            if kind == "fov":
                raise ValueError(f"sources: {what}; cannot place every image on its field of view")
            warnings.warn(f"{what}: serving central square crops (no FOV alignment); frames that differ "
                          f"between the arms may show", stacklevel=2)
        return Geometry("crop", size)
    w = np.array(windows)
    window = (int(w[:, 0].max()), int(w[:, 1].min()), int(w[:, 2].max()), int(w[:, 3].min()))
    if window[1] - window[0] < size // 2 or window[3] - window[2] < size // 2:
        worst = int(np.argmin(np.minimum(w[:, 1] - w[:, 0], w[:, 3] - w[:, 2])))
        raise ValueError(f"sources: {Path(sources[worst]).name}: its frame clips the field of view to under "
                         f"half the served square (rows/cols {windows[worst]} of {size})")
    return Geometry("fov", size, window)


def reencode(src, dst, size, geometry=FIT):
    """Write `src` as a ``size x size`` metadata-free RGB PNG at `dst` (via a temporary name).

    Parameters
    ----------
    src, dst : str or Path
        Source image (any format Pillow reads) and output PNG path.
    size : int
        Output side in pixels.
    geometry : Geometry
        The study's placement (`plan_geometry`); the default `FIT` letterboxes one image on its own.

    Raises
    ------
    ValueError
        If `src` cannot be decoded, or has no FOV, or a FOV whose frame does not cover the study's
        window, under a 'fov' geometry (the message names the file).
    """
    size = check_int("size", size, 1)
    if not isinstance(geometry, Geometry) or geometry.kind not in GEOMETRY_KINDS:
        raise ValueError(f"geometry must be a Geometry of kind {list(GEOMETRY_KINDS)}, got {geometry!r}")
    if geometry.kind == "fov" and geometry.size != size:
        raise ValueError(f"geometry was planned for size {geometry.size}, not {size}")
    dst = Path(dst)
    rgb = _decode(src, size)
    if geometry.kind == "fit":
        pixels = fit_square(rgb, size)
    elif geometry.kind == "crop":
        pixels = centre_square(rgb, size)
    else:
        fov = _full_fov(rgb)
        if fov is None:
            raise ValueError(f"{src}: no circular field of view within the left/right edges")
        pixels, (top, bottom, left, right) = _placed(rgb, fov, size)
        t, b, l, r = geometry.window
        if top > t or bottom < b or left > l or right < r:
            raise ValueError(f"{src}: its picture does not cover the study's window {geometry.window}")
        pixels[~geometry.mask()] = 0
    # A new image from the bare array: nothing from the source's info dict (icc, exif, dpi) follows.
    clean = Image.fromarray(pixels)
    # zlib level 3: ~4x faster than the default 6 on 1024^2 fundus photos for ~10 % larger files
    with atomic_write(dst) as f:
        clean.save(f, format="PNG", compress_level=3)
