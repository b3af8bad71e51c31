"""Modulated convolution (StyleGAN2) and the resampling convolution it stands on.

``modulated_conv2d(x, weight, styles)`` computes, for every sample n::

    w_n[o, i]  = weight[o, i] * styles[n, i]
    d_n[o]     = rsqrt(sum_{i,kh,kw} w_n[o, i]^2 + 1e-8)          (if demodulate)
    y_n        = conv2d_resample(x_n, w_n * d_n, resample_filter, up, down, padding) + noise

exactly as StyleGAN2-ADA's ``training.networks.modulated_conv2d``, including the float16
pre-normalisation of weight and styles.

Two implementations of the same function:

* ``impl='ref'`` (:func:`modulated_conv2d_ref`) follows StyleGAN2-ADA line by line: per-sample
  weights [N, O, I, kh, kw], a grouped convolution when ``fused_modconv`` (else scale
  activations before and after a shared convolution), and the reference upfirdn2d.
* ``impl='native'`` scales the activations instead of the weights, so the convolution runs dense
  with one shared weight for the whole batch (cuDNN/oneDNN's fastest path, not a grouped one):
  the native ``modulate`` kernel applies the styles, the demodulation coefficients come from one
  [N, I] x [I, O] product (the [N, O, I, kh, kw] tensor is never built), the resampling FIR is the
  native upfirdn2d, and one more ``modulate`` pass applies demodulation and noise together.
  ``fused_modconv`` does not change its arithmetic. On CPU, upsampling convolutions run (and
  return) channels_last, where oneDNN's transposed convolution is fastest (see
  ``_channels_last_pays``; wide layers take its weight gradient in NCHW,
  ``_TransposedConvSplitLayout``); the first ``modulate`` then writes its output channels_last, and
  the FIR filter, demodulation and noise run as one ``upfirdn2d_modulate`` pass. Narrow
  non-upsampling layers on CPU keep the weight-scaled form (with native resampling), which
  measured faster there.

Gradients of any order flow through both (every piece is differentiable to any order).
"""
import numpy as np
import torch
import torch.nn.functional as F

from . import _native
from .upfirdn2d import adjoint_params, get_filter_size, output_shape, parse_call, parse_padding, upfirdn2d

__all__ = ["conv2d_resample", "modulate", "modulated_conv2d", "modulated_conv2d_ref", "upfirdn2d_modulate"]


# ---------------------------------------------------------------------------------------------
# conv2d_resample: convolution with FIR up/downsampling, choosing the cheapest equivalent order.

