"""bias_act: add a bias, apply an activation, scale by a gain and clamp, in one pass.

Semantics of StyleGAN2-ADA ``torch_utils.ops.bias_act``::

    y = clamp(act(x + b.reshape(broadcast along dim), alpha) * gain, -clamp, clamp)

``alpha`` only affects ``lrelu`` (elu/selu use their standard constants, as in the reference);
``gain`` defaults per activation (sqrt(2) for relu, lrelu and swish, else 1); ``clamp=None`` or a
negative value disables clamping. Gradients of any order: the first derivative is a native
kernel (:func:`torch.ops.retina_fast.bias_act_grad`), and the derivative of that is written with
standard differentiable PyTorch ops from the closed-form second derivatives below.
"""
from dataclasses import dataclass
import math

import torch
import torch.nn.functional as F

from . import _native

__all__ = ["ACTIVATIONS", "bias_act", "bias_act_ref"]

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


@dataclass(frozen=True)
class Activation:
    func: object          # reference forward, f(z, alpha)
    second: object        # f''(z, alpha) as differentiable torch ops (None: identically zero)
    def_alpha: float
    def_gain: float


def _sig(z):
    return torch.sigmoid(z)


ACTIVATIONS = {
    "linear": Activation(lambda z, a: z, None, 0.0, 1.0),
    "relu": Activation(lambda z, a: F.relu(z), None, 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda z, a: F.leaky_relu(z, a), None, 0.2, math.sqrt(2)),
    "tanh": Activation(lambda z, a: torch.tanh(z),
                       lambda z, a: -2 * torch.tanh(z) * (1 - torch.tanh(z) ** 2), 0.0, 1.0),
    "sigmoid": Activation(lambda z, a: torch.sigmoid(z),
                          lambda z, a: _sig(z) * (1 - _sig(z)) * (1 - 2 * _sig(z)), 0.0, 1.0),
    "elu": Activation(lambda z, a: F.elu(z),
                      lambda z, a: torch.where(z > 0, torch.zeros_like(z), torch.exp(z)), 0.0, 1.0),
    "selu": Activation(lambda z, a: F.selu(z),
                       lambda z, a: torch.where(z > 0, torch.zeros_like(z),
                                                _SELU_SCALE * _SELU_ALPHA * torch.exp(z)), 0.0, 1.0),
    "softplus": Activation(lambda z, a: F.softplus(z),
                           lambda z, a: _sig(z) * (1 - _sig(z)), 0.0, 1.0),
    "swish": Activation(lambda z, a: torch.sigmoid(z) * z,
                        lambda z, a: _sig(z) * (1 - _sig(z)) * (2 + z * (1 - 2 * _sig(z))), 0.0, math.sqrt(2)),
}


def _parse(x, b, dim, act, alpha, gain, clamp):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"bias_act: x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"bias_act: x must be floating point, got {x.dtype}")
    if act not in ACTIVATIONS:
        raise ValueError(f"bias_act: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"bias_act: b must be a torch.Tensor or None, got {type(b).__name__}")
        if not isinstance(dim, int) or not 0 <= dim < x.ndim:
            raise ValueError(f"bias_act: dim must index a dimension of the {x.ndim}-D x, got {dim!r}")
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias_act: b must be 1-D with x.shape[{dim}] = {x.shape[dim]} "
                             f"elements, got shape {tuple(b.shape)}")
        if b.device != x.device:
            raise ValueError(f"bias_act: b is on {b.device} but x is on {x.device}")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return spec, alpha, gain, clamp


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl=None):
    """Fused bias + activation + gain + clamp.

    Parameters
    ----------
    x : torch.Tensor
        Any shape, float16/32/64 (any dense layout, e.g. channels_last, is kept).
    b : torch.Tensor or None
        1-D bias of length ``x.shape[dim]``.
    dim : int
        Dimension of ``x`` that ``b`` runs along.
    act : str
        One of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
    alpha : float or None
        Negative slope of lrelu (default 0.2).
    gain : float or None
        Output scale (default: the activation's standard gain).
    clamp : float or None
        Clamp the output to [-clamp, clamp]; None disables.
    impl : None, 'native' or 'ref'

    Returns
    -------
    torch.Tensor
        Same shape, dtype and layout as ``x``.
    """
    spec, alpha, gain, clamp = _parse(x, b, dim, act, alpha, gain, clamp)
    if _native.resolve_impl(impl, "bias_act", x.device) == "ref":
        return _ref(x, b, dim, spec, alpha, gain, clamp)
    return torch.ops.retina_fast.bias_act(x, b, dim, act, alpha, gain, clamp)


def bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Slow reference :func:`bias_act` from standard PyTorch ops."""
    return _ref(x, b, dim, *_parse(x, b, dim, act, alpha, gain, clamp))


def _ref(x, b, dim, spec, alpha, gain, clamp):
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]).to(x.dtype)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------
# Registered operators: fake functions and autograd.

def _reduce_to_bias(t, dim):
    return t.sum([i for i in range(t.ndim) if i != dim])


if _native.AVAILABLE:
    @torch.library.register_fake("retina_fast::bias_act")
    def _bias_act_fake(x, b, dim, act, alpha, gain, clamp):
        return torch.empty_like(x)

    @torch.library.register_fake("retina_fast::bias_act_grad")
    def _bias_act_grad_fake(dy, x, b, dim, act, alpha, gain, clamp):
        return torch.empty_like(x)

    def _setup_bias_act(ctx, inputs, output):
        x, b = inputs[0], inputs[1]
        ctx.save_for_backward(x, b)
        ctx.params = inputs[2:]  # dim, act, alpha, gain, clamp

    def _setup_bias_act_grad(ctx, inputs, output):
        dy, x, b = inputs[0], inputs[1], inputs[2]
        ctx.save_for_backward(dy, x, b)
        ctx.params = inputs[3:]

    def _bias_act_backward(ctx, dy):
        x, b = ctx.saved_tensors
        dim = ctx.params[0]
        dx = torch.ops.retina_fast.bias_act_grad(dy, x, b, *ctx.params)
        db = _reduce_to_bias(dx, dim).to(b.dtype) if b is not None and ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None

    def _bias_act_grad_backward(ctx, d_dx):
        # dx = dy * f'(z) * gain * mask(z), z = x + b. It is linear in dy (same op again); its
        # derivative in z is dy * f''(z) * gain * mask, built from differentiable torch ops.
        dy, x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.params
        d_dy = torch.ops.retina_fast.bias_act_grad(d_dx, x, b, *ctx.params)
        d_x = d_b = None
        spec = ACTIVATIONS[act]
        if spec.second is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            z = x if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)]).to(x.dtype)
            d_x = d_dx * dy * (spec.second(z, alpha) * gain)
            if clamp >= 0:
                d_x = d_x * (spec.func(z, alpha) * gain).abs().lt(clamp).to(x.dtype)
            if b is not None and ctx.needs_input_grad[2]:
                d_b = _reduce_to_bias(d_x, dim).to(b.dtype)
        return d_dy, d_x, d_b, None, None, None, None, None

    torch.library.register_autograd("retina_fast::bias_act", _bias_act_backward, setup_context=_setup_bias_act)
    torch.library.register_autograd("retina_fast::bias_act_grad", _bias_act_grad_backward,
                                    setup_context=_setup_bias_act_grad)
