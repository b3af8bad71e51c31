"""The fused CPU step of upsampling modulated convolutions: the channels_last upfirdn2d kernel,
upfirdn2d_modulate (filter, scale, noise in one pass) and its backward, and the split-layout
transposed convolution of wide layers. Each against the plain composition of reference ops."""
import pytest
import torch
import torch.nn.functional as F

from retina_fast.ops import modulate, modulated_conv2d, modulated_conv2d_ref, setup_filter, upfirdn2d, upfirdn2d_ref
from retina_fast.ops.modconv import _TransposedConvSplitLayout, upfirdn2d_modulate
from retina_fast.ops.upfirdn2d import adjoint_params

pytestmark = [pytest.mark.native, pytest.mark.usefixtures("one_thread")]

CL = torch.channels_last
# (up, down, padding, filter shape): filter-only with edges cropped and padded (the blocked
# channels_last path), and resampling ones (the generic walk).
CONFIGS = [
    (1, 1, 0, [4, 4]), (1, 1, [3, 3, 3, 3], [4, 4]), (1, 1, [2, -1, 0, 3], [3, 5]), (1, 1, [5, 5, 1, 1], [1, 7]),
    (2, 1, [2, 1, 2, 1], [4, 4]), (1, 2, [1, 1, 1, 1], [4, 4]), ([2, 1], [1, 2], [0, 2, -1, 3], [3, 2]),
]


def _x(shape, dtype, layout, seed=0):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=CL) if layout == "channels_last" else x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [8, 16, 48])
@pytest.mark.parametrize("up,down,padding,fshape", CONFIGS)
def test_channels_last_kernel_matches_reference(up, down, padding, fshape, channels, dtype):
    # Widths 13 and 29 leave partial 8-pixel blocks and edge pixels in every row.
    x = _x((2, channels, 11, 29), dtype, "channels_last").requires_grad_(True)
    f = torch.randn(fshape, generator=torch.Generator().manual_seed(1))
    kw = dict(up=up, down=down, padding=padding, gain=2.0)
    y = upfirdn2d(x, f, impl="native", **kw)
    y_ref = upfirdn2d_ref(x, f, **kw)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, y_ref, **tol)
    assert y.is_contiguous(memory_format=CL)
    dy = torch.randn_like(y_ref)
    torch.testing.assert_close(torch.autograd.grad(y, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0], **tol)


def _composite(x, f, s, noise, **kw):
    return modulate(upfirdn2d_ref(x, f, **kw), s, noise, impl="ref")


