"""bias_act: native vs reference for every activation, gradients to third order, errors."""
import math

import pytest
import torch

from retina_fast.ops import ACTIVATIONS, bias_act, bias_act_ref

pytestmark = pytest.mark.native

ACTS = sorted(ACTIVATIONS)
LAYOUTS = ["contiguous", "channels_last", "strided"]


def _x(layout, dtype, shape=(3, 5, 6, 7)):
    if layout == "strided":
        return torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)[..., ::2]
    x = torch.randn(shape, dtype=dtype) * 2
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("act", ACTS)
def test_native_matches_reference(act, clamp, layout, dtype):
    torch.manual_seed(ACTS.index(act))
    x = _x(layout, dtype).requires_grad_(True)
    b = torch.randn(5, dtype=dtype, requires_grad=True)
    kw = dict(b=b, dim=1, act=act, clamp=clamp, alpha=0.3 if act == "lrelu" else None)
    y_nat = bias_act(x, impl="native", **kw)
    y_ref = bias_act_ref(x, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y_nat, y_ref, **tol)
    if layout == "channels_last":
        assert y_nat.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(y_ref)
    g_nat = torch.autograd.grad(y_nat, (x, b), dy)
    g_ref = torch.autograd.grad(y_ref, (x, b), dy)
    for a, r in zip(g_nat, g_ref):
        torch.testing.assert_close(a, r, **tol)


@pytest.mark.parametrize("dim,shape", [(0, (4, 3)), (1, (2, 4, 3)), (2, (2, 3, 4, 5)), (3, (2, 3, 4, 5))])
def test_bias_along_any_dim(dim, shape):
    x = torch.randn(shape, dtype=torch.float64)
    b = torch.randn(shape[dim], dtype=torch.float64)
    torch.testing.assert_close(bias_act(x, b, dim=dim, act="swish", impl="native"),
                               bias_act_ref(x, b, dim=dim, act="swish"))


def test_default_gains_and_alphas_follow_stylegan():
    x = torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(bias_act(x, act="lrelu", impl="native"), torch.tensor([-0.2, 2.0]) * math.sqrt(2))
    torch.testing.assert_close(bias_act(x, act="relu", impl="native"), torch.tensor([0.0, 2.0]) * math.sqrt(2))
    torch.testing.assert_close(bias_act(x, act="tanh", impl="native"), torch.tanh(x))


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_to_third_order(act):
    torch.manual_seed(0)
    # Keep inputs away from the kinks of relu/lrelu/elu/selu and from the clamp edges.
    x = (torch.rand(2, 3, 4, dtype=torch.float64) * 1.6 + 0.2) * torch.tensor([-1.0, 1.0]).repeat(6)[:4]
    x.requires_grad_(True)
    b = (torch.randn(3, dtype=torch.float64) * 0.05).requires_grad_(True)
    fn = lambda t, bb: bias_act(t, bb, act=act, gain=1.3, clamp=50.0, impl="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    # Third order: differentiate the double-backward once more and compare with the reference.
    def third(f):
        y = f(x, b)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        if not g.requires_grad:
            return torch.zeros_like(x), torch.zeros_like(b)
        (gg,) = torch.autograd.grad((g * g).sum(), x, create_graph=True, materialize_grads=True)
        if not gg.requires_grad:  # piecewise-linear activations: every higher derivative is 0
            return torch.zeros_like(x), torch.zeros_like(b)
        return torch.autograd.grad(gg.sum(), (x, b), materialize_grads=True)
    ref = lambda t, bb: bias_act_ref(t, bb, act=act, gain=1.3, clamp=50.0)  # noqa: E731
    for a, r in zip(third(fn), third(ref)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


def test_opcheck_registered_ops():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    torch.library.opcheck(torch.ops.retina_fast.bias_act.default, (x, b, 1, "lrelu", 0.2, 1.4, 0.5))
    torch.library.opcheck(torch.ops.retina_fast.bias_act.default, (x, None, 1, "tanh", 0.0, 1.0, -1.0))
    dy = torch.randn(2, 3, 4, 5, requires_grad=True)
    torch.library.opcheck(torch.ops.retina_fast.bias_act_grad.default, (dy, x, b, 1, "swish", 0.0, 1.4, -1.0))


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(act="gelu"), ValueError, "act must be one of"),
    (dict(b=torch.randn(4)), ValueError, "b must be 1-D with x.shape"),
    (dict(b=torch.randn(3), dim=5), ValueError, "dim must index"),
    (dict(x=torch.ones(2, 3, dtype=torch.int64)), TypeError, "x must be floating point"),
    (dict(b=[1.0, 2.0, 3.0]), TypeError, "b must be a torch.Tensor"),
])
def test_bad_arguments_raise_clear_errors(impl, kwargs, exc, match):
    args = dict(x=torch.randn(2, 3))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        bias_act(impl=impl, **args)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTS)
def test_cuda_matches_reference(act, layout, dtype):
    torch.manual_seed(0)
    x = _x(layout, torch.float32).to("cuda", dtype).requires_grad_(True)
    b = torch.randn(5, device="cuda", dtype=dtype, requires_grad=True)
    y_nat = bias_act(x, b, act=act, clamp=0.9, impl="native")
    xr = x.float() if dtype == torch.float16 else x
    br = b.float() if dtype == torch.float16 else b
    y_ref = bias_act_ref(xr, br, act=act, clamp=0.9)
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 1e-2}[dtype]
    torch.testing.assert_close(y_nat.float(), y_ref.float(), rtol=tol, atol=tol)
    dy = torch.randn_like(y_nat)
    g_nat = torch.autograd.grad(y_nat, (x, b), dy)
    g_ref = torch.autograd.grad(y_ref, (xr, br), dy.to(y_ref.dtype))
    for a, r in zip(g_nat, g_ref):
        torch.testing.assert_close(a.float(), r.float(), rtol=tol * 10, atol=tol * 10 * max(1.0, r.abs().max().item()))
