"""modulated_conv2d and modulate: native (dense) vs reference (StyleGAN2-ADA grouped) paths."""
import pytest
import torch

from retina_fast.ops import conv2d_resample, modulate, modulated_conv2d, modulated_conv2d_ref, setup_filter

pytestmark = pytest.mark.native

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


def _modulate_backward_ref(dy, x, s):
    return dy * s.to(dy.dtype)[:, :, None, None], (dy.double() * x.double()).sum([2, 3]).to(s.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed", "mixed_other_way"])
@pytest.mark.parametrize("need_dx,need_ds", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (3, 17, 33, 9), (2, 300, 3, 2), (2, 64, 33, 65)])
def test_modulate_backward_matches_formulas(shape, need_dx, need_ds, layout, dtype):
    g = torch.Generator().manual_seed(1)
    dy, x = (torch.randn(shape, dtype=dtype, generator=g) for _ in range(2))
    s = torch.randn(shape[:2], dtype=dtype, generator=g)
    if layout in ("channels_last", "mixed"):
        dy = dy.contiguous(memory_format=torch.channels_last)
    if layout in ("channels_last", "mixed_other_way"):
        x = x.contiguous(memory_format=torch.channels_last)
    dx, ds = torch.ops.retina_fast.modulate_backward(dy, x, s, need_dx, need_ds)
    rdx, rds = _modulate_backward_ref(dy, x, s)
    assert (dx is not None) == need_dx and (ds is not None) == need_ds
    if need_dx:
        torch.testing.assert_close(dx, rdx, rtol=0, atol=0)  # the same rounded product as modulate
        assert dx.stride() == x.stride() or shape == (1, 1, 1, 1)  # x's layout, as autograd wants
    if need_ds:
        torch.testing.assert_close(ds, rds, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_modulate_backward_float32_sums_over_a_megapixel_plane():
    # ds sums 2^20 products per entry: the double accumulation must keep float32 exact-ish.
    g = torch.Generator().manual_seed(2)
    for fmt in (torch.contiguous_format, torch.channels_last):
        dy, x = (torch.randn(1, 2, 1024, 1024, generator=g).contiguous(memory_format=fmt) for _ in range(2))
        s = torch.randn(1, 2, generator=g)
        _, ds = torch.ops.retina_fast.modulate_backward(dy, x, s, False, True)
        ref = (dy.double() * x.double()).sum([2, 3])
        torch.testing.assert_close(ds.double(), ref, rtol=1e-5, atol=1e-3)


def test_modulate_backward_opcheck():
    cl = torch.channels_last
    for dy_fmt, x_fmt in [(torch.contiguous_format,) * 2, (cl, cl), (cl, torch.contiguous_format)]:
        dy = torch.randn(2, 3, 4, 5).contiguous(memory_format=dy_fmt)
        x = torch.randn(2, 3, 4, 5).contiguous(memory_format=x_fmt)
        s = torch.randn(2, 3)
        for need_dx, need_ds in [(True, True), (True, False), (False, True)]:
            torch.library.opcheck(torch.ops.retina_fast.modulate_backward.default, (dy, x, s, need_dx, need_ds))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 4, 4), (2, 64, 19, 23), (1, 300, 3, 2), (2, 64, 33, 65)])