@pytest.mark.parametrize("layout,channels", [("contiguous", 3), ("channels_last", 3), ("channels_last", 16)])
@pytest.mark.parametrize("noise_kind", [None, "pixel", "full", "shared"])
@pytest.mark.parametrize("up,down,padding,fshape", CONFIGS[:2] + CONFIGS[4:6])
def test_upfirdn2d_modulate_matches_composite(up, down, padding, fshape, noise_kind, layout, channels):
    dtype = torch.float64
    x = _x((2, channels, 9, 13), dtype, layout).requires_grad_(True)
    f = setup_filter([1, 3, 3, 1]).to(dtype) if fshape == [4, 4] else torch.randn(fshape, dtype=dtype)
    s = (torch.rand(2, channels, dtype=dtype) + 0.5).requires_grad_(True)
    kw = dict(up=up, down=down, padding=padding, gain=4.0)
    out_shape = upfirdn2d_ref(x, f, **kw).shape
    noise = {None: None, "pixel": (2, 1), "full": (2, channels), "shared": (1, 1)}[noise_kind]
    if noise is not None:
        noise = torch.randn(*noise, *out_shape[2:], dtype=dtype).requires_grad_(True)
    args = [t for t in (x, s, noise) if t is not None]
    y = upfirdn2d_modulate(x, f, s, noise, impl="native", **kw)
    y_ref = _composite(x, f, s, noise, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    for a, b in zip(torch.autograd.grad(y, args, dy), torch.autograd.grad(y_ref, args, dy)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("need_dx,need_ds", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("layout,channels", [("contiguous", 3), ("channels_last", 32)])
def test_backward_op_matches_formulas(need_dx, need_ds, layout, channels):
    # The op takes the adjoint's parameters: for the filter-only step with padding 1 on each side
    # of a 4x4 filter the adjoint is the flipped filter with padding 2.
    x = _x((2, channels, 12, 10), torch.float32, layout)  # forward input = adjoint output shape
    dy = _x((2, channels, 11, 9), torch.float32, layout, seed=3)
    f = setup_filter([1, 3, 3, 1])
    s = torch.rand(2, channels) + 0.5
    dx, ds = torch.ops.retina_fast.upfirdn2d_modulate_backward(dy, x, f, 1, 1, 1, 1, 2, 2, 2, 2, True, 4.0,
                                                               s, need_dx, need_ds)
    g = upfirdn2d_ref(dy.double(), f.double(), padding=2, flip_filter=True, gain=4.0)
    assert g.shape == x.shape
    if need_dx:
        torch.testing.assert_close(dx, (g * s.double()[:, :, None, None]).float(), rtol=1e-5, atol=1e-5)
        assert dx.is_contiguous(memory_format=CL) == (layout == "channels_last")
    else:
        assert dx is None
    if need_ds:  # summed in double: matches a float64 sum of 120 products to float32 rounding
        torch.testing.assert_close(ds, (g * x.double()).sum([2, 3]).float(), rtol=1e-5, atol=1e-5)
    else:
        assert ds is None


def test_gradcheck_gradgradcheck_and_opcheck():
    torch.manual_seed(0)
    f = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(1, 1, 10, 12, dtype=torch.float64, requires_grad=True)
    fn = lambda x, s, n: upfirdn2d_modulate(x, f, s, n, up=2, padding=[2, 1, 1, 1], gain=4, impl="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, s, noise))
    assert torch.autograd.gradgradcheck(fn, (x, s, noise))
    xf, sf = x.detach().float(), s.detach().float()
    for xx in (xf, xf.contiguous(memory_format=CL)):
        args = (xx, f.float(), 2, 2, 1, 1, 2, 1, 1, 1, False, 4.0, sf, noise.detach().float())
        torch.library.opcheck(torch.ops.retina_fast.upfirdn2d_modulate.default, args)
    dy = torch.randn(1, 2, 10, 12)
    adjoint = adjoint_params((2, 2, 1, 1, 2, 1, 1, 1, False, 4.0), f.shape, (5, 6), (10, 12))
    torch.library.opcheck(torch.ops.retina_fast.upfirdn2d_modulate_backward.default,
                          (dy, xf, f.float(), *adjoint, sf, True, True))


def test_bad_scale_and_noise_raise_clear_errors():
    x, f = torch.randn(2, 3, 8, 8), setup_filter([1, 3, 3, 1])
    with pytest.raises(ValueError, match="s must be"):
        upfirdn2d_modulate(x, f, torch.ones(3, 2), impl="native")
    with pytest.raises(ValueError, match="upfirdn2d_modulate: noise"):
        upfirdn2d_modulate(x, f, torch.ones(2, 3), torch.randn(2, 1, 4, 4), padding=1, impl="native")


def test_split_layout_transposed_conv_matches_conv_transpose_to_second_order():
    """Wide CPU layers take the forward and input gradient channels_last and the weight gradient
    NCHW; every derivative, up to the second order that path-length regularisation needs, must
    equal the plain transposed convolution's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = _TransposedConvSplitLayout.apply(x, w, 2, (1, 0))
    y_ref = F.conv_transpose2d(x, w, stride=2, padding=(1, 0))
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, (x, w), dy, create_graph=True)
    grads_ref = torch.autograd.grad(y_ref, (x, w), dy, create_graph=True)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Second order: the gradient of a function of the first-order gradients.
    h = torch.autograd.grad(sum(t.square().sum() for t in grads), (x, w))
    h_ref = torch.autograd.grad(sum(t.square().sum() for t in grads_ref), (x, w))
    for a, b in zip(h, h_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradgradcheck(lambda x, w: _TransposedConvSplitLayout.apply(x, w, 2, (1, 0)), (x, w))


def test_wide_upsampling_layer_matches_reference():
    # 264 inputs (> 256) with a weight gradient: the split-layout transposed convolution, the
    # channels_last modulation and the fused filter step, against StyleGAN2-ADA's grouped form.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 264, 4, 4, dtype=torch.float64, generator=g)
    w = torch.randn(16, 264, 3, 3, dtype=torch.float64, generator=g)
    s = torch.randn(2, 264, dtype=torch.float64, generator=g) + 1
    noise = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=g)
    f = setup_filter([1, 3, 3, 1]).double()
    args = [t.requires_grad_(True) for t in (x, w, s)]
    kw = dict(noise=noise, up=2, padding=1, resample_filter=f)
    y, y_ref = modulated_conv2d(*args, impl="native", **kw), modulated_conv2d_ref(*args, **kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, args, dy, create_graph=True)
    grads_ref = torch.autograd.grad(y_ref, args, dy, create_graph=True)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    h = torch.autograd.grad(grads[1].square().sum(), args)
    h_ref = torch.autograd.grad(grads_ref[1].square().sum(), args)
    for a, b in zip(h, h_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
