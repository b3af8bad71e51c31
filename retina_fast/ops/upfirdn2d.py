"""upfirdn2d: pad, upsample, FIR-filter and downsample a batch of 2-D images in one pass.

Semantics are those of StyleGAN2-ADA / StyleGAN3 ``torch_utils.ops.upfirdn2d`` so that users can
swap it in. For each channel of ``x`` ([N, C, H, W]):

1. upsample by inserting ``up - 1`` zeros after each pixel;
2. pad by ``padding`` zeros (relative to the upsampled image; negative values crop);
3. convolve with the FIR filter ``f`` (flipped unless ``flip_filter``; a 1-D ``f`` is separable,
   applied along x then y), scaled by ``gain ** (f.ndim / 2)``, keeping only outputs whose
   footprint lies inside the padded image;
4. keep every ``down``-th pixel.

Output size per axis: ``(in * up + pad0 + pad1 - taps) // down + 1``.

``impl='native'`` runs our C++/CUDA kernel (polyphase: only taps that land on real samples are
visited); ``impl='ref'`` runs :func:`upfirdn2d_ref`, the slow, obvious version below. The filter is
a constant: no gradient flows into ``f`` (as in the StyleGAN2-ADA CUDA op). Gradients of any order
flow into ``x``: the backward of upfirdn2d is itself an upfirdn2d.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format  # the rule ATen's suggest_memory_format follows

from . import _native

__all__ = ["setup_filter", "upfirdn2d", "upfirdn2d_ref", "upsample2d", "downsample2d", "filter2d",
           "parse_padding", "get_filter_size", "parse_call", "output_shape"]


# ---------------------------------------------------------------------------------------------
# Argument parsing (shared by both impls, so bad arguments fail the same way).

def _parse_scaling(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [int(value), int(value)]
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"upfirdn2d: {name} must be an int or [x, y] ints, got {value!r}")
    sx, sy = int(value[0]), int(value[1])
    if sx < 1 or sy < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1, got {value!r}")
    return sx, sy


def parse_padding(padding):
    """Padding (x0, x1, y0, y1) from an int, [x, y] or [x0, x1, y0, y1] ints; TypeError otherwise."""
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        padding = [int(padding), int(padding)]
    if (not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4)
            or not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in padding)):
        raise TypeError(f"upfirdn2d: padding must be an int, [x, y] or [x0, x1, y0, y1] ints, got {padding!r}")
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return tuple(int(p) for p in padding)


def get_filter_size(f):
    """(fw, fh) of a 1-D or 2-D filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


# StyleGAN2-ADA's conv2d_resample.py calls these by their private names; kept so it can use this module.
_parse_padding, _get_filter_size = parse_padding, get_filter_size


def _check_inputs(x, f):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"upfirdn2d: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"upfirdn2d: x must be floating point, got {x.dtype}")
    if f is None:
        return torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"upfirdn2d: f must be a torch.Tensor or None, got {type(f).__name__}")
    if not f.is_floating_point():
        raise TypeError(f"upfirdn2d: f must be a floating-point filter, got {f.dtype}")
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"upfirdn2d: f must be a non-empty 1-D or 2-D filter, got shape {tuple(f.shape)}")
    if f.device != x.device:
        raise ValueError(f"upfirdn2d: f is on {f.device} but x is on {x.device}")
    return f


def parse_call(x, f, up, down, padding):
    """Checked (f, up, down, pad) of an upfirdn2d call; up, down as (x, y), pad as (x0, x1, y0, y1)."""
    f = _check_inputs(x, f)
    up, down, pad = _parse_scaling("up", up), _parse_scaling("down", down), parse_padding(padding)
    _check_output_size(x, f, up, pad)
    return f, up, down, pad


def output_shape(x, f_shape, up, down, pad):
    """[N, C, out_h, out_w] of upfirdn2d with a 2-D filter of ``f_shape`` (up, down, pad parsed)."""
    fh, fw = f_shape
    out_h = (x.shape[2] * up[1] + pad[2] + pad[3] - fh) // down[1] + 1
    out_w = (x.shape[3] * up[0] + pad[0] + pad[1] - fw) // down[0] + 1
    return [x.shape[0], x.shape[1], out_h, out_w]


def _check_output_size(x, f, up, pad):
    upx, upy = up
    fw, fh = get_filter_size(f)
    if f.ndim == 1:
        fh = fw
    in_h, in_w = x.shape[2], x.shape[3]
    up_w, up_h = in_w * upx + pad[0] + pad[1], in_h * upy + pad[2] + pad[3]
    if up_w < fw or up_h < fh:
        raise ValueError(
            f"upfirdn2d: padding {list(pad)} leaves an upsampled image of {up_h}x{up_w}, smaller "
            f"than the {fh}x{fw} filter")


# ---------------------------------------------------------------------------------------------
# Public API.

