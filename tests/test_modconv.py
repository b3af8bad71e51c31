"""modulated_conv2d and modulate: native (dense) vs reference (StyleGAN2-ADA grouped) paths."""
import pytest
import torch

from retina_fast.ops import conv2d_resample, modulate, modulated_conv2d, modulated_conv2d_ref, setup_filter

CONFIGS = [  # (up, down, kernel, padding)
    (1, 1, 3, 1), (2, 1, 3, 1), (1, 2, 3, 1), (1, 1, 1, 0), (2, 1, 1, 0), (1, 2, 1, 0), (1, 1, 3, [2, 0, 1, 1]),
]


def _inputs(dtype, n=2, i=4, o=5, k=3, res=8, layout="contiguous", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, i, res, res, dtype=dtype, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(o, i, k, k, dtype=dtype, generator=g)
    s = torch.randn(n, i, dtype=dtype, generator=g) + 1
    return x, w, s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("flip_weight", [True, False])
@pytest.mark.parametrize("up,down,k,padding", CONFIGS)
def test_native_matches_reference(up, down, k, padding, flip_weight, fused, demodulate, layout, dtype):
    x, w, s = _inputs(dtype, k=k, layout=layout)
    f = setup_filter([1, 3, 3, 1]).to(dtype)
    res_out = 8 * up // down
    noise = torch.randn(2, 1, res_out, res_out, dtype=dtype) if demodulate else None
    args = [a.requires_grad_(True) for a in (x, w, s)]
    kw = dict(noise=noise, up=up, down=down, padding=padding, resample_filter=f, demodulate=demodulate,
              flip_weight=flip_weight, fused_modconv=fused)
    y_nat = modulated_conv2d(*args, impl="native", **kw)
    y_ref = modulated_conv2d_ref(*args, **kw)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_nat, y_ref, **tol)
    dy = torch.randn_like(y_ref)
    for a, r in zip(torch.autograd.grad(y_nat, args, dy), torch.autograd.grad(y_ref, args, dy)):
        torch.testing.assert_close(a, r, **tol)


def test_gradgradcheck_through_modulated_conv():
    """R1 / path-length regularisation differentiate through the generator twice."""
    x, w, s = _inputs(torch.float64, n=1, i=2, o=2, res=5)
    f = setup_filter([1, 3, 3, 1]).double()
    noise = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    fn = lambda *a: modulated_conv2d(*a, noise=noise, up=2, padding=1, resample_filter=f, impl="native")  # noqa: E731
    args = tuple(a.requires_grad_(True) for a in (x, w, s))
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


def test_float16_prenormalisation_matches_reference():
    # float16 convolution is CUDA-only in the reference, so check the same pre-normalised math
    # on CPU through the shared helper's float64 path: scaling weight/styles must not change y.
    x, w, s = _inputs(torch.float64)
    y1 = modulated_conv2d(x, w * 1000, s * 1e-3, padding=1, impl="native")
    y2 = modulated_conv2d(x, w, s, padding=1, impl="native")
    torch.testing.assert_close(y1, y2)


def test_modulate_opcheck_and_broadcast_noise():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    s = torch.randn(2, 3, requires_grad=True)
    for noise in (None, torch.randn(2, 1, 4, 5, requires_grad=True), torch.randn(1, 1, 4, 5, requires_grad=True),
                  torch.randn(5, requires_grad=True)):
        torch.library.opcheck(torch.ops.retina_fast.modulate.default, (x, s, noise))
        torch.testing.assert_close(modulate(x, s, noise, impl="native"), modulate(x, s, noise, impl="ref"))


def test_conv2d_resample_impls_agree_grouped():
    x = torch.randn(1, 6, 7, 7, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1]).double()
    for up, down in [(2, 1), (1, 2), (2, 2)]:
        a = conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=2, impl="native")
        b = conv2d_resample(x, w, f, up=up, down=down, padding=1, groups=2, impl="ref")
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", ["native", "ref"])
@pytest.mark.parametrize("change,exc,match", [
    ("styles_shape", ValueError, "styles must be"),
    ("weight_rank", ValueError, "weight must be"),
    ("x_channels", ValueError, "x must be"),
    ("noise_shape", ValueError, "noise"),
    ("int_x", TypeError, "x must be floating point"),
])
def test_bad_arguments_raise_clear_errors(impl, change, exc, match):
    x, w, s = _inputs(torch.float32)
    noise = None
    if change == "styles_shape":
        s = s[:, :3]
    elif change == "weight_rank":
        w = w[0]
    elif change == "x_channels":
        x = x[:, :3]
    elif change == "noise_shape":
        noise = torch.randn(2, 3, 5, 5)
    elif change == "int_x":
        x = x.to(torch.int32)
    with pytest.raises(exc, match=match):
        modulated_conv2d(x, w, s, noise=noise, padding=1, impl=impl)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("up,down,k,padding", CONFIGS)
def test_cuda_matches_reference(up, down, k, padding, dtype):
    x, w, s = (t.cuda() for t in _inputs(torch.float32, i=8, o=8, k=k, res=16))
    f = setup_filter([1, 3, 3, 1], device="cuda")
    res_out = 16 * up // down
    noise = torch.randn(2, 1, res_out, res_out, device="cuda")
    kw = dict(up=up, down=down, padding=padding, resample_filter=f)
    y_nat = modulated_conv2d(x.to(dtype), w, s, noise=noise.to(dtype), impl="native", **kw)
    y_ref = modulated_conv2d_ref(x.to(dtype), w, s, noise=noise.to(dtype), **kw)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y_nat.float(), y_ref.float(), rtol=tol, atol=tol * max(1.0, y_ref.abs().max().item()))


@pytest.mark.parametrize("up,down", [(1, 1), (1, 2), (2, 1)])
def test_dense_formulation_on_wide_layers_matches_reference(up, down):
    """Wide layers (>= 256 outputs) take the dense, activation-scaled native path for every
    resampling mode; narrow non-upsampling ones take the weight-scaled one (covered above)."""
    x, w, s = _inputs(torch.float64, i=8, o=256, res=6)
    f = setup_filter([1, 3, 3, 1]).double()
    noise = torch.randn(2, 1, 6 * up // down, 6 * up // down, dtype=torch.float64)
    args = [a.requires_grad_(True) for a in (x, w, s)]
    kw = dict(noise=noise, up=up, down=down, padding=1, resample_filter=f)
    y_nat, y_ref = modulated_conv2d(*args, impl="native", **kw), modulated_conv2d_ref(*args, **kw)
    torch.testing.assert_close(y_nat, y_ref, rtol=1e-10, atol=1e-10)
    dy = torch.randn_like(y_ref)
    for a, r in zip(torch.autograd.grad(y_nat, args, dy), torch.autograd.grad(y_ref, args, dy)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