def _conv2d(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])  # conv2d correlates; flip_weight=False asks for a true convolution
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True,
                    flip_filter=False, impl=None):
    """2-D convolution with optional FIR up/downsampling (StyleGAN2-ADA ``conv2d_resample``).

    Parameters
    ----------
    x : [N, C, H, W] tensor.
    w : [O, C // groups, kh, kw] weight, same dtype as ``x``.
    f : FIR filter from :func:`setup_filter`, or None.
    up, down : int >= 1.
    padding : padding relative to the upsampled image (int, [x, y] or [x0, x1, y0, y1]).
    flip_weight : False = convolution, True = correlation (as ``torch.nn.functional.conv2d``).
    impl : implementation of the upfirdn2d steps (None, 'native' or 'ref').
    """
    px0, px1, py0, py1 = _resample_padding(f, up, down, padding)
    kh, kw = w.shape[2:]

    # 1x1 with downsampling only: downsample first (fewer pixels to convolve).
    if kw == 1 and kh == 1 and (down > 1 and up == 1):
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)

    # 1x1 with upsampling only: convolve first.
    if kw == 1 and kh == 1 and (up > 1 and down == 1):
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter, impl=impl)

    # Downsampling only: filter, then strided convolution.
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter, impl=impl)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: strided transposed convolution, then filter.
    if up > 1:
        x, fir_padding = _transposed_conv(x, w, up, (px0, px1, py0, py1), groups, flip_weight)
        x = upfirdn2d(x, f, padding=fir_padding, gain=up ** 2, flip_filter=flip_filter, impl=impl)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
        return x

    # No resampling and symmetric non-negative padding: plain convolution.
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv2d(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case.
    x = upfirdn2d(x, (f if up > 1 else None), up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                  flip_filter=flip_filter, impl=impl)
    x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
    return x


def _resample_padding(f, up, down, padding):
    """conv2d_resample's padding widened by the FIR filter's footprint (x0, x1, y0, y1)."""
    if not isinstance(up, int) or up < 1:
        raise ValueError(f"conv2d_resample: up must be an int >= 1, got {up!r}")
    if not isinstance(down, int) or down < 1:
        raise ValueError(f"conv2d_resample: down must be an int >= 1, got {down!r}")
    fw, fh = get_filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    return px0, px1, py0, py1


class _TransposedConvSplitLayout(torch.autograd.Function):
    """``conv_transpose2d(x, w, stride, padding)`` (groups 1) whose forward and input gradient run
    channels_last and whose weight gradient runs NCHW: on CPU (oneDNN, 2 cores, 512 -> 512 at 64 x
    64, stride 2) channels_last took 163 / 162 ms for those two against NCHW's 227 / 238, but 841 ms
    for the weight gradient against NCHW's 249. Higher-order gradients (path-length
    regularisation) take the plain op's own derivatives."""

    @staticmethod
    def forward(ctx, x, w, stride, padding):
        ctx.save_for_backward(x, w)  # the inputs themselves: a higher-order backward needs their history
        ctx.conv = (stride, padding)
        return F.conv_transpose2d(x.contiguous(memory_format=torch.channels_last), w, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        stride, padding = ctx.conv
        need = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():
            # create_graph: ATen's derivative of the weight-only convolution_backward below drops
            # its dependence on x, so differentiate the plain op instead (same values).
            y = F.conv_transpose2d(x, w, stride=stride, padding=padding)
            grads = iter(torch.autograd.grad(y, [t for t, n in zip((x, w), need) if n], dy, create_graph=True))
            return tuple(next(grads) if n else None for n in need) + (None, None)
        dx = dw = None
        if ctx.needs_input_grad[0]:  # the adjoint of a transposed convolution is the convolution
            dx = F.conv2d(dy.contiguous(memory_format=torch.channels_last), w, stride=stride, padding=padding)
        if ctx.needs_input_grad[1]:  # the weight gradient of conv2d(dy, w) against grad_output x
            dw = torch.ops.aten.convolution_backward(
                x.contiguous(), dy.contiguous(), w, None, [stride, stride], [padding[0], padding[1]], [1, 1],
                False, [0, 0], 1, [False, True, False])[1]
        return dx, dw, None, None


def _split_layout_pays(x, w, groups):
    """Wide CPU layers whose weight needs a gradient: see _TransposedConvSplitLayout."""
    return (x.device.type == "cpu" and groups == 1 and x.shape[1] > 256 and torch.is_grad_enabled()
            and w.requires_grad)


def _transposed_conv(x, w, up, padding, groups, flip_weight, split_layout=False):
    """The strided transposed convolution that starts an upsampling conv2d_resample. Returns its
    output and the padding (x0, x1, y0, y1) of the FIR filter step that must follow.
    ``split_layout`` lets wide CPU layers take _TransposedConvSplitLayout (same result)."""
    out_channels, in_per_group, kh, kw = w.shape
    px0, px1, py0, py1 = padding
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
        w = w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)
    px0 -= kw - 1
    px1 -= kw - up
    py0 -= kh - 1
    py1 -= kh - up
    pxt = max(min(-px0, -px1), 0)
    pyt = max(min(-py0, -py1), 0)
    if split_layout and _split_layout_pays(x, w, groups):
        w = w.flip([2, 3]) if flip_weight and (kh > 1 or kw > 1) else w  # as _conv2d(flip_weight=not ...)
        x = _TransposedConvSplitLayout.apply(x, w, up, (pyt, pxt))
    else:
        x = _conv2d(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
    return x, [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt]


# ---------------------------------------------------------------------------------------------
# modulate: y = x * s[n, c] + noise, the native building block of the dense formulation.

def modulate(x, s, noise=None, impl=None, channels_last=False):
    """Per-(sample, channel) scale plus optional additive noise: ``x * s[:, :, None, None] + noise``.

    Parameters
    ----------
    x : [N, C, H, W] tensor.
    s : [N, C] scales.
    noise : tensor broadcastable to ``x`` (e.g. [N, 1, H, W]) or None.
    channels_last : return the result channels_last whatever ``x``'s layout (the native kernel
        changes the layout in the same pass; otherwise the result follows ``x``'s layout).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"modulate: x must be a 4-D tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(x.shape[:2]):
        raise ValueError(f"modulate: s must be [N, C] = {list(x.shape[:2])}, got "
                         f"{tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__}")
    if noise is not None:
        try:
            torch.broadcast_shapes(noise.shape, x.shape)
        except RuntimeError:
            raise ValueError(f"modulate: noise of shape {tuple(noise.shape)} does not broadcast to "
                             f"x's {tuple(x.shape)}") from None
        noise = noise.to(x.dtype)
    if _native.resolve_impl(impl, "modulate", x.device) == "ref":
        y = x * s.to(x.dtype).reshape(x.shape[0], x.shape[1], 1, 1)
        y = y if noise is None else y + noise
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y
    return torch.ops.retina_fast.modulate(x, s, noise, channels_last)


if _native.AVAILABLE:
    @torch.library.register_fake("retina_fast::modulate")
    def _modulate_fake(x, s, noise, channels_last=False):
        if channels_last:
            return torch.empty_like(x, memory_format=torch.channels_last)
        return torch.empty_like(x)

    def _setup_modulate(ctx, inputs, output):
        x, s, noise = inputs[:3]
        ctx.save_for_backward(x, s)
        ctx.noise_shape = None if noise is None else noise.shape

    @torch.library.register_fake("retina_fast::modulate_backward")
    def _modulate_backward_fake(dy, x, s, need_dx, need_ds):
        return (torch.empty_like(x) if need_dx else None,
                s.new_empty(s.shape) if need_ds else None)

    def _modulate_backward(ctx, dy):
        x, s = ctx.saved_tensors
        need_dx, need_ds = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx = ds = None
        if not torch.is_grad_enabled():
            # A first-order backward (no create_graph): one fused pass over dy and x, instead of
            # dx plus a dy * x product the size of the activations. The native op has no
            # derivative of its own, so higher orders take the composite formulas below.
            if need_dx or need_ds:
                dx, ds = torch.ops.retina_fast.modulate_backward(dy, x, s, need_dx, need_ds)
        else:
            dx = torch.ops.retina_fast.modulate(dy, s, None) if need_dx else None
            if need_ds:
                if dy.is_contiguous() and x.is_contiguous():  # batched dot product, no temporary
                    ds = torch.einsum("nchw,nchw->nc", dy, x)
                else:  # einsum would copy channels_last operands to NCHW first
                    ds = (dy * x).sum([2, 3])
                ds = ds.to(s.dtype)
        dnoise = None
        if ctx.noise_shape is not None and ctx.needs_input_grad[2]:
            dnoise = dy.sum_to_size(ctx.noise_shape)
        return dx, ds, dnoise, None

    torch.library.register_autograd("retina_fast::modulate", _modulate_backward, setup_context=_setup_modulate)


# ---------------------------------------------------------------------------------------------
# upfirdn2d_modulate: the FIR step of an upsampling modulated convolution, with its demodulation
# and noise, in one pass over the layer's output (CPU).

def upfirdn2d_modulate(x, f, s, noise=None, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """``modulate(upfirdn2d(x, f, up, down, padding, flip_filter, gain), s, noise)``.

    The native CPU kernel applies the per-(sample, channel) scale ``s`` [N, C] and the noise while
    each filtered row is still in cache, and its backward returns both gradients (``s * adjoint(dy)``
    and ``sum(adjoint(dy) * x)``) from one pass. Elsewhere (CUDA, 1-D filters, ``impl='ref'``) it
    runs the two ops in turn; the result is the same up to rounding.
    """
    x_ok = isinstance(x, torch.Tensor) and x.ndim == 4
    if not x_ok or not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(x.shape[:2]):
        raise ValueError(f"upfirdn2d_modulate: s must be [N, C] = "
                         f"{list(x.shape[:2]) if x_ok else '[N, C] of a 4-D x'}, got "
                         f"{tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__}")
    fused = (_native.resolve_impl(impl, "upfirdn2d_modulate", x.device) == "native"
             and x.device.type == "cpu" and isinstance(f, torch.Tensor) and f.ndim == 2)
    if not fused:
        y = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)
        return modulate(y, s, noise, impl=impl)
    f, up, down, pad = parse_call(x, f, up, down, padding)
    if noise is not None:
        _check_noise(noise, output_shape(x, f.shape, up, down, pad), op="upfirdn2d_modulate")
        noise = noise.to(x.dtype)
    return torch.ops.retina_fast.upfirdn2d_modulate(x, f, *up, *down, *pad, bool(flip_filter), float(gain),
                                                    s, noise)


if _native.AVAILABLE:
    @torch.library.register_fake("retina_fast::upfirdn2d_modulate")
    def _upfirdn2d_modulate_fake(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain, s, noise):
        return torch.ops.retina_fast.upfirdn2d.default(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip, gain)

    @torch.library.register_fake("retina_fast::upfirdn2d_modulate_backward")
    def _upfirdn2d_modulate_backward_fake(dy, x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip,
                                          gain, s, need_dx, need_ds):
        return (torch.empty_like(x) if need_dx else None, s.new_empty(s.shape) if need_ds else None)

    def _setup_upfirdn2d_modulate(ctx, inputs, output):
        x, f, *params = inputs[:12]
        s, noise = inputs[12:]
        ctx.save_for_backward(x, f, s)
        ctx.params = params
        ctx.noise_shape = None if noise is None else noise.shape

    def _upfirdn2d_modulate_backward(ctx, dy):
        x, f, s = ctx.saved_tensors
        adjoint = adjoint_params(ctx.params, f.shape, x.shape[2:], dy.shape[2:])
        need_dx, need_ds = ctx.needs_input_grad[0], ctx.needs_input_grad[12]
        dx = ds = None
        if not torch.is_grad_enabled():
            # First order: one fused pass. Higher orders take the composite below (the fused
            # backward has no derivative of its own).
            if need_dx or need_ds:
                dx, ds = torch.ops.retina_fast.upfirdn2d_modulate_backward(dy, x, f, *adjoint, s, need_dx, need_ds)
        else:
            g = torch.ops.retina_fast.upfirdn2d(dy, f, *adjoint)
            dx = modulate(g, s, None) if need_dx else None
            ds = (g * x).sum([2, 3]).to(s.dtype) if need_ds else None
        dnoise = None
        if ctx.noise_shape is not None and ctx.needs_input_grad[13]:
            dnoise = dy.sum_to_size(ctx.noise_shape)
        return (dx,) + (None,) * 11 + (ds, dnoise)

    torch.library.register_autograd("retina_fast::upfirdn2d_modulate", _upfirdn2d_modulate_backward,
                                    setup_context=_setup_upfirdn2d_modulate)


# ---------------------------------------------------------------------------------------------
# modulated_conv2d.

def _check_modconv(x, weight, styles, noise):
    for name, t in (("x", x), ("weight", weight), ("styles", styles)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"modulated_conv2d: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"modulated_conv2d: {name} must be floating point, got {t.dtype}")
    if weight.ndim != 4:
        raise ValueError(f"modulated_conv2d: weight must be [O, I, kh, kw], got shape {tuple(weight.shape)}")
    out_channels, in_channels, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"modulated_conv2d: x must be [N, {in_channels}, H, W] for this weight, got shape {tuple(x.shape)}")
    if tuple(styles.shape) != (x.shape[0], in_channels):
        raise ValueError(f"modulated_conv2d: styles must be [N, I] = [{x.shape[0]}, {in_channels}], got shape {tuple(styles.shape)}")
    for name, t in (("weight", weight), ("styles", styles), ("noise", noise)):
        if isinstance(t, torch.Tensor) and t.device != x.device:
            raise ValueError(f"modulated_conv2d: {name} is on {t.device} but x is on {x.device}")
    if noise is not None and not isinstance(noise, torch.Tensor):
        raise TypeError(f"modulated_conv2d: noise must be a tensor or None, got {type(noise).__name__}")


def _check_noise(noise, out_shape, op="modulated_conv2d"):
    # The output shape is only known after the convolution, so this runs late in both impls.
    try:
        torch.broadcast_shapes(noise.shape, out_shape)
    except RuntimeError:
        raise ValueError(f"{op}: noise of shape {tuple(noise.shape)} does not broadcast "
                         f"to the output shape {tuple(out_shape)}") from None


def _prenormalize(x, weight, styles, demodulate):
    # float16 would overflow in the per-sample weights: rescale (demodulation undoes it).
    if x.dtype == torch.float16 and demodulate:
        in_channels, kh, kw = weight.shape[1:]
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    return weight, styles


def _channels_last_pays(x, up):
    """Run an upsampling convolution in channels_last on CPU? Measured here (2 cores, oneDNN):
    the strided transposed convolution is 1.4-2x faster in channels_last, and the native modulate
    and upfirdn2d kernels keep that layout (so the result is channels_last). Its weight gradient is
    ~3x slower than NCHW's for wide layers, which therefore take it in NCHW
    (_TransposedConvSplitLayout). Plain (up=1) convolutions measured slower end to end in
    channels_last once the layout changes are paid, so they stay NCHW."""
    return x.device.type == "cpu" and up > 1 and x.shape[1] >= 8


def _weights_scaled_pays(x, weight, up, down):
    """Scale the (small) weights and run one grouped convolution, rather than scale the (large)
    activations around a dense one? Measured with benchmarks/modconv_formulations.py:

    - CPU (2 cores, oneDNN), narrow non-resampling layers: the grouped convolution costs the same
      as the dense one, so the two activation passes are pure loss (64 -> 32 at 512 x 512: the
      dense formulation ran 0.87x / 0.72x fwd / fwd+bwd of this one).
    - H100 (cuDNN), float16 non-resampling layers: grouped 0.71 / 1.90 ms against dense 0.78 /
      2.49 ms (64 -> 32 at 512 x 512), 0.70 / 1.77 against 0.73 / 1.99 (512 -> 512 at 64 x 64).
      In float32 and whenever the layer resamples, dense won there (64 -> 32 at 512 up=2 fp32:
      3.3 / 7.7 ms against 6.1 / 11.1), so those stay dense.
    """
    if up != 1:
        return False
    if x.device.type == "cpu":
        return weight.shape[0] < 256
    return x.device.type == "cuda" and x.dtype == torch.float16 and down == 1


def _fused_epilogue_pays(x, weight, up, down, f, demodulate):
    """Filter, demodulate and add noise in one upfirdn2d_modulate pass? On CPU, for upsampling
    layers, whose output is the largest tensor of the layer: this saves a full read and write of
    it forward and backward (64 -> 32 at 512 x 512, up=2: ~40 ms of each ~80 ms pass). The fused
    kernel is CPU-only; CUDA keeps separate filter and modulate kernels."""
    return (x.device.type == "cpu" and up > 1 and down == 1 and demodulate and weight.shape[2:] != (1, 1)
            and isinstance(f, torch.Tensor) and f.ndim == 2)


def _demodulation(styles, weight):
    """d[n, o] = rsqrt(sum_{i,k} (w[o,i,k] s[n,i])^2 + 1e-8) as one small matmul:
    sum_i s[n,i]^2 sum_k w[o,i,k]^2, without building the [N, O, I, kh, kw] weights."""
    return (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True, impl=None):
    """StyleGAN2 modulated convolution (see the module docstring for the exact semantics).

    Parameters
    ----------
    x : [N, I, H, W] activations (float16/32/64).
    weight : [O, I, kh, kw] shared weight.
    styles : [N, I] per-sample input-channel scales.
    noise : tensor broadcastable to the output (e.g. [N, 1, H', W']), added last, or None.
    up, down : int resampling factors.
    padding : padding relative to the upsampled image.
    resample_filter : FIR filter from :func:`setup_filter` (used when up or down > 1).
    demodulate : normalise each output channel's effective weight to unit L2 norm.
    flip_weight : False = convolution, True = correlation.
    fused_modconv : reference impl only: grouped convolution (True) or scaled activations.
    impl : None, 'native' or 'ref'.

    Returns
    -------
    [N, O, H', W'] tensor of ``x``'s dtype.
    """
    _check_modconv(x, weight, styles, noise)
    if _native.resolve_impl(impl, "modulated_conv2d", x.device) == "ref":
        return modulated_conv2d_ref(x, weight, styles, noise, up, down, padding, resample_filter,
                                    demodulate, flip_weight, fused_modconv)
    if _weights_scaled_pays(x, weight, up, down):
        return _weight_scaled(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                              flip_weight, True, impl="native")
    weight, styles = _prenormalize(x, weight, styles, demodulate)
    # The layout change rides on the modulation pass (and its backward hands dx back in x's layout).
    x = modulate(x, styles, impl="native", channels_last=_channels_last_pays(x, up))
    if _fused_epilogue_pays(x, weight, up, down, resample_filter, demodulate):
        pads = _resample_padding(resample_filter, up, down, padding)
        x, fir_padding = _transposed_conv(x, weight.to(x.dtype), up, pads, 1, flip_weight, split_layout=True)
        return upfirdn2d_modulate(x, resample_filter, _demodulation(styles, weight).to(x.dtype), noise,
                                  padding=fir_padding, gain=up ** 2, impl="native")
    x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        flip_weight=flip_weight, impl="native")
    if noise is not None:
        _check_noise(noise, x.shape)
    if demodulate:
        dcoefs = _demodulation(styles, weight).to(x.dtype)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dcoefs, noise)):
            return modulate(x, dcoefs, noise, impl="native")
        # Nothing to differentiate: scale x (our own temporary) in place rather than fault in a
        # fresh output as large as the layer's.
        x.mul_(dcoefs.reshape(x.shape[0], x.shape[1], 1, 1))
        return x if noise is None else x.add_(noise.to(x.dtype))
    if noise is not None:
        return x + noise.to(x.dtype)
    return x


def modulated_conv2d_ref(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                         demodulate=True, flip_weight=True, fused_modconv=True):
    """Reference modulated convolution: StyleGAN2-ADA's algorithm on the reference upfirdn2d."""
    _check_modconv(x, weight, styles, noise)
    return _weight_scaled(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                          flip_weight, fused_modconv, impl="ref")


def _weight_scaled(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                   flip_weight, fused_modconv, impl):
    """StyleGAN2-ADA's formulation: per-sample weights and a grouped convolution (fused), or
    scaled activations around a shared one; ``impl`` picks the upfirdn2d used for resampling."""
    n = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    weight, styles = _prenormalize(x, weight, styles, demodulate)

    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight, impl=impl)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            _check_noise(noise, x.shape)
            x = x + noise.to(x.dtype)
        return x

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=n, flip_weight=flip_weight, impl=impl)
    x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        _check_noise(noise, x.shape)
        x = x + noise.to(x.dtype)
    return x
