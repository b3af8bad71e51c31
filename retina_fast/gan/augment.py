"""Differentiable image augmentation for GAN training with adaptive probability (ADA).

A re-implementation of the augmentation pipeline of StyleGAN2-ADA (Karras et al. 2020, "Training
Generative Adversarial Networks with Limited Data"), with its argument names, defaults and
semantics, built on our ``retina_fast.ops`` kernels:

* Every augmentation is decided per sample, with probability ``multiplier * p``; ``p`` (a buffer of
  :class:`AugmentPipe`) is the overall strength that :class:`AdaController` adjusts during training.
* Geometric transforms (x-flip, 90-degree rotations, integer translation, isotropic and anisotropic
  scaling, arbitrary rotation, fractional translation) are composed into one 3 x 3 matrix per
  sample and executed in one resampling: reflect padding, 2x upsampling with the orthogonal sym6
  wavelet low-pass (:func:`retina_fast.ops.upsample2d`), bilinear ``grid_sample``, 2x downsampling
  with the same filter (:func:`retina_fast.ops.downsample2d`). Samples whose transform maps pixel
  centres onto pixel centres (only flips, quarter turns, integer shifts fired) are copied pixel by
  pixel instead: exact, and cheaper. (StyleGAN2-ADA resamples them too; that is exact for integer
  shifts but only approximate for flips and quarter turns, because sym6 is not symmetric.)
* Colour transforms (brightness, contrast, luma flip, hue rotation, saturation) are composed into
  one 4 x 4 matrix per sample acting on homogeneous RGB.
* Optional image-space filtering, additive noise and cutout, as in the original.

Everything is differentiable with respect to the images to any order (R1 on augmented reals needs
the second derivative through ``grid_sample``, which PyTorch 2.11 lacks: :class:`_GridSample`
supplies it, as StyleGAN2-ADA's grid_sample_gradfix does).

Coordinates: images are ``[N, C, H, W]`` tensors; the geometric matrices act on homogeneous pixel
coordinates ``(x, y, 1)`` = (column, row, 1) measured from the image centre, as in StyleGAN2-ADA.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from retina_fast.checks import check_int, check_number
from retina_fast.ops import downsample2d, setup_filter, upsample2d
from retina_fast.transfer import host_to_device

__all__ = ["AugmentPipe", "AdaController", "AUGPIPE_SPECS", "WAVELETS"]

# Low-pass filters of the orthogonal wavelets used here (Daubechies' symlets, as tabulated by
# PyWavelets); sym6 drives the geometric resampling, sym2 builds the image-space filter bank.
WAVELETS = {
    "sym2": [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025],
    "sym6": [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
             0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
             -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036,
             -0.007800708325034148],
}

# The named pipelines of StyleGAN2-ADA's train.py (--augpipe); 'bgc' is its default.
AUGPIPE_SPECS = {
    "blit": dict(xflip=1, rotate90=1, xint=1),
    "geom": dict(scale=1, rotate=1, aniso=1, xfrac=1),
    "color": dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    "filter": dict(imgfilter=1),
    "noise": dict(noise=1),
    "cutout": dict(cutout=1),
    "bg": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
    "bgc": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1),
    "bgcf": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                 brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1),
    "bgcfn": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                  brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1),
    "bgcfnc": dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                   brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, noise=1,
                   cutout=1),
}

# Transform matrices are tiny and composed on the host in float64, so that composing a dozen of
# them does not accumulate float32 rounding into the sampling positions.
_MAT_DTYPE = torch.float64


# ---------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Entries are numbers or [N] tensors; the result is [N, R, K].

def _matrix(rows, like):
    elems = [e if isinstance(e, torch.Tensor) else torch.full_like(like, float(e))
             for row in rows for e in row]
    return torch.stack(elems, dim=-1).reshape(like.shape + (len(rows), len(rows[0])))


def _translate2d(tx, ty, like):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)


def _scale2d(sx, sy, like):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)


def _rotate2d(theta, like):
    return _matrix([[torch.cos(theta), -torch.sin(theta), 0],
                    [torch.sin(theta), torch.cos(theta), 0],
                    [0, 0, 1]], like)


def _translate3d(tx, ty, tz, like):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], like)


def _scale3d(sx, sy, sz, like):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], like)


def _rotate3d(v, theta, like):
    """Rotation by ``theta`` about the unit axis ``v`` (3 numbers), homogeneous 4 x 4."""
    vx, vy, vz = (float(a) for a in v[:3])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1]], like)


def _affine_grid(theta, height, width, dtype):
    """``F.affine_grid(theta, [N, C, height, width], align_corners=False)`` without a matmul.

    Elementwise on purpose: affine_grid's batched matmul may run in TF32 on GPUs, which moves
    sampling positions by up to ~1e-3 of the image size. Computed in ``dtype``.
    """
    dev = theta.device
    t = theta.to(dtype)[:, :, :, None, None]  # [N, 2, 3, 1, 1]
    xs = ((torch.arange(width, device=dev, dtype=dtype) * 2 + 1) / width - 1)[None, None, :]
    ys = ((torch.arange(height, device=dev, dtype=dtype) * 2 + 1) / height - 1)[None, :, None]
    grid = torch.empty([theta.shape[0], height, width, 2], device=dev, dtype=dtype)
    grid[..., 0] = t[:, 0, 0] * xs + (t[:, 0, 1] * ys + t[:, 0, 2])
    grid[..., 1] = t[:, 1, 0] * xs + (t[:, 1, 1] * ys + t[:, 1, 2])
    return grid


class _GridSample(torch.autograd.Function):
    """Bilinear ``grid_sample`` (zeros padding, align_corners=False) with a double backward.

    R1 on augmented reals differentiates ``grad_x D(aug(x))`` again, i.e. it needs the derivative
    of grid_sample's backward with respect to its incoming gradient. PyTorch 2.14 provides it, but
    2.11 (allowed by our requirements) raises "derivative for aten::grid_sampler_2d_backward is not
    implemented" (StyleGAN2-ADA's grid_sample_gradfix exists for the same reason). The backward is
    linear in the incoming gradient, so its derivative with respect to it is grid_sample itself.
    The grid is treated as a constant at second order (ours never requires grad).
    """

    @staticmethod
    def forward(ctx, x, grid):
        ctx.save_for_backward(x, grid)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, dy):
        x, grid = ctx.saved_tensors
        return _GridSampleBackward.apply(dy, x, grid, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, grid, need_dx, need_dgrid):
        ctx.save_for_backward(grid)
        dx, dgrid = torch.ops.aten.grid_sampler_2d_backward(dy, x, grid, 0, 0, False, [need_dx, need_dgrid])
        return dx, dgrid

    @staticmethod
    def backward(ctx, ddx, ddgrid):
        (grid,) = ctx.saved_tensors
        if ctx.needs_input_grad[2] and ddgrid is not None:
            raise NotImplementedError("AugmentPipe: second derivative with respect to the sampling grid")
        ddy = _GridSample.apply(ddx, grid) if ctx.needs_input_grad[0] and ddx is not None else None
        return ddy, None, None, None, None


def _grid_sample(x, grid):
    return _GridSample.apply(x, grid)


def _sym_filter_bank():
    """StyleGAN2-ADA's 4-band filter bank from sym2: rows are the band-pass filters, [4, 25]."""
    hz_lo = np.asarray(WAVELETS["sym2"])                 # H(z)
    hz_hi = hz_lo * ((-1) ** np.arange(hz_lo.size))      # H(-z)
    hz_lo2 = np.convolve(hz_lo, hz_lo[::-1]) / 2         # H(z) H(z^-1) / 2
    hz_hi2 = np.convolve(hz_hi, hz_hi[::-1]) / 2         # H(-z) H(-z^-1) / 2
    bank = np.eye(4, 1)
    for i in range(1, bank.shape[0]):
        # Upsample the bank by 2 (zero insertion), low-pass it, and add the next high band.
        bank = np.dstack([bank, np.zeros_like(bank)]).reshape(bank.shape[0], -1)[:, :-1]
        bank = np.stack([np.convolve(row, hz_lo2) for row in bank])
        lo = (bank.shape[1] - hz_hi2.size) // 2
        bank[i, lo: lo + hz_hi2.size] += hz_hi2
    return torch.as_tensor(bank, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------

def _rand(batch_size, *shape):
    """Uniform [0, 1) draws [batch_size, *shape] from the global CPU generator."""
    return torch.rand([batch_size, *shape])


def _randn(batch_size, *shape):
    """Standard normal draws [batch_size, *shape] from the global CPU generator."""
    return torch.randn([batch_size, *shape])


def _erfinv(debug_percentile):
    """The standard normal quantile of `debug_percentile`, over sqrt(2) (StyleGAN2-ADA's use)."""
    return torch.erfinv(debug_percentile * 2 - 1)


class AugmentPipe(torch.nn.Module):
    """StyleGAN2-ADA's augmentation pipeline (all augmentations off by default).

    Each augmentation is applied to each sample independently with probability
    ``multiplier * p``, where the multiplier is the constructor argument of the same name (1 turns it
    on, see :data:`AUGPIPE_SPECS`) and ``p`` is the :attr:`p` buffer.

    Parameters
    ----------
    xflip, rotate90, xint : float
        Probability multipliers for x-flip, rotation by a random multiple of 90 degrees, and integer
        translation by up to ``xint_max`` of the image size (pixels rounded; reflect padding).
    xint_max : float
        Range of integer translation, relative to the image width / height.
    scale, rotate, aniso, xfrac : float
        Multipliers for isotropic scaling (log2 std ``scale_std``), arbitrary rotation (uniform in
        +-``rotate_max`` half turns; applied before and/or after anisotropic scaling so that
        P(any rotation) = ``rotate * p``), anisotropic scaling (log2 std ``aniso_std``) and
        fractional translation (std ``xfrac_std`` of the image size).
    brightness, contrast, lumaflip, hue, saturation : float
        Multipliers for adding N(0, ``brightness_std``) to all channels, scaling about 0 by
        2**N(0, ``contrast_std``), reflecting along the luma axis (1,1,1)/sqrt(3), rotating the hue
        about the luma axis by up to +-``hue_max`` half turns, scaling chroma by
        2**N(0, ``saturation_std``). Hue and saturation are skipped for 1-channel images.
    imgfilter, imgfilter_bands, imgfilter_std : float, list of 4 floats, float
        Random amplification of 4 frequency bands (log2 std ``imgfilter_std``).
    noise, noise_std : float
        Additive Gaussian noise with |N(0, noise_std)| sigma per sample.
    cutout, cutout_size : float
        Zero a square of ``cutout_size`` times the image size at a random centre.
    p : float
        Initial value of the :attr:`p` buffer (StyleGAN2-ADA training starts at 0).
    impl : None, 'native' or 'ref'
        Implementation of the upfirdn2d resampling steps (see :mod:`retina_fast.ops`).

    Notes
    -----
    Input: ``[N, C, H, W]`` floating-point images (the generator's [-1, 1] range); C must be 1 or 3
    when any colour augmentation is on. Output: same shape, dtype and device; differentiable with
    respect to the input to any order. A sample none of whose augmentations fired is returned
    bit-identical, so ``p == 0`` is the exact identity (the input is returned as is). Samples whose
    transform is only flips, quarter turns and integer shifts are copied pixel by pixel (exact); the
    others are resampled as in StyleGAN2-ADA. Random parameters are drawn from the global CPU
    generator (seed it with ``torch.manual_seed``; under DDP seed each rank differently, as
    StyleGAN2-ADA does) and composed on the host; reading ``p`` is the only host-device sync. Keep
    the module on the images' device (``pipe.to(device)``).
    """

    def __init__(self,
                 xflip=0, rotate90=0, xint=0, xint_max=0.125,
                 scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2,
                 xfrac_std=0.125,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2,
                 contrast_std=0.5, hue_max=1, saturation_std=1,
                 imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
                 noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
                 p=0.0, impl=None):
        super().__init__()
        names = dict(xflip=xflip, rotate90=rotate90, xint=xint, xint_max=xint_max, scale=scale,
                     rotate=rotate, aniso=aniso, xfrac=xfrac, scale_std=scale_std,
                     rotate_max=rotate_max, aniso_std=aniso_std, xfrac_std=xfrac_std,
                     brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                     saturation=saturation, brightness_std=brightness_std,
                     contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std,
                     imgfilter=imgfilter, imgfilter_std=imgfilter_std, noise=noise, cutout=cutout,
                     noise_std=noise_std, cutout_size=cutout_size)
        for name, value in names.items():
            setattr(self, name, check_number(f"AugmentPipe: {name}", value, minimum=0))
        if self.cutout_size > 1:
            raise ValueError(f"AugmentPipe: cutout_size is relative to the image and must be <= 1, "
                             f"got {self.cutout_size}")
        if isinstance(imgfilter_bands, (str, bytes)) or not hasattr(imgfilter_bands, "__len__") \
                or len(imgfilter_bands) != 4:
            raise ValueError(f"AugmentPipe: imgfilter_bands must be 4 numbers, got {imgfilter_bands!r}")
        self.imgfilter_bands = [check_number("AugmentPipe: imgfilter_bands", b, minimum=0) for b in imgfilter_bands]
        if impl not in (None, "native", "ref"):
            raise ValueError(f"AugmentPipe: impl must be None, 'native' or 'ref', got {impl!r}")
        self.impl = impl

        self.register_buffer("p", torch.tensor(check_number("AugmentPipe: p", p, minimum=0), dtype=torch.float32))
        # Constant filters: not part of the state (the state is p alone).
        self.register_buffer("Hz_geom", setup_filter(WAVELETS["sym6"]), persistent=False)
        self.register_buffer("Hz_fbank", _sym_filter_bank(), persistent=False)
        self._fbank_host = _sym_filter_bank()  # host copy: the gains are drawn on the host

    def extra_repr(self):
        on = [k for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                          "brightness", "contrast", "lumaflip", "hue", "saturation", "imgfilter",
                          "noise", "cutout") if getattr(self, k) > 0]
        return f"enabled={on}, p={float(self.p):.4f}, impl={self.impl!r}"

    # -----------------------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        """Augment a batch.

        Parameters
        ----------
        images : torch.Tensor
            ``[N, C, H, W]`` floating point.
        debug_percentile : float in [0, 1] or None
            As in StyleGAN2-ADA: apply every enabled augmentation to every sample with the parameter
            at this percentile of its distribution (ignores ``p``). For visualisation and tests.

        Returns
        -------
        torch.Tensor
            Augmented images, same shape, dtype and device.
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"AugmentPipe: images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe: images must be 4-D [N, C, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"AugmentPipe: images must be floating point, got {images.dtype}")
        batch_size, num_channels, height, width = images.shape
        if batch_size == 0:
            return images
        color_on = any(getattr(self, k) > 0 for k in ("brightness", "contrast", "lumaflip", "hue", "saturation"))
        if color_on and num_channels not in (1, 3):
            raise ValueError(f"AugmentPipe: colour augmentation needs RGB (3 channels) or L (1 channel) "
                             f"images, got {num_channels} channels")
        if self.imgfilter > 0 and min(height, width) <= self.Hz_fbank.shape[1] // 2:
            raise ValueError(f"AugmentPipe: imgfilter needs images larger than "
                             f"{self.Hz_fbank.shape[1] // 2} pixels per side (its reflect padding), "
                             f"got {height}x{width}")
        # The random parameters and the small per-sample matrices are drawn and composed on the
        # host (CPU generator, float64): on a GPU that is hundreds of tiny kernels and several
        # host syncs fewer; only the final matrices travel. Reading p is the one device sync.
        if debug_percentile is not None:
            dp = float(debug_percentile)
            if not 0 <= dp <= 1:
                raise ValueError(f"AugmentPipe: debug_percentile must be in [0, 1], got {debug_percentile}")
            debug_percentile = torch.tensor(dp, dtype=torch.float32)
        p = float(self.p)
        if p == 0 and debug_percentile is None:
            return images  # every decision would be 'no'; skip drawing them

        # Geometry, colour, image-space filter, noise, cutout: StyleGAN2-ADA's order, which is also
        # the order of the random draws.
        if any(getattr(self, k) > 0 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")):
            G_inv = self._geometry_matrix(batch_size, height, width, p, debug_percentile)
            images = self._apply_geometry(images, G_inv)
        if color_on:
            C = self._color_matrix(batch_size, num_channels, p, debug_percentile)
            images = self._apply_color(images, host_to_device(C, images.device))
        if self.imgfilter > 0:
            images = self._apply_imgfilter(images, p, debug_percentile)
        if self.noise > 0:
            images = self._apply_noise(images, p, debug_percentile)
        if self.cutout > 0:
            images = self._apply_cutout(images, p, debug_percentile)
        return images

    # -----------------------------------------------------------------------------------------
    # Random parameters, composed on the host

    def _geometry_matrix(self, batch_size, height, width, p, debug_percentile):
        """G_inv [N, 3, 3] (float64, host): the drawn geometric transforms, output pixel -> input
        pixel (coordinates from the image centre)."""
        ones = torch.ones([batch_size], dtype=_MAT_DTYPE)
        G_inv = torch.eye(3, dtype=_MAT_DTYPE).expand(batch_size, 3, 3)

        if self.xflip > 0:
            i = torch.floor(_rand(batch_size) * 2)
            i = torch.where(_rand(batch_size) < self.xflip * p, i, torch.zeros_like(i))
            if debug_percentile is not None:
                i = torch.full_like(i, torch.floor(debug_percentile * 2))
            G_inv = G_inv @ _scale2d(1 / (1 - 2 * i.to(_MAT_DTYPE)), 1, ones)

        if self.rotate90 > 0:
            i = torch.floor(_rand(batch_size) * 4)
            i = torch.where(_rand(batch_size) < self.rotate90 * p, i, torch.zeros_like(i))
            if debug_percentile is not None:
                i = torch.full_like(i, torch.floor(debug_percentile * 4))
            # Quarter turns built from exact cos/sin (cos(pi/2) in floating point is not 0), so
            # that blit-only samples are recognised as pixel permutations.
            q = torch.remainder(i, 4).long()
            cos = torch.tensor([1, 0, -1, 0], dtype=_MAT_DTYPE)[q]
            sin = torch.tensor([0, 1, 0, -1], dtype=_MAT_DTYPE)[q]
            G_inv = G_inv @ _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], ones)  # rotate by +pi/2*i

        if self.xint > 0:
            t = (_rand(batch_size, 2) * 2 - 1) * self.xint_max
            t = torch.where(_rand(batch_size, 1) < self.xint * p, t, torch.zeros_like(t))
            if debug_percentile is not None:
                t = torch.full_like(t, float(self.xint_max)) * (debug_percentile * 2 - 1)
            t = t.to(_MAT_DTYPE)
            G_inv = G_inv @ _translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height), ones)

        if self.scale > 0:
            s = torch.exp2(_randn(batch_size) * self.scale_std)
            s = torch.where(_rand(batch_size) < self.scale * p, s, torch.ones_like(s))
            if debug_percentile is not None:
                s = torch.full_like(s, 1.0) * torch.exp2(_erfinv(debug_percentile) * self.scale_std)
            s = s.to(_MAT_DTYPE)
            G_inv = G_inv @ _scale2d(1 / s, 1 / s, ones)

        # Rotation before and after the anisotropic scaling, each with p_rot: P(pre or post) = rotate * p.
        p_rot = 1 - math.sqrt(min(max(1 - self.rotate * p, 0.0), 1.0))
        if self.rotate > 0:
            theta = (_rand(batch_size) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(_rand(batch_size) < p_rot, theta, torch.zeros_like(theta))
            if debug_percentile is not None:
                theta = torch.full_like(theta, 1.0) * ((debug_percentile * 2 - 1) * np.pi * self.rotate_max)
            G_inv = G_inv @ _rotate2d(theta.to(_MAT_DTYPE), ones)  # inverse of a rotation by -theta

        if self.aniso > 0:
            s = torch.exp2(_randn(batch_size) * self.aniso_std)
            s = torch.where(_rand(batch_size) < self.aniso * p, s, torch.ones_like(s))
            if debug_percentile is not None:
                s = torch.full_like(s, 1.0) * torch.exp2(_erfinv(debug_percentile) * self.aniso_std)
            s = s.to(_MAT_DTYPE)
            G_inv = G_inv @ _scale2d(1 / s, s, ones)

        if self.rotate > 0:
            theta = (_rand(batch_size) * 2 - 1) * np.pi * self.rotate_max
            theta = torch.where(_rand(batch_size) < p_rot, theta, torch.zeros_like(theta))
            if debug_percentile is not None:
                theta = torch.zeros_like(theta)
            G_inv = G_inv @ _rotate2d(theta.to(_MAT_DTYPE), ones)

        if self.xfrac > 0:
            t = _randn(batch_size, 2) * self.xfrac_std
            t = torch.where(_rand(batch_size, 1) < self.xfrac * p, t, torch.zeros_like(t))
            if debug_percentile is not None:
                t = torch.full_like(t, 1.0) * (_erfinv(debug_percentile) * self.xfrac_std)
            t = t.to(_MAT_DTYPE)
            G_inv = G_inv @ _translate2d(-t[:, 0] * width, -t[:, 1] * height, ones)
        return G_inv

    def _color_matrix(self, batch_size, num_channels, p, debug_percentile):
        """C [N, 4, 4] (float64, host): the drawn colour transforms on homogeneous RGB, in -> out."""
        ones = torch.ones([batch_size], dtype=_MAT_DTYPE)
        I_4 = torch.eye(4, dtype=_MAT_DTYPE)
        C = I_4.expand(batch_size, 4, 4)
        v = torch.tensor([1, 1, 1, 0], dtype=_MAT_DTYPE) / np.sqrt(3)  # luma axis
        vv = torch.outer(v, v)

        if self.brightness > 0:
            b = _randn(batch_size) * self.brightness_std
            b = torch.where(_rand(batch_size) < self.brightness * p, b, torch.zeros_like(b))
            if debug_percentile is not None:
                b = torch.full_like(b, 1.0) * (_erfinv(debug_percentile) * self.brightness_std)
            b = b.to(_MAT_DTYPE)
            C = _translate3d(b, b, b, ones) @ C

        if self.contrast > 0:
            c = torch.exp2(_randn(batch_size) * self.contrast_std)
            c = torch.where(_rand(batch_size) < self.contrast * p, c, torch.ones_like(c))
            if debug_percentile is not None:
                c = torch.full_like(c, 1.0) * torch.exp2(_erfinv(debug_percentile) * self.contrast_std)
            c = c.to(_MAT_DTYPE)
            C = _scale3d(c, c, c, ones) @ C

        if self.lumaflip > 0:
            i = torch.floor(_rand(batch_size, 1, 1) * 2)
            i = torch.where(_rand(batch_size, 1, 1) < self.lumaflip * p, i, torch.zeros_like(i))
            if debug_percentile is not None:
                i = torch.full_like(i, torch.floor(debug_percentile * 2))
            C = (I_4 - 2 * vv * i.to(_MAT_DTYPE)) @ C  # Householder reflection

        if self.hue > 0 and num_channels > 1:
            theta = (_rand(batch_size) * 2 - 1) * np.pi * self.hue_max
            theta = torch.where(_rand(batch_size) < self.hue * p, theta, torch.zeros_like(theta))
            if debug_percentile is not None:
                theta = torch.full_like(theta, 1.0) * ((debug_percentile * 2 - 1) * np.pi * self.hue_max)
            C = _rotate3d((1 / np.sqrt(3),) * 3, theta.to(_MAT_DTYPE), ones) @ C  # about the luma axis

        if self.saturation > 0 and num_channels > 1:
            s = torch.exp2(_randn(batch_size, 1, 1) * self.saturation_std)
            s = torch.where(_rand(batch_size, 1, 1) < self.saturation * p, s, torch.ones_like(s))
            if debug_percentile is not None:
                s = torch.full_like(s, 1.0) * torch.exp2(_erfinv(debug_percentile) * self.saturation_std)
            C = (vv + (I_4 - vv) * s.to(_MAT_DTYPE)) @ C
        return C

    # -----------------------------------------------------------------------------------------
    # Execution

    def _apply_geometry(self, images, G_inv):
        """Execute the per-sample geometric transforms ``G_inv`` (output pixel -> input pixel).

        Samples whose transform is the identity pass unchanged; samples whose transform maps
        pixel centres onto pixel centres (any mix of x-flips, quarter turns and integer shifts and
        nothing else) are copied pixel by pixel with reflection at the borders, which is what the
        resampling computes in exact arithmetic for a symmetric filter; all the others are
        resampled (:meth:`_resample`).
        """
        batch_size, num_channels, height, width = images.shape
        device = images.device
        cx, cy = (width - 1) / 2, (height - 1) / 2
        ones = torch.ones([batch_size], dtype=G_inv.dtype)  # G_inv is on the host
        # The same transform in plain pixel indices (origin at the top-left pixel's centre).
        G_pix = _translate2d(cx, cy, ones) @ G_inv @ _translate2d(-cx, -cy, ones)
        lin, shift = G_pix[:, :2, :2], G_pix[:, :2, 2]
        nonzero = lin != 0
        is_perm = (((lin == 1) | (lin == -1) | ~nonzero).flatten(1).all(dim=1)
                   & (nonzero.sum(dim=1) == 1).all(dim=1) & (nonzero.sum(dim=2) == 1).all(dim=1))
        is_blit = is_perm & (shift == torch.round(shift)).all(dim=1)
        is_identity = (G_inv == torch.eye(3, dtype=G_inv.dtype)).flatten(1).all(dim=1)
        blit_idx = (is_blit & ~is_identity).nonzero()[:, 0]
        resample_idx = (~is_blit & ~is_identity).nonzero()[:, 0]
        out = images
        for idx, run, mats in ((blit_idx, self._blit, G_pix), (resample_idx, self._resample, G_inv)):
            n = int(idx.numel())
            if n == batch_size:
                return run(images, mats)
            if n > 0:
                idx_dev = host_to_device(idx, device)
                out = out.index_copy(0, idx_dev, run(images.index_select(0, idx_dev), mats[idx]))
        return out

    @staticmethod
    def _blit(x, G_pix):
        """Exact pixel copy for signed-permutation + integer-shift transforms, reflect borders."""
        n, num_channels, height, width = x.shape
        device = x.device
        m = host_to_device(G_pix.round().long(), device)  # exact small integers
        ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
        ys, xs = ys.reshape(1, -1), xs.reshape(1, -1)
        sx = m[:, 0, 0, None] * xs + m[:, 0, 1, None] * ys + m[:, 0, 2, None]  # [n, H*W]
        sy = m[:, 1, 0, None] * xs + m[:, 1, 1, None] * ys + m[:, 1, 2, None]

        def reflect(s, size):
            # F.pad(mode='reflect') indexing, at most size - 1 pixels out; beyond that: zeros.
            s = torch.where(s < 0, -s, s)
            s = torch.where(s > size - 1, 2 * (size - 1) - s, s)
            return s, (s >= 0) & (s <= size - 1)

        sx, okx = reflect(sx, width)
        sy, oky = reflect(sy, height)
        ok = okx & oky
        src = torch.where(ok, sy * width + sx, 0)
        y = x.reshape(n, num_channels, -1).gather(2, src[:, None, :].expand(n, num_channels, -1))
        y = torch.where(ok[:, None, :], y, torch.zeros_like(y))
        return y.reshape(n, num_channels, height, width)

    def _resample(self, x, G):
        """Resample with reflect padding, 2x wavelet upsampling, bilinear sampling, 2x downsampling.

        ``G`` ([n, 3, 3] float64, on the host) maps output to input pixel coordinates measured from
        the image centre.
        """
        n, num_channels, height, width = x.shape
        device = x.device
        ones = torch.ones([n], dtype=G.dtype)
        # Sampling positions need at least float32 (in float16 they would be off by ~0.5 px at 1024).
        in_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))

        # Reflect padding wide enough to cover where the output corners land, plus the filter.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=G.dtype)
        cp = G @ corners.t()                                           # [n, xyz, corner]
        hz_pad = self.Hz_geom.shape[0] // 4
        px, py = cp[:, 0, :], cp[:, 1, :]
        need = [float((-px).max()) - cx, float((-py).max()) - cy, float(px.max()) - cx, float(py.max()) - cy]
        limit = [width - 1, height - 1, width - 1, height - 1]
        mx0, my0, mx1, my1 = (int(math.ceil(min(max(m + hz_pad * 2, 0.0), lim))) for m, lim in zip(need, limit))

        x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
        G = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, ones) @ G

        # 2x upsampling (orthogonal wavelet), so that bilinear sampling sees a band-limited image.
        f = self.Hz_geom.to(device=device, dtype=x.dtype)
        x = upsample2d(x, f, up=2, impl=self.impl)
        G = _scale2d(2, 2, ones) @ G @ _scale2d(0.5, 0.5, ones)
        G = _translate2d(-0.5, -0.5, ones) @ G @ _translate2d(0.5, 0.5, ones)

        # Sample the output (with 2 * hz_pad extra pixels per side for the downsampling filter).
        out_h, out_w = (height + hz_pad * 2) * 2, (width + hz_pad * 2) * 2
        G = _scale2d(2 / x.shape[3], 2 / x.shape[2], ones) @ G @ _scale2d(out_w / 2, out_h / 2, ones)
        grid = _affine_grid(host_to_device(G[:, :2, :], device), out_h, out_w, x.dtype)
        x = _grid_sample(x, grid)

        x = downsample2d(x, f, down=2, padding=-hz_pad * 2, flip_filter=True, impl=self.impl)
        return x.to(in_dtype)

    @staticmethod
    def _apply_color(images, C):
        """out = C[:3, :3] @ rgb + C[:3, 3] per pixel, as elementwise products.

        Elementwise rather than matmul: bit-exact for identity rows (untouched samples stay
        unchanged) and never run in TF32.
        """
        batch_size, num_channels, height, width = images.shape
        C = C.to(images.dtype)
        if num_channels == 3:
            m = C[:, :3, :, None, None]                                # [N, 3, 4, 1, 1]
            out = m[:, :, 3] + m[:, :, 0] * images[:, 0:1]
            out = out + m[:, :, 1] * images[:, 1:2]
            return out + m[:, :, 2] * images[:, 2:3]
        C = C[:, :3, :].mean(dim=1)                                    # [N, 4]: luma of the RGB map
        gain = C[:, :3].sum(dim=1)[:, None, None, None]
        return images * gain + C[:, 3, None, None, None]

    def _apply_imgfilter(self, images, p, debug_percentile):
        batch_size, num_channels, height, width = images.shape
        device = images.device
        fbank = self._fbank_host
        num_bands = fbank.shape[0]
        expected_power = torch.tensor([10, 1, 1, 1], dtype=torch.float32) / 13  # 1/f spectrum
        g = torch.ones([batch_size, num_bands])
        touched = torch.zeros([batch_size], dtype=torch.bool)
        for i, band_strength in enumerate(self.imgfilter_bands):
            t_i = torch.exp2(torch.randn([batch_size]) * self.imgfilter_std)
            t_i = torch.where(torch.rand([batch_size]) < self.imgfilter * p * band_strength,
                              t_i, torch.ones_like(t_i))
            if debug_percentile is not None:
                gain = torch.exp2(torch.erfinv(debug_percentile * 2 - 1) * self.imgfilter_std)
                t_i = torch.full_like(t_i, 1.0) * gain if band_strength > 0 else torch.ones_like(t_i)
            touched = touched | (t_i != 1)
            t = torch.ones([batch_size, num_bands])
            t[:, i] = t_i
            t = t / (expected_power * t.square()).sum(dim=-1, keepdim=True).sqrt()  # keep power
            g = g * t
        hz = host_to_device((g.double() @ fbank.double()).to(images.dtype), device)  # [N, taps]
        touched = host_to_device(touched, device)
        hz = hz[:, None, :].repeat([1, num_channels, 1]).reshape([batch_size * num_channels, 1, -1])
        pad = fbank.shape[1] // 2
        x = images.reshape([1, batch_size * num_channels, height, width])
        x = F.pad(x, [pad, pad, pad, pad], mode="reflect")
        x = F.conv2d(x, hz[:, :, None, :], groups=batch_size * num_channels)
        x = F.conv2d(x, hz[:, :, :, None], groups=batch_size * num_channels)
        x = x.reshape([batch_size, num_channels, height, width])
        # Samples with no band amplified keep their pixels exactly (the bank sums to a delta only
        # up to rounding).
        return torch.where(touched[:, None, None, None], x, images)

    def _apply_noise(self, images, p, debug_percentile):
        """Additive Gaussian noise with sigma |N(0, noise_std)| per sample."""
        batch_size = images.shape[0]
        device = images.device
        sigma = _randn(batch_size, 1, 1, 1).abs() * self.noise_std
        sigma = torch.where(_rand(batch_size, 1, 1, 1) < self.noise * p, sigma, torch.zeros_like(sigma))
        if debug_percentile is not None:
            sigma = torch.full_like(sigma, 1.0) * (torch.erfinv(debug_percentile) * self.noise_std)
        # sigma is 0 for untouched samples, which therefore stay bit-identical.
        sigma = host_to_device(sigma.to(images.dtype), device)
        return images + torch.randn_like(images) * sigma

    def _apply_cutout(self, images, p, debug_percentile):
        """Zero a square of ``cutout_size`` times the image size at a random centre."""
        batch_size, _, height, width = images.shape
        device = images.device
        size = torch.full([batch_size, 2, 1, 1, 1], self.cutout_size)
        size = torch.where(_rand(batch_size, 1, 1, 1, 1) < self.cutout * p, size, torch.zeros_like(size))
        center = _rand(batch_size, 2, 1, 1, 1)
        if debug_percentile is not None:
            size = torch.full_like(size, self.cutout_size)
            center = torch.full_like(center, 1.0) * debug_percentile
        size, center = host_to_device(size, device), host_to_device(center, device)
        coord_x = torch.arange(width, device=device).reshape([1, 1, 1, -1])
        coord_y = torch.arange(height, device=device).reshape([1, 1, -1, 1])
        mask_x = ((coord_x + 0.5) / width - center[:, 0]).abs() >= size[:, 0] / 2
        mask_y = ((coord_y + 0.5) / height - center[:, 1]).abs() >= size[:, 1] / 2
        mask = torch.logical_or(mask_x, mask_y)
        return torch.where(mask, images, torch.zeros_like(images))


