"""upfirdn2d: native kernel vs the pure-PyTorch reference, gradients, the registered op, errors."""
import random

import numpy as np
import pytest
import torch

from retina_fast.ops import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d

pytestmark = pytest.mark.native


def _random_case(rng):
    """One random upfirdn2d configuration whose output is non-empty."""
    while True:
        up = [rng.choice([1, 2, 4]), rng.choice([1, 2, 4])] if rng.random() < 0.3 else rng.choice([1, 2, 4])
        down = [rng.choice([1, 2, 4]), rng.choice([1, 2, 4])] if rng.random() < 0.3 else rng.choice([1, 2, 4])
        separable = rng.random() < 0.4
        fh, fw = rng.randint(1, 12), rng.randint(1, 12)
        fshape = [fw] if separable else [fh, fw]
        pad = [rng.randint(-3, 6) for _ in range(4)]
        n, c, h, w = rng.randint(1, 3), rng.randint(1, 4), rng.randint(3, 17), rng.randint(3, 17)
        upx, upy = (up, up) if isinstance(up, int) else up
        dx, dy = (down, down) if isinstance(down, int) else down
        taps_h = fw if separable else fh
        ow = (w * upx + pad[0] + pad[1] - fw) // dx + 1
        oh = (h * upy + pad[2] + pad[3] - taps_h) // dy + 1
        if ow >= 1 and oh >= 1:
            return dict(shape=(n, c, h, w), fshape=fshape, up=up, down=down, padding=pad,
                        flip_filter=rng.random() < 0.5, gain=rng.choice([1.0, 0.5, 3.0]),
                        layout=rng.choice(["contiguous", "channels_last", "strided"]))


def _make_x(shape, layout, dtype):
    if layout == "strided":  # a non-contiguous view
        x = torch.randn(shape[0], shape[1], shape[2], shape[3] * 2, dtype=dtype)[..., ::2]
        assert not x.is_contiguous()
        return x
    x = torch.randn(shape, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


CASES = [_random_case(random.Random(seed)) for seed in range(60)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_native_matches_reference_forward_and_backward(case, dtype):
    torch.manual_seed(hash(str(case)) % 2**31)
    f = torch.randn(case["fshape"], dtype=torch.float32)  # the ref must not round the gain to f's float32
    x = _make_x(case["shape"], case["layout"], dtype).requires_grad_(True)
    kw = {k: case[k] for k in ("up", "down", "padding", "flip_filter", "gain")}
    y_nat = upfirdn2d(x, f, impl="native", **kw)
    y_ref = upfirdn2d_ref(x, f, **kw)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert y_nat.shape == y_ref.shape
    torch.testing.assert_close(y_nat, y_ref, **tol)
    if case["layout"] == "channels_last":
        assert y_nat.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(y_ref)
    (g_nat,) = torch.autograd.grad(y_nat, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy)
    torch.testing.assert_close(g_nat, g_ref, **tol)


@pytest.mark.parametrize("perturb", [0.0, 1e-3])
@pytest.mark.parametrize("case", CASES[:30], ids=[f"case{i}" for i in range(30)])
def test_outer_product_filters_match_reference(case, perturb):
    """2-D filters that are outer products (StyleGAN's) take the CPU kernel's separable walk; a
    slightly perturbed one must not (it is no longer rank 1), and both must match the reference."""
    g = torch.Generator().manual_seed(7)
    fh = case["fshape"][0]
    fw = case["fshape"][-1]
    # Small integers (scaled by 1/4) keep every product exact: a rank-1 filter in any precision.
    u, v = (torch.randint(1, 9, (k,), generator=g) * torch.randint(0, 2, (k,), generator=g).mul(2).sub(1)
            for k in (fh, fw))
    f = torch.outer(u.float(), v.float()) / 4 + perturb * torch.randn(fh, fw, generator=g)
    x = _make_x(case["shape"], case["layout"], torch.float64).requires_grad_(True)
    kw = {k: case[k] for k in ("up", "down", "padding", "flip_filter", "gain")}
    y_nat, y_ref = upfirdn2d(x, f, impl="native", **kw), upfirdn2d_ref(x, f, **kw)
    torch.testing.assert_close(y_nat, y_ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y_ref)
    torch.testing.assert_close(torch.autograd.grad(y_nat, x, dy)[0], torch.autograd.grad(y_ref, x, dy)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("up,in_side,padding", [(2, 1024, [2, 1, 2, 1]), (1, 2051, 0)])
def test_outputs_beyond_the_caches_match_reference(up, in_side, padding):
    """Outputs of 64 MiB and more are written with streaming stores on AVX-512 CPUs (the up=2
    interleave and the plain row copy); they must hold the same values as the reference."""
    x = torch.randn(1, 4, in_side, in_side, generator=torch.Generator().manual_seed(0))
    f = setup_filter([1, 3, 3, 1])
    y = upfirdn2d(x, f, up=up, padding=padding, gain=up * up, impl="native")
    assert y.numel() * 4 >= 64 << 20
    torch.testing.assert_close(y, upfirdn2d_ref(x, f, up=up, padding=padding, gain=up * up), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,down,padding,fshape", [
    (2, 1, [2, 1, 2, 1], [4, 4]), (1, 2, [1, 1, 1, 1], [4, 4]), ([2, 1], [1, 3], [0, 2, -1, 3], [3, 2]),
    (1, 1, [2, 2, 1, 1], [5]),
])
def test_gradcheck_and_gradgradcheck(up, down, padding, fshape):
    torch.manual_seed(0)
    f = torch.randn(fshape, dtype=torch.float64)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    fn = lambda t: upfirdn2d(t, f, up=up, down=down, padding=padding, gain=1.5, impl="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_opcheck_registered_op():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 7, requires_grad=True)
    f = torch.randn(4, 3)
    torch.library.opcheck(torch.ops.retina_fast.upfirdn2d.default,
                          (x, f, 2, 1, 1, 2, 2, 1, 0, 3, False, 2.0))


def test_torch_compile_fullgraph():
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 8, 8)
    compiled = torch.compile(lambda t: upsample2d(t, f, impl="native"), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), upsample2d(x, f, impl="ref"))


def test_helpers_resize_exactly_and_preserve_dc():
    f = setup_filter([1, 3, 3, 1])
    x = torch.ones(1, 1, 16, 16)
    up = upsample2d(x, f, impl="native")
    down = downsample2d(x, f, impl="native")
    same = filter2d(x, f, impl="native")
    assert up.shape[-2:] == (32, 32) and down.shape[-2:] == (8, 8) and same.shape[-2:] == (16, 16)
    # Away from the zero-padded border, a constant image stays constant (the filter is normalised).
    torch.testing.assert_close(up[..., 4:-4, 4:-4], torch.ones_like(up[..., 4:-4, 4:-4]))
    torch.testing.assert_close(down[..., 2:-2, 2:-2], torch.ones_like(down[..., 2:-2, 2:-2]))
    for a, b in [(up, upsample2d(x, f, impl="ref")), (down, downsample2d(x, f, impl="ref")),
                 (same, filter2d(x, f, impl="ref"))]:
        torch.testing.assert_close(a, b)


def test_matches_scipy_upfirdn_on_1d_signal():
    """An independent oracle: scipy.signal.upfirdn on one row (up, filter, down; full output)."""
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    h, xrow = rng.standard_normal(7), rng.standard_normal(20)
    ours = upfirdn2d(torch.tensor(xrow)[None, None, None, :], torch.tensor(h)[None, :],
                     up=[3, 1], down=[2, 1], padding=[6, 4, 0, 0], impl="native")
    # scipy convolves the upsampled signal without its up-1 trailing zeros, full mode: pad
    # taps-1 = 6 before and 6 - (up-1) = 4 after ours.
    expected = signal.upfirdn(h, xrow, up=3, down=2)
    np.testing.assert_allclose(ours[0, 0, 0].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_setup_filter_matches_stylegan_conventions():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.isclose(f.sum(), torch.tensor(1.0))
    f8 = setup_filter(list(range(1, 9)))
    assert f8.ndim == 1  # >= 8 taps stay separable
    torch.testing.assert_close(setup_filter([1, 2], gain=4, normalize=False), torch.tensor([[4., 8.], [8., 16.]]))


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=torch.randn(3, 4, 5)), ValueError, "x must be 4-D"),
    (dict(x=torch.ones(1, 1, 4, 4, dtype=torch.int32)), TypeError, "x must be floating point"),
    (dict(f=torch.ones(2, 2, dtype=torch.int64)), TypeError, "f must be a floating-point filter"),
    (dict(f=torch.ones(2, 2, 2)), ValueError, "f must be a non-empty 1-D or 2-D"),
    (dict(up=0), ValueError, "up must be >= 1"),
    (dict(down=[1, 0]), ValueError, "down must be >= 1"),
    (dict(up=1.5), TypeError, "up must be an int"),
    (dict(padding=[1, 2, 3]), TypeError, "padding must be"),
    (dict(padding=-4), ValueError, "smaller than the"),
])
def test_bad_arguments_raise_clear_errors(impl, kwargs, exc, match):
    args = dict(x=torch.randn(1, 1, 4, 4), f=torch.ones(2, 2))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        upfirdn2d(impl=impl, **args)


