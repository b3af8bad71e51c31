"""StyleGAN2 networks (retina_fast.gan.networks): shapes, parameter counts, native vs reference
kernels on the same weights, truncation, seeds, gradients (incl. R1 / path-length double
backward), checkpoints and argument checks."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retina_fast.gan import snapshot as snap
from retina_fast.gan.networks import (PRESETS, Discriminator, FullyConnectedLayer, Generator, MinibatchStdLayer,
                                      SynthesisLayer, ToRGBLayer, make_networks, set_impl, z_from_seeds)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(preset="32", seed=0, **kw):
    """Tiny G, D with non-zero noise strengths (they start at 0) so noise paths are exercised."""
    torch.manual_seed(seed)
    G, D = make_networks(preset, **kw)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        G.mapping.w_avg.normal_()
    return G, D


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


# ---------------------------------------------------------------------------------------------
# Shapes and sizes.

@pytest.mark.parametrize("preset", ["32", "64"])
def test_tiny_presets_shapes(preset):
    G, D = _tiny(preset)
    r = PRESETS[preset]["resolution"]
    assert G.num_ws == 2 * int(np.log2(r)) - 2 == G.mapping.num_ws
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z, None)
    assert ws.shape == (4, G.num_ws, G.w_dim)
    img = G.synthesis(ws)
    assert img.shape == (4, 3, r, r) and img.dtype == torch.float32
    logits = D(img)
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize("preset,num_ws", [("paper1024", 18), ("512", 16), ("256", 14)])
def test_large_presets_shapes_on_meta(preset, num_ws):
    with torch.device("meta"):
        G, D = make_networks(preset)
        img = G(torch.empty(2, 512))
        logits = D(img)
    r = PRESETS[preset]["resolution"]
    assert G.num_ws == num_ws
    assert img.shape == (2, 3, r, r) and img.dtype == torch.float32
    assert logits.shape == (2, 1)


def _expected_counts(res, base, cmax, z_dim, w_dim, map_layers, img_ch=3, mbstd_ch=1):
    """Closed-form parameter counts of the StyleGAN2 config-f architecture (written out from the
    architecture description, independently of the module code)."""
    ch = lambda r: min(base // r, cmax)  # noqa: E731
    g = z_dim * w_dim + w_dim + (map_layers - 1) * (w_dim * w_dim + w_dim)          # mapping
    modconv = lambda ci, co, k: (w_dim * ci + ci) + co * ci * k * k + co + 1        # affine, W, b, noise  # noqa: E731
    torgb = lambda ci: (w_dim * ci + ci) + img_ch * ci + img_ch                      # noqa: E731
    g += ch(4) * 16 + modconv(ch(4), ch(4), 3) + torgb(ch(4))
    r = 8
    while r <= res:
        g += modconv(ch(r // 2), ch(r), 3) + modconv(ch(r), ch(r), 3) + torgb(ch(r))
        r *= 2
    d = img_ch * ch(res) + ch(res)                                                   # fromrgb
    r = res
    while r >= 8:
        d += ch(r) * ch(r) * 9 + ch(r)                                               # conv0
        d += ch(r) * ch(r // 2) * 9 + ch(r // 2)                                     # conv1 (down)
        d += ch(r) * ch(r // 2)                                                      # skip, no bias
        r //= 2
    c4 = ch(4)
    d += (c4 + mbstd_ch) * c4 * 9 + c4 + c4 * 16 * c4 + c4 + c4 + 1                 # conv, fc, out
    return g, d


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_counts(preset):
    with torch.device("meta"):
        G, D = make_networks(preset)
    s = PRESETS[preset]
    g_exp, d_exp = _expected_counts(s["resolution"], s["channel_base"], s["channel_max"], s["z_dim"], s["w_dim"],
                                    s["mapping_layers"])
    g = sum(p.numel() for p in G.parameters())
    d = sum(p.numel() for p in D.parameters())
    assert (g, d) == (g_exp, d_exp)
    if preset == "paper1024":
        # The count StyleGAN2 (config-f, 1024) reports for its generator; D ~29.0M.
        assert g == 30_370_060
        assert d == 29_012_513


# ---------------------------------------------------------------------------------------------
# Layer semantics against direct formulas.

def test_fully_connected_equalised_lr():
    torch.manual_seed(1)
    fc = FullyConnectedLayer(7, 5, activation="lrelu", lr_multiplier=0.01, bias_init=0.5)
    x = torch.randn(3, 7)
    # Stored weights are N(0,1)/lr; the effective ones N(0,1)/sqrt(fan_in).
    w_eff = fc.weight * 0.01 / np.sqrt(7)
    b_eff = fc.bias * 0.01
    expected = F.leaky_relu(x @ w_eff.t() + b_eff, 0.2) * np.sqrt(2)
    torch.testing.assert_close(fc(x), expected)
    fc_lin = FullyConnectedLayer(7, 5)
    torch.testing.assert_close(fc_lin(x), x @ (fc_lin.weight / np.sqrt(7)).t() + fc_lin.bias)


@pytest.mark.parametrize("impl", ["native", "ref"])
def test_synthesis_layer_and_torgb_match_direct_formula(impl):
    torch.manual_seed(2)
    n, ci, co, w_dim, res = 2, 6, 5, 8, 8
    layer = SynthesisLayer(ci, co, w_dim=w_dim, resolution=res, conv_clamp=1.5, impl=impl)
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.normal_()
    x, w = torch.randn(n, ci, res, res), torch.randn(n, w_dim)
    y = layer(x, w, noise_mode="const")
    s = layer.affine(w)
    wt = layer.weight[None] * s[:, None, :, None, None]                          # [N, O, I, 3, 3]
    wt = wt * (wt.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    ref = torch.cat([F.conv2d(x[i:i + 1], wt[i], padding=1) for i in range(n)])
    ref = ref + layer.noise_const * 0.7 + layer.bias[None, :, None, None]
    ref = (F.leaky_relu(ref, 0.2) * np.sqrt(2)).clamp(-1.5, 1.5)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert (y.abs() == 1.5).any()  # the clamp was exercised

    torgb = ToRGBLayer(ci, 3, w_dim=w_dim, impl=impl)
    with torch.no_grad():
        torgb.bias.normal_()
    s = torgb.affine(w) / np.sqrt(ci)                                              # no demodulation
    ref = torch.einsum("oi,ni,nihw->nohw", torgb.weight[:, :, 0, 0], s, x) + torgb.bias[None, :, None, None]
    torch.testing.assert_close(torgb(x, w), ref, rtol=1e-5, atol=1e-5)


def test_minibatch_std_matches_loop():
    torch.manual_seed(3)
    x = torch.randn(8, 6, 4, 4)
    y = MinibatchStdLayer(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 4, 4)
    torch.testing.assert_close(y[:, :6], x)
    for j in range(2):  # groups are samples {j, j+2, j+4, j+6}
        members = x[j::2]
        for f in range(2):
            sd = (members[:, 3 * f:3 * f + 3].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            for i in range(j, 8, 2):
                torch.testing.assert_close(y[i, 6 + f], torch.full((4, 4), sd.item()))


# ---------------------------------------------------------------------------------------------
# Whole networks against a plain-torch functional StyleGAN2 written from the state dict.

_SQRT2 = np.sqrt(2)
_F4 = torch.tensor([1.0, 3, 3, 1])
_F4 = torch.outer(_F4, _F4) / 64  # the [1, 3, 3, 1] low-pass, normalised (symmetric: flips don't matter)


def _fir(x, pad, gain=1.0):
    """Zero-pad [left, right, top, bottom] then filter each channel with the 4x4 low-pass ('valid')."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, pad), (_F4 * gain).expand(c, 1, 4, 4), groups=c)


