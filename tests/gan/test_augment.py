"""Tests for retina_fast.gan.augment: the ADA augmentation pipeline and its p controller."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retina_fast.gan.augment import AUGPIPE_SPECS, AdaController, AugmentPipe, _affine_grid


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=4, c=3, h=32, w=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand([n, c, h, w], generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _blob(h, w, row, col, sigma=1.5):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return torch.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * sigma ** 2))


def _centroid(img):
    h, w = img.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    m = img.to(torch.float64).clamp(min=0)
    return float((m * yy).sum() / m.sum()), float((m * xx).sum() / m.sum())


# ---------------------------------------------------------------------------------------------
# Identity, shape, dtype.

@pytest.mark.parametrize("spec", sorted(AUGPIPE_SPECS))
def test_p0_is_exact_identity(spec):
    x = _images(h=48, w=48)
    pipe = AugmentPipe(**AUGPIPE_SPECS[spec])
    assert float(pipe.p) == 0.0
    torch.manual_seed(1)
    assert torch.equal(pipe(x), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_samples_with_no_augmentation_fired_are_bit_identical(channels):
    # A tiny positive p runs every stage (matrices, blit/resample selection, colour, filter,
    # noise, cutout) while no decision fires: the output must still be the input, bit for bit.
    x = _images(n=6, c=channels, h=48, w=48)
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgcfnc"], p=1e-9)
    torch.manual_seed(14)
    y = pipe(x)
    assert y is not x and torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 3, 40, 48), (2, 1, 33, 32)])
def test_shape_dtype_preserved_and_changed(dtype, shape):
    x = _images(*shape, dtype=dtype)
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=1.0)
    torch.manual_seed(2)
    y = pipe(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert (y - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # p = 1: every sample changed


def test_affine_grid_matches_torch():
    theta = torch.tensor([[[0.9, -0.3, 0.1], [0.25, 1.1, -0.2]], [[-1, 0, 0.05], [0, 1, 0]]],
                         dtype=torch.float64)
    ref = F.affine_grid(theta, [2, 3, 10, 14], align_corners=False)
    assert torch.allclose(_affine_grid(theta, 10, 14, torch.float64), ref, atol=1e-12)


def test_native_and_ref_upfirdn2d_give_same_output():
    x = _images(n=4, h=32, w=32)
    out = {}
    for impl in ("native", "ref"):
        torch.manual_seed(5)
        out[impl] = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=1.0, impl=impl)(x)
    assert torch.allclose(out["native"], out["ref"], atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Pixel blitting is exact.

def test_xflip_p1_gives_exact_flips():
    x = _images(n=8)
    torch.manual_seed(3)
    y = AugmentPipe(xflip=1, p=1.0)(x)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(y[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)  # with p = 1 SG2-ADA flips half the samples (i ~ U{0, 1})


def test_rotate90_p1_gives_exact_quarter_turns():
    x = _images(n=16, h=24, w=24)
    torch.manual_seed(4)
    y = AugmentPipe(rotate90=1, p=1.0)(x)
    seen = set()
    for i in range(16):
        ks = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, dims=(-2, -1)))]
        assert len(ks) == 1
        seen.add(ks[0])
    assert seen == {0, 1, 2, 3}
    # Direction: i = 1 (debug percentile in [0.25, 0.5)) is torch.rot90(k=1) on (rows, cols).
    y1 = AugmentPipe(rotate90=1)(x[:2], debug_percentile=0.3)
    assert torch.equal(y1, torch.rot90(x[:2], 1, dims=(-2, -1)))


def test_xint_moves_planted_dot_by_whole_pixels():
    n, h, w = 8, 32, 32
    x = torch.full([n, 3, h, w], -1.0)
    x[:, :, 14, 17] = 1.0
    torch.manual_seed(6)
    y = AugmentPipe(xint=1, p=1.0)(x)
    max_shift = round(0.125 * w)
    moved = 0
    for i in range(n):
        assert torch.equal(torch.sort(y[i].flatten()).values, torch.sort(x[i].flatten()).values)
        r, c = (y[i, 0] == 1.0).nonzero()[0].tolist()
        assert abs(r - 14) <= max_shift and abs(c - 17) <= max_shift
        moved += (r, c) != (14, 17)
    assert moved >= n - 1
    # At the top percentile t = xint_max: G_inv translates by -4, so content moves by +4 px.
    y = AugmentPipe(xint=1)(x[:1], debug_percentile=1.0)
    assert (y[0, 0] == 1.0).nonzero().tolist() == [[14 + max_shift, 17 + max_shift]]


def test_integer_shift_reflects_at_the_border():
    x = _images(n=1, h=16, w=16)
    y = AugmentPipe(xint=1, xint_max=0.25)(x, debug_percentile=1.0)  # +4 px right and down
    assert torch.equal(y[0, :, 4:, 4:], x[0, :, :-4, :-4])
    assert torch.equal(y[0, :, 4:, 3], x[0, :, :-4, 1])  # F.pad reflect: column -1 mirrors column 1


def test_blit_and_resampling_paths_agree():
    # The same integer translation through the exact blit and through the wavelet resampling.
    pipe = AugmentPipe()
    x = _images(n=2, h=24, w=20)
    G = torch.tensor([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]], dtype=torch.float64).repeat(2, 1, 1)
    cx, cy = (20 - 1) / 2, (24 - 1) / 2
    center = torch.tensor([[1.0, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=torch.float64)
    G_pix = center @ G @ torch.linalg.inv(center)
    assert torch.allclose(pipe._blit(x, G_pix), pipe._resample(x, G), atol=1e-5)


@pytest.mark.parametrize("p", [0.5, 1.0])
def test_xflip_rate_is_p_over_2(p):
    # SG2-ADA semantics: with probability p the flip bit is drawn from U{0, 1}, so P(flip) = p / 2.
    n = 4000
    x = _images(n=n, c=1, h=4, w=4, seed=7)
    torch.manual_seed(8)
    y = AugmentPipe(xflip=1, p=p)(x)
    flipped = (y == x.flip(-1)).flatten(1).all(dim=1) & ~(y == x).flatten(1).all(dim=1)
    rate = flipped.double().mean().item()
    assert abs(rate - p / 2) < 0.03  # > 4 binomial standard deviations


# ---------------------------------------------------------------------------------------------
# General geometric transforms move content where the matrices say.

@pytest.mark.parametrize("dp", [0.2, 0.9])
def test_isotropic_scale_and_fractional_translation_move_blob(dp):
    h = w = 40
    cy, cx = (h - 1) / 2, (w - 1) / 2
    x = _blob(h, w, cy, cx + 8)[None, None].repeat(1, 3, 1, 1).float()
    z = torch.erfinv(torch.tensor(2 * dp - 1.0)).item()
    y = AugmentPipe(scale=1)(x, debug_percentile=dp)
    s = 2 ** (z * 0.2)
    r, c = _centroid(y[0, 0])
    assert abs(r - cy) < 0.02 and abs(c - (cx + 8 * s)) < 0.02
    y = AugmentPipe(xfrac=1)(x, debug_percentile=dp)
    t = z * 0.125
    r, c = _centroid(y[0, 0])
    assert abs(r - (cy + t * h)) < 0.02 and abs(c - (cx + 8 + t * w)) < 0.02


def test_arbitrary_rotation_matches_quarter_turn():
    # Rotation by pi/2 (debug percentile 0.75) through the resampling path ~ torch.rot90(k=1).
    h = w = 40
    x = _blob(h, w, 19.5, 27.5)[None, None].repeat(1, 3, 1, 1).float()
    y = AugmentPipe(rotate=1)(x, debug_percentile=0.75)
    assert (y - torch.rot90(x, 1, dims=(-2, -1))).abs().max() < 0.05
    r, c = _centroid(y[0, 0])
    assert abs(r - 11.5) < 0.15 and abs(c - 19.5) < 0.15


def test_anisotropic_scaling_preserves_area_direction():
    h = w = 48
    cy, cx = (h - 1) / 2, (w - 1) / 2
    x = (_blob(h, w, cy, cx + 14) + _blob(h, w, cy + 14, cx))[None, None].float()
    y = AugmentPipe(aniso=1, rotate=0)(x, debug_percentile=0.9)
    s = 2 ** (torch.erfinv(torch.tensor(0.8)).item() * 0.2)
    right = y[0, 0, :, 30:].clone()
    below = y[0, 0, 30:, :].clone()
    assert abs(_centroid(right)[1] + 30 - (cx + 14 * s)) < 0.05   # x stretched by s
    assert abs(_centroid(below)[0] + 30 - (cy + 14 / s)) < 0.05   # y squeezed by 1/s


# ---------------------------------------------------------------------------------------------
# Colour.

def test_brightness_shifts_mean_by_drawn_offset():
    x = _images(n=3)
    dp = 0.9
    y = AugmentPipe(brightness=1)(x, debug_percentile=dp)
    b = torch.erfinv(torch.tensor(2 * dp - 1.0)).item() * 0.2
    assert torch.allclose(y - x, torch.full_like(x, b), atol=1e-6)
    # Random draws: a constant offset per sample, distributed N(0, brightness_std) at p = 1.
    x = _images(n=2000, h=2, w=2)
    torch.manual_seed(9)
    d = AugmentPipe(brightness=1, p=1.0)(x) - x
    per_sample = d.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-6)
    assert abs(per_sample[:, 0].std().item() - 0.2) < 0.015
    assert abs(per_sample[:, 0].mean().item()) < 0.015


def test_contrast_lumaflip_hue_saturation_formulas():
    x = _images(n=2, h=8, w=8, dtype=torch.float64)
    dp = 0.9
    z = torch.erfinv(torch.tensor(2 * dp - 1.0, dtype=torch.float64)).item()
    y = AugmentPipe(contrast=1)(x, debug_percentile=dp)
    assert torch.allclose(y, x * 2 ** (z * 0.5), atol=1e-6)
    # Luma flip: Householder reflection about the plane orthogonal to (1, 1, 1).
    y = AugmentPipe(lumaflip=1)(x, debug_percentile=dp)
    assert torch.allclose(y, x - 2 * x.mean(dim=1, keepdim=True), atol=1e-6)
    # Hue rotation keeps luma and chroma magnitude, and changes the colour.
    y = AugmentPipe(hue=1)(x, debug_percentile=dp)
    luma_x, luma_y = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
    assert torch.allclose(luma_x, luma_y, atol=1e-6)
    assert torch.allclose((x - luma_x).norm(dim=1), (y - luma_y).norm(dim=1), atol=1e-6)
    assert (y - x).abs().max() > 0.1
    # Saturation scales chroma about luma.
    y = AugmentPipe(saturation=1)(x, debug_percentile=dp)
    assert torch.allclose(y, luma_x + (x - luma_x) * 2 ** (z * 1.0), atol=1e-6)


def test_grayscale_colour():
    x = _images(n=2, c=1, h=8, w=8)
    y = AugmentPipe(**AUGPIPE_SPECS["color"])(x, debug_percentile=0.9)  # hue/saturation skipped
    z = torch.erfinv(torch.tensor(0.8)).item()
    # brightness then contrast then luma flip (which negates the luma of a grey image)
    expect = -((x + z * 0.2) * 2 ** (z * 0.5))
    assert torch.allclose(y, expect, atol=1e-5)


def test_filter_noise_cutout():
    x = _images(n=2, h=32, w=32)
    y = AugmentPipe(cutout=1)(x, debug_percentile=0.5)
    assert (y[:, :, 8:24, 8:24] == 0).all()
    assert torch.equal(y[:, :, :8], x[:, :, :8]) and torch.equal(y[:, :, 24:], x[:, :, 24:])
    torch.manual_seed(10)
    y = AugmentPipe(noise=1, p=1.0)(x)
    assert 0 < (y - x).std() < 0.3
    # Image-space filtering with all bands at gain 1 would be the identity; at dp=0.9 the bands are
    # amplified and renormalised, so the image changes but its DC (mean) is kept.
    y = AugmentPipe(imgfilter=1)(x, debug_percentile=0.9)
    assert (y - x).abs().max() > 0.05
    pipe = AugmentPipe(imgfilter=1)
    bank_sum = pipe.Hz_fbank.sum(dim=0)
    assert torch.allclose(bank_sum, F.one_hot(torch.tensor(bank_sum.numel() // 2), bank_sum.numel()).float(),
                          atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients.

@pytest.mark.parametrize("spec,p", [("bgc", 1.0), ("bg", 0.4), ("bgcfnc", 0.7)])
def test_gradcheck_and_gradgradcheck(spec, p):
    x = _images(n=4, h=24 if "f" not in spec else 48, w=24 if "f" not in spec else 48,
                dtype=torch.float64).requires_grad_()
    pipe = AugmentPipe(**AUGPIPE_SPECS[spec], p=p)

    def f(inp):
        torch.manual_seed(11)  # the same random decisions on every call
        return pipe(inp)

    assert torch.autograd.gradcheck(f, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


def test_r1_through_augmentation_double_backward_matches_finite_difference():
    torch.manual_seed(12)
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Softplus(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 14 * 14, 1)).double()
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.8)
    x = _images(n=4, h=16, w=16, dtype=torch.float64)

    def r1():
        xr = x.detach().requires_grad_()
        torch.manual_seed(13)
        (g,) = torch.autograd.grad(D(pipe(xr)).sum(), xr, create_graph=True)
        return g.square().sum()

    D.zero_grad()
    r1().backward()
    w = D[0].weight
    analytic = w.grad[1, 2, 0, 1].item()
    assert analytic != 0
    eps = 1e-6
    with torch.no_grad():
        w[1, 2, 0, 1] += eps
    plus = r1().item()
    with torch.no_grad():
        w[1, 2, 0, 1] -= 2 * eps
    minus = r1().item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# State and argument checks.

def test_p_is_the_only_state():
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.25)
    assert set(pipe.state_dict()) == {"p"}
    other = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    other.load_state_dict(pipe.state_dict())
    assert float(other.p) == 0.25 and other.p.dtype == torch.float32 and other.p.ndim == 0


@pytest.mark.parametrize("kwargs,exc", [
    (dict(xflip=-1), ValueError), (dict(scale="1"), TypeError), (dict(rotate=float("nan")), ValueError),
    (dict(imgfilter_bands=[1, 1, 1]), ValueError), (dict(impl="cuda"), ValueError), (dict(p=-0.1), ValueError),
    (dict(cutout_size=2), ValueError), (dict(hue=True), TypeError),
])
def test_bad_constructor_arguments(kwargs, exc):
    with pytest.raises(exc, match=next(iter(kwargs)).split("_bands")[0]):
        AugmentPipe(**kwargs)


def test_bad_forward_arguments():
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.5)
    with pytest.raises(TypeError, match="images"):
        pipe(np.zeros([1, 3, 8, 8], np.float32))
    with pytest.raises(ValueError, match="4-D"):
        pipe(torch.zeros([3, 8, 8]))
    with pytest.raises(TypeError, match="floating"):
        pipe(torch.zeros([1, 3, 8, 8], dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        pipe(torch.zeros([1, 2, 8, 8]))
    with pytest.raises(ValueError, match="debug_percentile"):
        pipe(torch.zeros([1, 3, 8, 8]), debug_percentile=1.5)
    with pytest.raises(ValueError, match="imgfilter"):
        AugmentPipe(imgfilter=1)(torch.zeros([1, 3, 16, 16]))


# ---------------------------------------------------------------------------------------------
# AdaController.

def test_ada_moves_p_up_then_down_and_clamps_at_zero():
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    ctl = AdaController(pipe, target=0.6, interval=4, kimg=500, batch_size=8)
    step = 8 * 4 / (500 * 1000)
    assert ctl.step == step
    for _ in range(4):
        ctl.accumulate(torch.ones([8, 1]) * 3)  # D overfits: every real logit positive
    assert ctl.update() == 1.0
    assert pipe.p.item() == np.float32(step)
    ctl.accumulate(torch.rand([8, 1]) + 0.1)
    ctl.update()
    assert pipe.p.item() == pytest.approx(2 * step, rel=1e-6)
    for _ in range(3):  # all negative: down, then clamped at 0
        ctl.accumulate(-torch.ones([8, 1]))
        assert ctl.update() == -1.0
    assert pipe.p.item() == 0.0


def test_ada_statistic_is_mean_sign_over_interval():
    pipe = AugmentPipe(xflip=1, p=0.5)
    ctl = AdaController(pipe, target=0.6, interval=2, kimg=100, batch_size=4)
    assert ctl.update() is None and pipe.p.item() == 0.5  # nothing accumulated: no change
    ctl.accumulate(torch.tensor([[1.0], [2.0], [-1.0], [3.0]]))
    ctl.accumulate(torch.tensor([[1.0], [1.0], [1.0], [-0.5]]))
    assert ctl.update() == pytest.approx(0.5)  # 6 positive, 2 negative -> 0.5 < 0.6: p goes down
    assert pipe.p.item() == pytest.approx(0.5 - 4 * 2 / 100000, rel=1e-6)
    ctl.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]))  # r_t == target exactly: sign 0
    p = pipe.p.item()
    assert ctl.update() == pytest.approx(0.6)
    assert pipe.p.item() == p


def test_ada_state_dict_round_trip(tmp_path):
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"], p=0.3)
    ctl = AdaController(pipe, interval=4, kimg=500, batch_size=16)
    ctl.accumulate(torch.tensor([1.0, -2.0, 3.0]))
    path = tmp_path / "ada.pt"
    torch.save(ctl.state_dict(), path)
    state = torch.load(path, weights_only=True)
    pipe2 = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    ctl2 = AdaController(pipe2, interval=4, kimg=500, batch_size=16)
    ctl2.load_state_dict(state)
    assert pipe2.p.item() == pipe.p.item()
    ctl.accumulate(torch.tensor([1.0]))
    ctl2.accumulate(torch.tensor([1.0]))
    assert ctl.update() == ctl2.update() == 0.5
    assert pipe2.p.item() == pipe.p.item()
    with pytest.raises(ValueError, match="load_state_dict"):
        ctl2.load_state_dict({"p": 0.1})
    with pytest.raises(ValueError, match="p must be"):
        ctl2.load_state_dict({"p": -1.0, "sum": 0.0, "count": 0.0})


@pytest.mark.parametrize("kwargs,match", [
    (dict(target=1.5), "target"), (dict(interval=0), "interval"), (dict(interval=2.5), "interval"),
    (dict(kimg=0), "kimg"), (dict(kimg=float("inf")), "kimg"), (dict(batch_size=None), "batch_size"),
    (dict(batch_size=0), "batch_size"),
])
def test_ada_bad_arguments(kwargs, match):
    args = dict(target=0.6, interval=4, kimg=500, batch_size=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        AdaController(AugmentPipe(), **args)
    with pytest.raises(TypeError, match="pipe"):
        AdaController(torch.nn.Identity(), batch_size=8)
    with pytest.raises(TypeError, match="real_logits"):
        AdaController(AugmentPipe(), batch_size=8).accumulate([1.0])


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pipe = AugmentPipe(xflip=1)
        ctl = AdaController(pipe, target=0.6, interval=1, kimg=1, batch_size=4 * world)
        # Rank 0 sees all positive logits, rank 1 half negative: global r_t = (4 + 0) / 8 = 0.5.
        ctl.accumulate(torch.ones([4, 1]) if rank == 0 else torch.tensor([[1.0], [-1.0], [1.0], [-1.0]]))
        rt = ctl.update()
        torch.save({"rt": rt, "p": pipe.p.item()}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ada_all_reduces_under_torch_distributed(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert results[0]["rt"] == results[1]["rt"] == 0.5
    # Below target: p would go negative from 0, so it stays clamped at 0 on both ranks.
    assert results[0]["p"] == results[1]["p"] == 0.0


# ---------------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_cuda_matches_cpu_and_double_backward():
    x = _images(n=4, h=32, w=32)
    pipe = AugmentPipe(**AUGPIPE_SPECS["bgc"])
    y_cpu = pipe(x, debug_percentile=0.3)
    pipe_cuda = AugmentPipe(**AUGPIPE_SPECS["bgc"]).cuda()
    y_cuda = pipe_cuda(x.cuda(), debug_percentile=0.3)
    assert torch.allclose(y_cuda.cpu(), y_cpu, atol=1e-4)
    pipe_cuda.p.fill_(1.0)
    xr = x.cuda().requires_grad_()
    D = torch.nn.Conv2d(3, 1, 3).cuda()
    (g,) = torch.autograd.grad(D(pipe_cuda(xr)).sum(), xr, create_graph=True)
    g.square().sum().backward()
    assert torch.isfinite(D.weight.grad).all() and D.weight.grad.abs().sum() > 0


def test_grid_sample_gradfix_matches_torch_to_second_order():
    # Our grid_sample carries its own double backward (PyTorch 2.11 has none); check it
    # numerically, and against PyTorch's where that exists.
    from retina_fast.gan.augment import _grid_sample
    theta = torch.tensor([[[0.9, -0.3, 0.1], [0.25, 1.1, -0.2]]], dtype=torch.float64).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 2, 7, 9], align_corners=False)
    x = _images(n=2, c=2, h=6, w=8, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _grid_sample(t, grid), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _grid_sample(t, grid), (x,))
    w = torch.randn([2, 2, 7, 9], dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)

    def r1(sample):
        (g,) = torch.autograd.grad((sample(x, grid) * w).square().sum(), x, create_graph=True)
        (dw,) = torch.autograd.grad(g.square().sum(), w)
        return g, dw

    ours = r1(_grid_sample)
    try:
        ref = r1(lambda t, gr: F.grid_sample(t, gr, align_corners=False))
    except RuntimeError:  # older PyTorch: no double backward to compare with
        return
    assert torch.allclose(ours[0], ref[0]) and torch.allclose(ours[1], ref[1])