def test_unknown_impl_is_rejected():
    with pytest.raises(ValueError, match="impl must be"):
        upfirdn2d(torch.randn(1, 1, 4, 4), None, impl="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("case", CASES[:30], ids=[f"case{i}" for i in range(30)])
def test_cuda_matches_reference(case, dtype):
    torch.manual_seed(1)
    f = torch.randn(case["fshape"], dtype=torch.float32, device="cuda")
    x = _make_x(case["shape"], case["layout"], torch.float32).to("cuda", dtype).requires_grad_(True)
    kw = {k: case[k] for k in ("up", "down", "padding", "flip_filter", "gain")}
    y_nat = upfirdn2d(x, f, impl="native", **kw)
    # float16 is checked against a float32 reference on the same (rounded) inputs.
    y_ref = upfirdn2d_ref(x.float() if dtype == torch.float16 else x, f, **kw)
    tol = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 2e-2}[dtype]
    torch.testing.assert_close(y_nat.float(), y_ref.float(), rtol=tol, atol=tol * max(1.0, y_ref.abs().max().item()))
    dy = torch.randn_like(y_nat)
    (g_nat,) = torch.autograd.grad(y_nat, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy.to(y_ref.dtype))
    torch.testing.assert_close(g_nat.float(), g_ref.float(), rtol=tol, atol=tol * max(1.0, g_ref.abs().max().item()))


@pytest.mark.cuda
def test_cuda_gradgradcheck_and_cpu_agreement():
    torch.manual_seed(0)
    f = torch.randn(4, 4, dtype=torch.float64, device="cuda")
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, device="cuda", requires_grad=True)
    fn = lambda t: upfirdn2d(t, f, up=2, down=1, padding=[2, 1, 2, 1], impl="native")  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.testing.assert_close(fn(x).cpu(), upfirdn2d(x.detach().cpu(), f.cpu(), up=2, padding=[2, 1, 2, 1], impl="native"))