def _zero_insert(x):
    n, c, h, w = x.shape
    y = x.new_zeros(n, c, 2 * h, 2 * w)
    y[:, :, ::2, ::2] = x
    return y


def _lrelu(x, gain=_SQRT2):
    return F.leaky_relu(x, 0.2) * gain


def _functional_generator(sd, ws, w_dim, res, clamp):
    """StyleGAN2 config-f synthesis ('skip'), per-sample weights, noise_mode='const'."""
    def affine(prefix, w):
        a = sd[prefix + ".affine.weight"]
        return w @ (a / np.sqrt(w_dim)).t() + sd[prefix + ".affine.bias"]

    def layer(prefix, x, w, up):
        s = affine(prefix, w)
        wt = sd[prefix + ".weight"][None] * s[:, None, :, None, None]
        wt = wt * (wt.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        ys = []
        for i in range(x.shape[0]):
            if up == 1:   # correlation, 'same' padding
                ys.append(F.conv2d(x[i:i + 1], wt[i], padding=1))
            else:         # zero-insert, pad 3/2, low-pass x4, then a true (flipped) 3x3 convolution
                xi = _fir(_zero_insert(x[i:i + 1]), [3, 2, 3, 2], gain=4)
                ys.append(F.conv2d(xi, wt[i].flip([2, 3])))
        y = torch.cat(ys) + sd[prefix + ".noise_const"] * sd[prefix + ".noise_strength"]
        return _lrelu(y + sd[prefix + ".bias"][None, :, None, None]).clamp(-clamp, clamp)

    def torgb(prefix, x, w):
        s = affine(prefix, w) / np.sqrt(x.shape[1])
        y = torch.einsum("oi,ni,nihw->nohw", sd[prefix + ".weight"][:, :, 0, 0], s, x)
        return (y + sd[prefix + ".bias"][None, :, None, None]).clamp(-clamp, clamp)

    x = sd["synthesis.b4.const"][None].repeat(ws.shape[0], 1, 1, 1)
    x = layer("synthesis.b4.conv1", x, ws[:, 0], 1)
    img = torgb("synthesis.b4.torgb", x, ws[:, 1])
    r, k = 8, 1
    while r <= res:
        b = f"synthesis.b{r}"
        x = layer(b + ".conv0", x, ws[:, k], 2)
        x = layer(b + ".conv1", x, ws[:, k + 1], 1)
        img = _fir(_zero_insert(img), [2, 1, 2, 1], gain=4) + torgb(b + ".torgb", x, ws[:, k + 2])
        r, k = 2 * r, k + 2
    return img


def _functional_discriminator(sd, img, res, clamp, group=4):
    """StyleGAN2 'resnet' discriminator with minibatch-std, from the state dict."""
    def conv(prefix, x, gain=1.0, act=True, bias=True, clamp_=clamp):
        w = sd[prefix + ".weight"]
        x = F.conv2d(x, w / np.sqrt(w[0].numel()), padding=w.shape[-1] // 2)
        if bias:
            x = x + sd[prefix + ".bias"][None, :, None, None]
        x = _lrelu(x, _SQRT2 * gain) if act else x * gain
        return x.clamp(-clamp_ * gain, clamp_ * gain) if clamp_ is not None else x

    def fc(prefix, x, act):
        w = sd[prefix + ".weight"]
        x = x @ (w / np.sqrt(w.shape[1])).t() + sd[prefix + ".bias"]
        return _lrelu(x) if act else x

    x = conv(f"b{res}.fromrgb", img)
    r = res
    while r >= 8:
        b = f"b{r}"
        skip_w = sd[b + ".skip.weight"] / np.sqrt(sd[b + ".skip.weight"][0].numel())
        y = F.conv2d(_fir(x, [1, 1, 1, 1])[:, :, ::2, ::2], skip_w) * np.sqrt(0.5)
        x = conv(b + ".conv0", x)
        w1 = sd[b + ".conv1.weight"] / np.sqrt(sd[b + ".conv1.weight"][0].numel())
        x = F.conv2d(_fir(x, [2, 2, 2, 2]), w1, stride=2) + sd[b + ".conv1.bias"][None, :, None, None]
        x = y + _lrelu(x, 1.0).clamp(-clamp * np.sqrt(0.5), clamp * np.sqrt(0.5))
        r //= 2
    n, c = x.shape[:2]
    g = x.reshape(group, n // group, c, 4, 4)
    sd_feat = (g.var(dim=0, unbiased=False) + 1e-8).sqrt().mean([1, 2, 3])      # one per group
    x = torch.cat([x, sd_feat.repeat(group)[:, None, None, None].expand(n, 1, 4, 4)], dim=1)
    x = conv("b4.conv", x)
    x = fc("b4.fc", x.flatten(1), True)
    return fc("b4.out", x, False)


@pytest.mark.parametrize("impl", ["native", "ref"])
def test_networks_match_functional_stylegan2(impl):
    G, D = _tiny("32", conv_clamp=0.8)
    with torch.no_grad():
        for name, p in list(G.named_parameters()) + list(D.named_parameters()):
            if name.endswith("bias"):
                p.normal_(0, 0.3)  # make every bias (all zero at init) matter
    set_impl(G, impl)
    set_impl(D, impl)
    z = torch.randn(8, G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, None, truncation_psi=0.6)
        img = G.synthesis(ws, noise_mode="const")
        logits = D(img)
        sd_g = G.state_dict()
        # Mapping: normalise z, 2 equalised-lr lrelu layers (lr multiplier 0.01), truncate.
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for i in range(2):
            w, b = sd_g[f"mapping.fc{i}.weight"], sd_g[f"mapping.fc{i}.bias"]
            x = _lrelu(x @ (w * 0.01 / np.sqrt(w.shape[1])).t() + b * 0.01)
        w_avg = sd_g["mapping.w_avg"]
        ws_ref = (w_avg + 0.6 * (x - w_avg))[:, None].expand(8, G.num_ws, G.w_dim)
        img_ref = _functional_generator(sd_g, ws_ref, G.w_dim, 32, clamp=0.8)
        logits_ref = _functional_discriminator(D.state_dict(), img_ref, 32, clamp=0.8)
    torch.testing.assert_close(ws, ws_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-4, atol=1e-5)
    assert img.std() > 0.1 and logits.std() > 1e-3


# ---------------------------------------------------------------------------------------------
# Native vs reference kernels on the same weights.

@pytest.mark.parametrize("train", [True, False])
def test_native_and_ref_agree(train):
    G, D = _tiny("32", conv_clamp=0.8)  # small clamp: the clamp path is taken in both
    G.train(train)
    D.train(train)
    z = z_from_seeds([0, 1, 2, 3], G.z_dim)
    params = list(G.parameters()) + list(D.parameters())
    conv_out = []
    G.synthesis.b16.conv1.register_forward_hook(lambda m, i, o: conv_out.append(o.detach()))
    out = {}
    for impl in ("native", "ref"):
        set_impl(G, impl)
        set_impl(D, impl)
        img = G(z, noise_mode="const", truncation_psi=0.7)
        logits = D(img)
        out[impl] = (img, logits, _grads(logits.square().sum(), params))
    (img_n, log_n, g_n), (img_r, log_r, g_r) = out["native"], out["ref"]
    torch.testing.assert_close(img_n, img_r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(log_n, log_r, rtol=1e-4, atol=1e-5)
    assert img_n.abs().max() > 0.1
    assert all((o.abs() == 0.8).any() for o in conv_out)  # the clamp path was taken
    for a, b in zip(g_n, g_r):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_set_impl_reaches_every_layer():
    G, D = _tiny()
    for net in (G, D):
        set_impl(net, "ref")
        layers = [m for m in net.modules() if hasattr(m, "impl")]
        assert len(layers) > 10 and all(m.impl == "ref" for m in layers)
        assert net.init_kwargs["impl"] == "ref"
        set_impl(net, None)
        assert all(m.impl is None for m in layers)
    with pytest.raises(ValueError, match="impl"):
        set_impl(G, "cuda")


# ---------------------------------------------------------------------------------------------
# Mapping: w_avg and truncation.

def test_truncation_and_w_avg():
    G, _ = _tiny()
    z = torch.randn(5, G.z_dim)
    ws0 = G.mapping(z, None, truncation_psi=0)
    assert torch.equal(ws0, G.mapping.w_avg.expand(5, G.num_ws, G.w_dim))
    ws1 = G.mapping(z, None)
    ws_half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(ws_half[:, :3], G.mapping.w_avg + 0.5 * (ws1[:, :3] - G.mapping.w_avg))
    assert torch.equal(ws_half[:, 3:], ws1[:, 3:])
    # All ws of an untruncated mapping are the same w.
    assert torch.equal(ws1, ws1[:, :1].expand_as(ws1))

    before = G.mapping.w_avg.clone()
    G.mapping(z, None)  # no update unless asked
    assert torch.equal(G.mapping.w_avg, before)
    G.mapping(z, None, update_emas=True)
    torch.testing.assert_close(G.mapping.w_avg, ws1[:, 0].mean(0).lerp(before, 0.995))


# ---------------------------------------------------------------------------------------------
# Seeds: deterministic per seed, independent of the batch.

def test_z_from_seeds():
    z = z_from_seeds([7, 3, 2 ** 32 - 1], 16)
    assert z.dtype == torch.float32 and z.shape == (3, 16)
    np.testing.assert_array_equal(z[1].numpy(), np.random.RandomState(3).randn(16).astype(np.float32))
    assert torch.equal(z_from_seeds([3], 16)[0], z[1])
    assert torch.equal(z_from_seeds(np.array([7, 3]), 16), z[:2])
    assert torch.equal(z_from_seeds(range(3, 4), 16)[0], z[1])
    for bad in ([-1], [2 ** 32], [1.5], []):
        with pytest.raises(ValueError, match="seeds"):
            z_from_seeds(bad, 16)
    for bad in (5, torch.tensor([1, 2]), "12"):
        with pytest.raises(TypeError, match="seeds"):
            z_from_seeds(bad, 16)


def test_generator_seeds_deterministic_and_batch_independent():
    G, _ = _tiny()
    G.eval()
    with torch.no_grad():
        a = G([11, 22, 33], noise_mode="const")
        b = G([22], noise_mode="const")
        c = G([11, 22, 33], noise_mode="const")
        d = G(z_from_seeds([11, 22, 33], G.z_dim), noise_mode="const")
        e = G([33, 22], noise_mode="const", truncation_psi=0.5)
        f = G([22], noise_mode="const", truncation_psi=0.5)
    assert torch.equal(a, c) and torch.equal(a, d)
    torch.testing.assert_close(a[1:2], b, rtol=0, atol=2e-5)  # BLAS/oneDNN blocking varies with N
    torch.testing.assert_close(e[1:2], f, rtol=0, atol=2e-5)  # BLAS/oneDNN blocking varies with N
    assert not torch.allclose(a[0], a[1])
    # Random noise really is random; 'none' differs from 'const'.
    with torch.no_grad():
        r1, r2 = G([22], noise_mode="random"), G([22], noise_mode="random")
        n0 = G([22], noise_mode="none")
    assert not torch.equal(r1, r2) and not torch.equal(n0, b)


# ---------------------------------------------------------------------------------------------
# Gradients.

def test_gradients_reach_all_parameters():
    G, D = _tiny()
    img = G(torch.randn(4, G.z_dim))
    loss = F.softplus(-D(img)).mean()
    params = list(G.parameters()) + list(D.parameters())
    grads = dict(zip(params, _grads(loss, params)))
    for net in (G, D):
        for name, p in net.named_parameters():
            g = grads[p]
            assert g is not None, name
            assert torch.isfinite(g).all() and g.abs().sum() > 0, name


@pytest.mark.parametrize("impl", ["native"])
def test_double_backward_r1_and_path_length(impl):
    G, D = _tiny()
    set_impl(G, impl)
    set_impl(D, impl)
    # R1: gradient penalty on reals, differentiated again w.r.t. D's parameters.
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    (r1_grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    penalty = r1_grad.square().sum([1, 2, 3]).mean()
    d_grads = _grads(penalty, list(D.parameters()))
    names = [n for n, _ in D.named_parameters()]
    got = {n for n, g in zip(names, d_grads) if g is not None and g.abs().sum() > 0}
    # dD/dx is piecewise constant in the biases after the (nonlinear) minibatch-std layer: lrelu'' = 0.
    assert set(names) - got == {"b4.conv.bias", "b4.fc.bias", "b4.out.bias"}

    # Same penalty gradients with the reference kernels.
    set_impl(D, "ref")
    (r1_ref,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    ref_grads = _grads(r1_ref.square().sum([1, 2, 3]).mean(), list(D.parameters()))
    torch.testing.assert_close(r1_grad, r1_ref, rtol=1e-4, atol=1e-6)
    for a, b in zip(d_grads, ref_grads):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)

    # Path length: gradient of <img, y> w.r.t. ws, differentiated again w.r.t. G's parameters.
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    img = G.synthesis(ws, noise_mode="random")
    y = torch.randn_like(img) / 32
    (pl_grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    pl_loss = pl_grad.square().sum(2).mean(1).sqrt().mean()
    g_grads = _grads(pl_loss, list(G.parameters()))
    names = [n for n, _ in G.named_parameters()]
    missing = {n for n, g in zip(names, g_grads) if g is None or not torch.isfinite(g).all()}
    assert all(n.endswith("torgb.bias") for n in missing)  # additive RGB bias: no effect on d img / d ws
    assert any(n.startswith("mapping.") and g is not None and g.abs().sum() > 0 for n, g in zip(names, g_grads))


# ---------------------------------------------------------------------------------------------
# Mixed precision only on CUDA; Freeze-D; conditioning.

def test_fp16_blocks_run_float32_on_cpu():
    G16, D16 = _tiny(num_fp16_res=2)
    G32, D32 = make_networks("32", num_fp16_res=0)
    G32.load_state_dict(G16.state_dict())
    D32.load_state_dict(D16.state_dict())
    assert G16.synthesis.b32.use_fp16 and not G32.synthesis.b32.use_fp16
    assert D16.b32.use_fp16
    z = torch.randn(4, G16.z_dim)
    img = G16(z, noise_mode="const")
    assert img.dtype == torch.float32
    assert torch.equal(img, G32(z, noise_mode="const"))
    assert torch.equal(D16(img), D32(img))


@pytest.mark.parametrize("impl", ["native", "ref"])
def test_fp16_code_path_forced_on_cpu(monkeypatch, impl):
    """The float16 blocks' casts (and the fp16 pre-normalisation in modconv) run end to end when
    float16 is forced on CPU; results stay within float16 error of float32, R1 still works."""
    import retina_fast.gan.architecture as architecture
    monkeypatch.setattr(architecture, "_run_dtype",
                        lambda use_fp16, device, force_fp32: torch.float16 if use_fp16 and not force_fp32
                        else torch.float32)
    G, D = _tiny(num_fp16_res=2)
    set_impl(G, impl)
    set_impl(D, impl)
    z = torch.randn(4, G.z_dim)
    img16, img32 = G(z, noise_mode="const"), G(z, noise_mode="const", force_fp32=True)
    assert img16.dtype == torch.float32 and not torch.equal(img16, img32)
    torch.testing.assert_close(img16, img32, rtol=0, atol=0.05)
    x = img32.detach().requires_grad_(True)
    logits = D(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, D(x, force_fp32=True), rtol=0.02, atol=0.02)
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    g.square().sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in D.parameters())


def test_freeze_d():
    torch.manual_seed(0)
    D0 = Discriminator(img_resolution=32, channel_base=1024, channel_max=64)
    D3 = Discriminator(img_resolution=32, channel_base=1024, channel_max=64, block_kwargs={"freeze_layers": 3})
    assert D0.state_dict().keys() == D3.state_dict().keys()
    frozen = {n for n, _ in D0.named_parameters()} - {n for n, _ in D3.named_parameters()}
    assert frozen == {"b32.fromrgb.weight", "b32.fromrgb.bias", "b32.conv0.weight", "b32.conv0.bias",
                      "b32.conv1.weight", "b32.conv1.bias"}
    D3.load_state_dict(D0.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(D0(x), D3(x))


def test_conditional_networks():
    torch.manual_seed(0)
    G, D = make_networks("32", c_dim=3)
    c = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    img = G(torch.randn(4, G.z_dim), c)
    assert D(img, c).shape == (4, 1)
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(4, G.z_dim))
    with pytest.raises(ValueError, match="conditional"):
        D(img)


# ---------------------------------------------------------------------------------------------
# init_kwargs and checkpoints.

def test_init_kwargs_json_rebuild():
    G, D = _tiny()
    for net, cls in ((G, Generator), (D, Discriminator)):
        kw = json.loads(json.dumps(net.init_kwargs))
        assert kw == net.init_kwargs
        net2 = cls(**kw)
        sd, sd2 = net.state_dict(), net2.state_dict()
        assert sd.keys() == sd2.keys() and all(sd[k].shape == sd2[k].shape for k in sd)


def _snapshot(G, D, path, **extra):
    snap = {"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), "cur_nimg": 0}
    snap.update(extra)
    torch.save(snap, path)
    return path


def test_from_checkpoint_round_trip(tmp_path):
    G, D = _tiny()
    path = _snapshot(G, D, tmp_path / "snap.pt")
    G2 = Generator.from_checkpoint(path, impl="ref")
    assert not G2.training and not any(p.requires_grad for p in G2.parameters())
    assert all(m.impl == "ref" for m in G2.modules() if hasattr(m, "impl"))
    sd, sd2 = G.state_dict(), G2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    G.eval()
    G2 = Generator.from_checkpoint(str(path))
    with torch.no_grad():
        assert torch.equal(G([5, 6], noise_mode="const"), G2([5, 6], noise_mode="const"))
    D2 = Discriminator.from_checkpoint(path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(D.eval()(x), D2(x))


def test_from_checkpoint_errors(tmp_path):
    G, D = _tiny()
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        Generator.from_checkpoint(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(ValueError, match="garbage.pt"):
        Generator.from_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    _snapshot(G, D, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(ValueError, match="truncated.pt"):
        Generator.from_checkpoint(truncated)
    path = _snapshot(G, D, tmp_path / "nokey.pt")
    with pytest.raises(ValueError, match="'G_nope'"):
        Generator.from_checkpoint(path, key="G_nope")
    other = _snapshot(G, D, tmp_path / "other.pt", format="someone-else/3")
    with pytest.raises(ValueError, match="other.pt.*format"):
        Generator.from_checkpoint(other)
    mismatch = tmp_path / "mismatch.pt"
    G64, _ = make_networks("64")
    _snapshot(G, D, mismatch, G_ema=G64.state_dict())
    with pytest.raises(ValueError, match="mismatch.pt"):
        Generator.from_checkpoint(mismatch)
    with pytest.raises(ValueError, match="impl"):
        Generator.from_checkpoint(path, impl="fast")


def _record_constructions(monkeypatch):
    """Devices on which a Generator or Discriminator is constructed, in call order."""
    built = []
    for cls in (Generator, Discriminator):
        init = cls.__init__

        def recording(self, *args, _init=init, _name=cls.__name__, **kwargs):
            built.append((_name, torch.get_default_device().type))
            _init(self, *args, **kwargs)
        monkeypatch.setattr(cls, "__init__", recording)
    return built


def test_hostile_kwargs_refused_before_any_allocation(tmp_path, monkeypatch):
    # A small state dict with z_dim 200000 in G_kwargs: building G from the kwargs first reached
    # 4.7 GB. The bound is checked before any network is constructed, on any device.
    G, D = _tiny()
    built = _record_constructions(monkeypatch)
    hostile = _snapshot(G, D, tmp_path / "hostile.pt", G_kwargs=dict(G.init_kwargs, z_dim=200000))
    for load in (lambda: Generator.from_checkpoint(hostile), lambda: snap.load_snapshot(hostile)):
        with pytest.raises(ValueError, match=r"hostile\.pt.*G_kwargs\['z_dim'\] = 200000 is out of range") as e:
            load()
        assert "\n" not in str(e.value)
    assert built == []
    for kw, key in ((dict(img_resolution=1 << 20), "img_resolution"), (dict(img_resolution=48), "img_resolution"),
                    (dict(mapping_kwargs={"num_layers": 10 ** 6}), "num_layers"),
                    (dict(synthesis_kwargs={"channel_max": 10 ** 6}), "channel_max"),
                    (dict(w_dim=float("inf")), "w_dim")):
        bad = _snapshot(G, D, tmp_path / "bad.pt", G_kwargs=dict(G.init_kwargs, **kw))
        with pytest.raises(ValueError, match=f"bad.pt.*G_kwargs.*{key}"):
            Generator.from_checkpoint(bad)
    assert built == []
    bad = _snapshot(G, D, tmp_path / "bad.pt", D_kwargs=dict(D.init_kwargs, channel_base=1 << 30))
    with pytest.raises(ValueError, match=r"bad.pt.*D_kwargs\['channel_base'\]"):
        Discriminator.from_checkpoint(bad)
    assert built == [("Generator", "meta")]   # G's (good) arguments were compared to G's weights


def test_kwargs_must_fit_the_stored_shapes(tmp_path, monkeypatch):
    # Within bounds but not what the weights are: the shapes are compared on the meta device (no
    # memory), before the real network is built.
    G, D = _tiny()
    G64, D64 = make_networks("64")
    built = _record_constructions(monkeypatch)
    wide = _snapshot(G, D, tmp_path / "wide.pt", G_kwargs=dict(G.init_kwargs, z_dim=8192))
    with pytest.raises(ValueError, match=r"wide.pt.*'G'\['mapping.fc0.weight'\] has shape \[64, 64\] but G_kwargs "
                                         r"give \[64, 8192\]"):
        Generator.from_checkpoint(wide)
    assert built == [("Generator", "meta")]
    # G_ema is compared too, and D against D_kwargs.
    for kw, name in ((dict(G_ema=G64.state_dict()), "'G_ema'"), (dict(D=D64.state_dict()), "'D'"),
                     (dict(G={**G.state_dict(), "extra": torch.zeros(1)}), "'G'.*unexpected")):
        bad = tmp_path / "bad.pt"
        torch.save({"format": snap.FORMAT, "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
                    "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), **kw}, bad)
        with pytest.raises(ValueError, match=f"bad.pt.*{name}"):
            snap.load_snapshot(bad)
    assert all(device == "meta" for _, device in built)
    unknown = _snapshot(G, D, tmp_path / "unknown.pt", G_kwargs=dict(G.init_kwargs, evil=1))
    with pytest.raises(ValueError, match="unknown.pt'?: G_kwargs do not build the network.*evil"):
        Generator.from_checkpoint(unknown)


# ---------------------------------------------------------------------------------------------
# Argument checks.

def test_bad_arguments():
    with pytest.raises(ValueError, match="img_resolution.*power of 2"):
        Generator(img_resolution=48, w_dim=8, z_dim=8)
    with pytest.raises(ValueError, match="img_resolution.*power of 2"):
        Discriminator(img_resolution=100)
    with pytest.raises(ValueError, match="img_resolution"):
        Generator(img_resolution=2)
    with pytest.raises(ValueError, match="z_dim"):
        Generator(z_dim=0)
    with pytest.raises(ValueError, match="impl"):
        Generator(impl="cuda")
    with pytest.raises(ValueError, match="architecture"):
        Discriminator(img_resolution=32, channel_base=1024, architecture="dense")
    with pytest.raises(ValueError, match="conv_clamp"):
        Discriminator(img_resolution=32, channel_base=1024, conv_clamp=-1)
    with pytest.raises(ValueError, match="channel_base"):
        Discriminator(img_resolution=32, channel_base=16)
    with pytest.raises(ValueError, match="preset"):
        make_networks("128")
    with pytest.raises(ValueError, match="gamma"):
        make_networks("32", gamma=1)

    G, D = _tiny()
    with pytest.raises(ValueError, match="noise_mode"):
        G(torch.randn(2, G.z_dim), noise_mode="fixed")
    with pytest.raises(ValueError, match="z"):
        G(torch.randn(2, G.z_dim + 1))
    with pytest.raises(TypeError, match="z"):
        G(torch.zeros(2, G.z_dim, dtype=torch.int64))
    with pytest.raises(ValueError, match="ws"):
        G.synthesis(torch.randn(2, G.num_ws - 1, G.w_dim))
    with pytest.raises(ValueError, match="img"):
        D(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        D(torch.randn(6, 3, 32, 32))
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, G.z_dim), torch.randn(2, 3))


# ---------------------------------------------------------------------------------------------
# CUDA: float16 on the top resolutions, channels_last, same result as float32 within fp16 error.

@pytest.mark.cuda
def test_cuda_mixed_precision():
    G, D = _tiny("64", num_fp16_res=2)
    G, D = G.cuda().eval(), D.cuda().eval()
    z = z_from_seeds([1, 2, 3, 4], G.z_dim, device="cuda")
    with torch.no_grad():
        img16 = G(z, noise_mode="const")
        img32 = G(z, noise_mode="const", force_fp32=True)
        log16, log32 = D(img32), D(img32, force_fp32=True)
    assert img16.dtype == torch.float32 and img16.is_contiguous()
    assert not torch.equal(img16, img32)  # the fp16 path really ran
    torch.testing.assert_close(img16, img32, rtol=0, atol=0.05)
    torch.testing.assert_close(log16, log32, rtol=0.05, atol=0.05)
    # CUDA native vs CUDA reference on the same weights.
    with torch.no_grad():
        set_impl(G, "ref")
        torch.testing.assert_close(G(z, noise_mode="const", force_fp32=True), img32, rtol=1e-4, atol=1e-4)