# ---------------------------------------------------------------------------------------------

class AdaController:
    """Adaptive discriminator augmentation: steer ``pipe.p`` so that D's overfitting stays at target.

    The overfitting heuristic is r_t = E[sign(D(real))] over the reals D saw since the last update.
    Every ``interval`` D steps the caller calls :meth:`update`, which moves ``p`` by
    ``sign(r_t - target) * batch_size * interval / (kimg * 1000)`` and clamps it at >= 0, so that
    p can go from 0 to 1 in ``kimg`` thousand images (StyleGAN2-ADA's training loop).

    Parameters
    ----------
    pipe : AugmentPipe
        Owner of the ``p`` buffer to steer (any module with a scalar ``p`` buffer works).
    target : float
        Target value of r_t, in [-1, 1] (0.6 in the paper).
    interval : int
        D steps between updates (the caller counts them).
    kimg : float
        Thousands of images for p to move by 1 (500; 100 when fine-tuning).
    batch_size : int
        Images per D step over all processes (the global batch).
    group : torch.distributed process group or None
        Group to all-reduce over when torch.distributed is initialised (default: the world).

    Notes
    -----
    Under torch.distributed every process must call :meth:`update` at the same step (it does one
    all_reduce of two numbers); every process then applies the same change to its ``p``.
    """

    def __init__(self, pipe, target=0.6, interval=4, kimg=500, batch_size=None, group=None):
        p = getattr(pipe, "p", None)
        if not isinstance(p, torch.Tensor) or p.ndim != 0 or not p.is_floating_point():
            raise TypeError("AdaController: pipe must have a scalar floating-point tensor `p` "
                            f"(an AugmentPipe), got {type(pipe).__name__}")
        self.pipe = pipe
        # target is E[sign(D(real))]; batch_size is the global batch
        self.target = check_number("AdaController: target", target, -1, 1)
        self.interval = check_int("AdaController: interval", interval, minimum=1)
        self.kimg = check_number("AdaController: kimg", kimg, minimum=0, min_open=True)
        self.batch_size = check_int("AdaController: batch_size", batch_size, minimum=1)
        self.group = group
        self.rt = None          # r_t of the last update that had data
        self._sum = None        # running sum of sign(logits), float64 tensor on the logits' device
        self._count = None

    @property
    def step(self):
        """The size of one adjustment of p."""
        return self.batch_size * self.interval / (self.kimg * 1000)

    @property
    def p(self):
        return float(self.pipe.p)

    def accumulate(self, real_logits):
        """Add D's logits on (augmented) real images; no host sync."""
        if not isinstance(real_logits, torch.Tensor):
            raise TypeError(f"AdaController.accumulate: real_logits must be a tensor, got {type(real_logits).__name__}")
        x = real_logits.detach()
        if x.numel() == 0:
            return
        s = torch.sign(x).sum(dtype=torch.float64)
        n = torch.full([], float(x.numel()), dtype=torch.float64, device=x.device)
        if self._sum is None:
            self._sum, self._count = s, n
        else:
            self._sum = self._sum + s.to(self._sum.device)
            self._count = self._count + n.to(self._count.device)

    def update(self):
        """Adjust p from the accumulated signs, reset, and return r_t (None when nothing was accumulated)."""
        device = self._sum.device if self._sum is not None else self.pipe.p.device
        stats = (torch.stack([self._sum, self._count]) if self._sum is not None
                 else torch.zeros([2], dtype=torch.float64, device=device))
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=self.group)
        self._sum = self._count = None
        total, count = stats.tolist()
        if count == 0:
            return None
        rt = total / count
        adjust = float(np.sign(rt - self.target)) * self.step
        with torch.no_grad():
            p = self.pipe.p
            p.copy_((p + adjust).clamp(min=0))
        self.rt = rt
        return rt

    def state_dict(self):
        """Plain-data state (loadable with ``torch.load(weights_only=True)``): p and the pending sums."""
        return {"p": float(self.pipe.p),
                "sum": 0.0 if self._sum is None else float(self._sum),
                "count": 0.0 if self._count is None else float(self._count),
                "rt": self.rt}

    def load_state_dict(self, state):
        """Restore p (into the pipe) and the sums pending since the last update."""
        if not isinstance(state, dict) or not {"p", "sum", "count"} <= set(state):
            raise ValueError("AdaController.load_state_dict: expected a dict with keys 'p', 'sum', "
                             f"'count', got {state!r}")
        p = float(state["p"])
        if not (math.isfinite(p) and p >= 0):
            raise ValueError(f"AdaController.load_state_dict: p must be finite and >= 0, got {p}")
        with torch.no_grad():
            self.pipe.p.fill_(p)
        device = self.pipe.p.device
        if float(state["count"]) > 0:
            self._sum = torch.tensor(float(state["sum"]), dtype=torch.float64, device=device)
            self._count = torch.tensor(float(state["count"]), dtype=torch.float64, device=device)
        else:
            self._sum = self._count = None
        self.rt = None if state.get("rt") is None else float(state["rt"])