def test_modulate_to_channels_last(shape, dtype):
    """channels_last=True folds the layout change into the pass; its backward hands dx back NCHW."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, dtype=dtype, generator=g)
    s = torch.randn(shape[:2], dtype=dtype, generator=g)
    for noise in (None, torch.randn(shape[0], 1, *shape[2:], dtype=dtype, generator=g)):
        args = [t.clone().requires_grad_(True) for t in (x, s)] + [noise]
        y = modulate(*args, impl="native", channels_last=True)
        ref_args = [t.clone().requires_grad_(True) for t in (x, s)] + [noise]
        y_ref = modulate(*ref_args, impl="ref")
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        dy = torch.randn_like(y_ref).contiguous(memory_format=torch.channels_last)
        got = torch.autograd.grad(y, args[:2], dy)
        want = torch.autograd.grad(y_ref, ref_args[:2], dy)
        assert got[0].is_contiguous()
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        # The reference sums in float32 (thread-dependent order), the native op in double.
        torch.testing.assert_close(got[1], want[1], rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-4)
        torch.library.opcheck(torch.ops.retina_fast.modulate.default, (args[0], args[1], noise, True))
    xs = x.detach().requires_grad_(True), s.detach().requires_grad_(True)
    fn = lambda a, b: modulate(a, b, impl="native", channels_last=True)  # noqa: E731
    if dtype == torch.float64 and x.numel() < 2000:
        assert torch.autograd.gradcheck(fn, xs)
        assert torch.autograd.gradgradcheck(fn, xs)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_modulate_gradients_first_and_higher_order(layout):
    """First-order backward takes the fused native op; create_graph=True the composite formulas."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    s = torch.randn(2, 3, dtype=torch.float64, generator=g)
    noise = torch.randn(2, 1, 6, 5, dtype=torch.float64, generator=g)
    args = tuple(t.requires_grad_(True) for t in (x, s, noise))
    fn = lambda *a: modulate(*a, impl="native")  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)
    dy = torch.randn(2, 3, 6, 5, dtype=torch.float64, generator=g)
    got = torch.autograd.grad(modulate(*args, impl="native"), args, dy)
    want = torch.autograd.grad(modulate(*args, impl="ref"), args, dy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_modulate_backward_cuda_matches_cpu(layout, dtype):
    g = torch.Generator().manual_seed(4)
    dy, x = (torch.randn(3, 70, 33, 65, generator=g).to(dtype) for _ in range(2))
    if layout == "channels_last":
        dy, x = (t.contiguous(memory_format=torch.channels_last) for t in (dy, x))
    s = torch.randn(3, 70, generator=g)
    for need_dx, need_ds in [(True, True), (True, False), (False, True)]:
        got = torch.ops.retina_fast.modulate_backward(dy.cuda(), x.cuda(), s.cuda(), need_dx, need_ds)
        want = torch.ops.retina_fast.modulate_backward(dy, x, s, need_dx, need_ds)
        if need_dx:
            assert got[0].stride() == dy.stride()
            torch.testing.assert_close(got[0].cpu(), want[0], rtol=0, atol=0)
        if need_ds:
            torch.testing.assert_close(got[1].cpu(), want[1], rtol=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.retina_fast.modulate_backward.default, (dy.cuda(), x.cuda(), s.cuda(), True, True))


def test_compiled_upsampling_modconv_matches_eager():
    # The up=2 native path runs channels_last on CPU; the fake kernels must report the layouts the
    # real ones return, or torch.compile's stride checks fail.
    torch.manual_seed(0)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 16, 16, 16, requires_grad=True)
    w = torch.randn(8, 16, 3, 3, requires_grad=True)
    s = torch.randn(2, 16, requires_grad=True)

    def fn(x, w, s):
        return modulated_conv2d(x, w, s, up=2, padding=1, resample_filter=f)

    y0 = fn(x, w, s)
    g0 = torch.autograd.grad(y0.square().sum(), (x, w, s))
    y = torch.compile(fn, fullgraph=True)(x, w, s)
    g = torch.autograd.grad(y.square().sum(), (x, w, s))
    torch.testing.assert_close(y, y0)
    for a, b in zip(g, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_noise", [False, True])
@pytest.mark.parametrize("channels", [4, 16])  # 16: the channels_last path on CPU
def test_inference_path_matches_reference_and_leaves_inputs_alone(with_noise, channels):
    # Without gradients the native path demodulates its own temporary in place.
    torch.manual_seed(1)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, channels, 9, 11)
    w = torch.randn(5, channels, 3, 3)
    s = torch.randn(2, channels)
    noise = torch.randn(2, 1, 18, 22) if with_noise else None
    before = [t.clone() for t in (x, w, s)]
    with torch.no_grad():
        y = modulated_conv2d(x, w, s, noise, up=2, padding=1, resample_filter=f, impl="native")
    y_ref = modulated_conv2d_ref(x, w, s, noise, up=2, padding=1, resample_filter=f)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip((x, w, s), before):
        assert torch.equal(a, b)