def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1, separable=None):
    """Prepare a FIR filter for :func:`upfirdn2d` (as StyleGAN2-ADA's ``setup_filter``).

    Parameters
    ----------
    f : array-like or None
        ``[fh, fw]`` (non-separable), ``[taps]`` (separable), ``[]`` (impulse) or None (identity).
    normalize : bool
        Scale so that the filter keeps the DC magnitude (sums to 1).
    flip_filter : bool
        Flip the filter.
    gain : float
        Overall signal gain, applied as ``gain ** (f.ndim / 2)``.
    separable : bool or None
        Return a 1-D separable filter; by default only for 1-D input with at least 8 taps.

    Returns
    -------
    torch.Tensor
        float32 filter of shape ``[fh, fw]`` or ``[taps]`` on ``device``.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: f must be a scalar, 1-D or 2-D and non-empty, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("setup_filter: a 2-D filter cannot be made separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """Pad, upsample, filter and downsample a batch of 2-D images (see the module docstring).

    Parameters
    ----------
    x : torch.Tensor
        ``[N, C, H, W]`` float16/32/64 (float16 on CUDA; any dense layout).
    f : torch.Tensor or None
        float FIR filter ``[fh, fw]``, ``[taps]`` (separable) or None (identity).
    up, down : int or [x, y]
        Integer up- and downsampling factors, >= 1.
    padding : int, [x, y] or [x0, x1, y0, y1]
        Padding relative to the upsampled image, in pixels; negative crops.
    flip_filter : bool
        False = convolution, True = correlation.
    gain : float
        Signal gain.
    impl : None, 'native' or 'ref'
        None picks the native kernel when built for ``x``'s device.

    Returns
    -------
    torch.Tensor
        ``[N, C, out_h, out_w]``, same dtype and memory format as ``x``.
    """
    f, up, down, pad = parse_call(x, f, up, down, padding)
    if _native.resolve_impl(impl, "upfirdn2d", x.device) == "ref":
        return upfirdn2d_ref(x, f, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain)
    if f.ndim == 1 and f.shape[0] == 1:
        f = f.to(torch.promote_types(f.dtype, x.dtype)).square()[None]  # separable 1-tap == full 1x1
    if f.ndim == 2:
        return _op(x, f, *up, *down, *pad, bool(flip_filter), float(gain))
    # Separable: horizontal pass, then vertical pass carrying the whole gain.
    y = _op(x, f[None, :], up[0], 1, down[0], 1, pad[0], pad[1], 0, 0, bool(flip_filter), 1.0)
    return _op(y, f[:, None], 1, up[1], 1, down[1], 0, 0, pad[2], pad[3], bool(flip_filter), float(gain))


def upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Slow reference :func:`upfirdn2d` from standard PyTorch ops (zero insertion, pad, conv)."""
    f = _check_inputs(x, f)
    (upx, upy), (downx, downy) = _parse_scaling("up", up), _parse_scaling("down", down)
    padx0, padx1, pady0, pady1 = pad = parse_padding(padding)
    _check_output_size(x, f, (upx, upy), pad)
    n, c, in_h, in_w = x.shape

    x = x.reshape([n, c, in_h, 1, in_w, 1])
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape([n, c, in_h * upy, in_w * upx])

    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]

    # The gain is applied at the wider of the two precisions (a float32 filter on float64 data must
    # not round it to float32 first); otherwise as StyleGAN2-ADA: scale, then cast to x's dtype.
    f = (f.to(torch.promote_types(f.dtype, x.dtype)) * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=c)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=c)
        x = F.conv2d(x, f.unsqueeze(3), groups=c)
    return x[:, :, ::downy, ::downx]


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by ``up`` with FIR filter ``f``; output is ``up`` times the input (plus ``padding``)."""
    upx, upy = _parse_scaling("up", up)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
         pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Downsample by ``down`` with FIR filter ``f``; output is the input divided by ``down``."""
    downx, downy = _parse_scaling("down", down)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
         pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter with FIR ``f``, keeping the input size (plus ``padding``)."""
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ---------------------------------------------------------------------------------------------
# The registered operator: fake (shape) function and autograd.

def _op(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
    return torch.ops.retina_fast.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain)


def adjoint_params(params, f_shape, x_hw, y_hw):
    """The registered op's parameters for the adjoint of upfirdn2d(params): up and down swapped, the
    filter flipped and the padding mirrored, mapping a gradient of the output's size ``y_hw`` back
    to the input's ``x_hw``. ``params`` = (up_x, up_y, down_x, down_y, px0, px1, py0, py1, flip, gain)."""
    upx, upy, downx, downy, px0, px1, py0, py1, flip, gain = params
    (ih, iw), (oh, ow), (fh, fw) = x_hw, y_hw, f_shape
    pad = [fw - px0 - 1, iw * upx - ow * downx + px0 - upx + 1,
           fh - py0 - 1, ih * upy - oh * downy + py0 - upy + 1]
    return (downx, downy, upx, upy, *pad, not flip, gain)


if _native.AVAILABLE:
    @torch.library.register_fake("retina_fast::upfirdn2d")
    def _upfirdn2d_fake(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain):
        shape = output_shape(x, f.shape, (upx, upy), (downx, downy), (px0, px1, py0, py1))
        # The kernels return x's suggested memory format (channels_last stays channels_last).
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=suggest_memory_format(x))

    def _setup_context(ctx, inputs, output):
        x, f, *params = inputs
        ctx.save_for_backward(f)
        ctx.params = params
        ctx.x_hw = (x.shape[2], x.shape[3])

    def _backward(ctx, dy):
        # The adjoint is the op itself, so higher-order gradients come for free.
        (f,) = ctx.saved_tensors
        dx = _op(dy, f, *adjoint_params(ctx.params, f.shape, ctx.x_hw, dy.shape[2:]))
        return (dx,) + (None,) * 11

    torch.library.register_autograd("retina_fast::upfirdn2d", _backward, setup_context=_setup_context)
