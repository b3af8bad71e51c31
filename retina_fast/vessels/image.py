"""Input checks and the field-of-view mask of fundus images, shared by `segment` and `fpn`.

Two field-of-view estimators live in the package, for two different jobs:

- `estimate_fov_mask` (here): the *lit pixels*, a per-pixel mask for segmentation. It takes any
  (H, W, 3) or (H, W) integer or float image from 16 x 16 px up (tiles, HRF/DRIVE images, 2-D
  channels), assumes no shape, and follows the retina exactly where the camera clipped the circle or
  `prepare` padded it with black.
- `retina_fast.data.fov.find_fov`: the *fitted circle* (centre, radius, which sides are clipped), the
  geometry `prepare` crops and centres by and zone B is measured from. It needs an (H, W, 3) uint8
  photograph whose retina covers at least 5 % of the frame and has a circular edge, and raises
  `FOVNotFoundError` otherwise.

The mask is not built from the circle because a circle's mask is wrong for segmentation on exactly
the images this package makes: on a clipped or padded image it takes in the black bands above and
below the retina, whose bright-to-black edge the vesselness filter then reads as a dark vessel. Use
`find_fov` for geometry and `estimate_fov_mask` for "which pixels are retina".
"""
import numpy as np
from scipy import ndimage as ndi

__all__ = ["check_image", "image_channel", "estimate_fov_mask", "check_fov_mask"]


def check_image(image):
    """Validate a fundus image; return it as an ndarray (H, W) or (H, W, 3).

    An (H, W, 4) image loses its alpha channel. Raises TypeError for a non-numeric dtype, ValueError
    for another shape, a side under 16 px or NaN/infinite values.
    """
    if image is None:
        raise TypeError("image must be an (H, W, 3) RGB or (H, W) array, got None")
    a = np.asarray(image)
    if a.dtype == object or a.dtype.kind not in "uif":
        raise TypeError(f"image must have an integer or float dtype (uint8 RGB expected), got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W), got shape {a.shape}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise ValueError(f"image is empty or too small (need at least 16 x 16 px), got shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError("image contains NaN or infinite values")
    return a


def image_channel(a, c):
    """Channel `c` of a checked (H, W, 3) image, or the 2-D image itself, as float32 on a 0-255 scale.

    Float images with maximum <= 1 are taken as [0, 1]; integer images wider than uint8 are scaled by
    their maximum.
    """
    x = a[..., c] if a.ndim == 3 else a
    x = x.astype(np.float32)
    if a.dtype.kind == "f" and a.size and float(np.max(a)) <= 1.0:
        x = x * np.float32(255.0)  # float images in [0, 1]
    elif a.dtype.kind in "ui" and a.dtype.itemsize > 1:
        x = x * np.float32(255.0 / max(float(np.max(a)), 1.0))
    return x


def estimate_fov_mask(image):
    """Field-of-view mask of a fundus photograph by a threshold on the red channel.

    Parameters
    ----------
    image : (H, W, 3) RGB or (H, W) array
        For 2-D input the image itself is thresholded.

    Returns
    -------
    (H, W) bool array
        Pixels over max(8, 0.15 * 99th percentile) grey levels (0-255 scale), holes filled, largest
        connected component. This is the per-pixel mask segmentation needs; the fitted circle is
        `retina_fast.data.fov.find_fov` (see the module docstring for which to use).
    """
    a = check_image(image)
    red = image_channel(a, 0)
    level = max(8.0, 0.15 * float(np.percentile(red[::4, ::4], 99)))
    m = red > level
    lab, n = ndi.label(m)
    if n == 0:
        return m
    m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    # hole filling: background components that do not touch the frame are holes
    bg, nb = ndi.label(~m)
    edge = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    holes = np.ones(nb + 1, bool)
    holes[edge] = False
    holes[0] = False
    return m | holes[bg]


def check_fov_mask(fov_mask, shape):
    """A given field-of-view mask as an (H, W) bool array of `shape`; ValueError if empty or misshaped."""
    m = np.asarray(fov_mask)
    if m.shape != tuple(shape):
        raise ValueError(f"fov_mask must have the image's shape {tuple(shape)}, got {m.shape}")
    if m.dtype != bool:
        if m.dtype.kind not in "uif":
            raise TypeError(f"fov_mask must be boolean, got {m.dtype}")
        m = m != 0
    if not m.any():
        raise ValueError("fov_mask is empty: no pixel inside the field of view")
    return m
