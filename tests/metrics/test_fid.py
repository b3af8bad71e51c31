"""FID: Frechet distance against closed forms, running statistics, the Inception-v3 port, the cache, CLI."""
import argparse
import os

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from retina_fast.data.dataset import (
    image_name,
    write_dataset_json,
    write_png,
    zip_dataset,
)
from retina_fast.metrics import (
    FeatureStats,
    InceptionV3FID,
    compute_stats,
    dataset_stats,
    fid,
    frechet_distance,
    generator_stats,
    load_inception,
)
from retina_fast.metrics import inception as inc

# Parameters of Inception3(num_classes=1008, aux_logits=False): 21,785,568 in the convolutions and
# batch norms up to Mixed_7c plus 2048 * 1008 + 1008 in the unused classifier.
INCEPTION_PARAMS = 23_850_960


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_spd(rng, d, rank=None, scale=1.0):
    a = rng.standard_normal((d, rank or d)) * scale
    return a, a @ a.T


def _closed_form(mu1, s1, mu2, s2):
    r1 = scipy.linalg.sqrtm(s1)
    cross = scipy.linalg.sqrtm(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross).real)


# ----------------------------------------------------------------------------------------------
# The distance


def test_frechet_matches_scipy_sqrtm_closed_form():
    rng = np.random.default_rng(1)
    for d in (2, 8, 32):
        _, s1 = _random_spd(rng, d)
        _, s2 = _random_spd(rng, d)
        s1 += np.eye(d)  # well conditioned
        s2 += 0.5 * np.eye(d)
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 3
        ours = frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(_closed_form(mu1, s1, mu2, s2), rel=1e-9)
        # pytorch-fid's form tr(sqrtm(s1 @ s2)) is the same quantity
        alt = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
        assert ours == pytest.approx(alt, rel=1e-8)


def test_frechet_isotropic_exact():
    d, a, b = 16, 4.0, 0.25
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    # |dmu|^2 + d (sqrt a - sqrt b)^2
    expect = d * 0.25 + d * (2.0 - 0.5) ** 2
    assert frechet_distance(mu1, a * np.eye(d), mu2, b * np.eye(d)) == pytest.approx(expect, rel=1e-12)


def test_frechet_rank_deficient_matches_nuclear_norm():
    # S1 = A A^T, S2 = B B^T of rank 3 in 20 dimensions: tr((S1^1/2 S2 S1^1/2)^1/2) = ||A^T B||_* exactly.
    rng = np.random.default_rng(2)
    a, s1 = _random_spd(rng, 20, rank=3)
    b, s2 = _random_spd(rng, 20, rank=3)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    nuclear = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    expect = np.sum((mu1 - mu2) ** 2) + np.sum(a * a) + np.sum(b * b) - 2 * nuclear
    got = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and np.isfinite(got)
    assert got == pytest.approx(expect, rel=1e-7)
    # A rank-deficient set with itself: ~0 relative to its total variance, never negative.
    assert 0 <= frechet_distance(mu1, s1, mu1, s1) < 1e-9 * np.trace(s1)
    # Tiny negative eigenvalues from rounding do not produce NaN or complex values.
    s1_noisy = s1 - 1e-12 * np.eye(20)
    assert np.isfinite(frechet_distance(mu1, s1_noisy, mu2, s2))


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))


# ----------------------------------------------------------------------------------------------
# Running statistics


def test_feature_stats_match_numpy_in_pieces_with_large_offset():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((257, 6)) * 0.01 + 1e4  # large mean, small spread
    st = FeatureStats()
    for lo in range(0, 257, 50):
        st.append(torch.from_numpy(x[lo:lo + 50]))
    assert st.n == 257
    np.testing.assert_allclose(st.mu, x.mean(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-15)
    again = FeatureStats(st.mu, st.sigma, st.n)
    np.testing.assert_allclose(again.sigma, st.sigma, rtol=1e-12)
    with pytest.raises(ValueError, match="dimensions"):
        st.append(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats().append(np.array([[np.nan, 1.0]]))


def test_fid_of_set_with_itself_is_zero_and_sampled_gaussians_match_closed_form():
    rng = np.random.default_rng(4)
    d = 4
    _, s1 = _random_spd(rng, d)
    _, s2 = _random_spd(rng, d)
    s1 += np.eye(d)
    mu1, mu2 = np.zeros(d), np.array([1.0, -1.0, 0.5, 0.0])
    x1 = rng.multivariate_normal(mu1, s1, size=40000)
    x2 = rng.multivariate_normal(mu2, s2, size=40000)
    a, b = FeatureStats().append(x1), FeatureStats().append(x2)
    assert fid(a, a) < 1e-6 * np.trace(a.sigma)
    truth = _closed_form(mu1, s1, mu2, s2)
    assert fid(a, b) == pytest.approx(truth, rel=0.05)
    assert fid((a.mu, a.sigma), b) == fid(a, b)


def test_fid_self_rank_deficient_features():
    # 6 images, 512-D features: covariance of rank 5; FID with itself must still be ~0.
    rng = np.random.default_rng(5)
    st = FeatureStats().append(np.abs(rng.standard_normal((6, 512))))
    assert 0 <= fid(st, st) < 1e-6 * np.trace(st.sigma)


def test_stats_save_load_roundtrip(tmp_path):
    st = FeatureStats().append(np.random.default_rng(6).standard_normal((10, 3)))
    path = st.save(tmp_path / "s.npz", meta={"k": 1})
    back = FeatureStats.load(path)
    assert back.n == 10 and np.array_equal(back.mu, st.mu) and np.array_equal(back.sigma, st.sigma)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary left behind
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.npz"):
        FeatureStats.load(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------------------------
# Inception-v3


def test_state_dict_layout_matches_pytorch_fid_file():
    torchvision = pytest.importorskip("torchvision")
    net = InceptionV3FID()
    sd = net.state_dict()
    # key names of pt_inception-2015-12-05-6726825d.pth (pytorch-fid's fid_inception_v3)
    for key, shape in [("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)),
                       ("Conv2d_1a_3x3.bn.running_var", (32,)),
                       ("Mixed_5b.branch_pool.conv.weight", (32, 192, 1, 1)),
                       ("Mixed_6e.branch7x7dbl_5.conv.weight", (192, 192, 1, 7)),
                       ("Mixed_7a.branch7x7x3_4.conv.weight", (192, 192, 3, 3)),
                       ("Mixed_7c.branch3x3dbl_3b.bn.bias", (384,)),
                       ("fc.weight", (1008, 2048)), ("fc.bias", (1008,))]:
        assert tuple(sd[key].shape) == shape, key
    assert sum(p.numel() for p in net.parameters()) == INCEPTION_PARAMS
    ref = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    ref_sd = ref.state_dict()
    assert list(sd) == list(ref_sd)
    assert all(sd[k].shape == ref_sd[k].shape for k in sd)
    assert sum(p.numel() for p in ref.parameters()) == INCEPTION_PARAMS


def test_fid_blocks_reproduce_tf_pooling_quirks():
    tv = pytest.importorskip("torchvision.models.inception")
    torch.manual_seed(0)
    # InceptionA: average pool excludes the padding (TF 'SAME'), everything else as torchvision.
    ref_a, ours_a = tv.InceptionA(192, pool_features=32).eval(), inc.InceptionA(192, 32).eval()
    ours_a.load_state_dict(ref_a.state_dict())
    x = torch.rand(1, 192, 9, 9)
    with torch.no_grad():
        got, ref = ours_a(x), ref_a(x)
        expect_pool = ref_a.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    torch.testing.assert_close(got[:, :-32], ref[:, :-32], rtol=0, atol=0)
    torch.testing.assert_close(got[:, -32:], expect_pool, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[:, -32:, 1:-1, 1:-1], ref[:, -32:, 1:-1, 1:-1], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got[:, -32:, 0], ref[:, -32:, 0])
    # InceptionE of Mixed_7c: a max pool in the pool branch.
    ref_e, ours_e = tv.InceptionE(2048).eval(), inc.InceptionE(2048, pool="max").eval()
    ours_e.load_state_dict(ref_e.state_dict())
    x = torch.rand(1, 2048, 4, 4)
    with torch.no_grad():
        got, ref = ours_e(x), ref_e(x)
        expect_pool = ref_e.branch_pool(F.max_pool2d(x, 3, 1, 1))
    torch.testing.assert_close(got[:, :-192], ref[:, :-192], rtol=0, atol=0)
    torch.testing.assert_close(got[:, -192:], expect_pool, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got[:, -192:], ref[:, -192:])
    # InceptionC (Mixed_6b) with channels_7x7=128 against torchvision on the non-pool branches
    ref_c, ours_c = tv.InceptionC(768, channels_7x7=128).eval(), inc.InceptionC(768, 128).eval()
    ours_c.load_state_dict(ref_c.state_dict())
    x = torch.rand(1, 768, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours_c(x)[:, :-192], ref_c(x)[:, :-192], rtol=0, atol=0)


def test_resize_modes():
    x = torch.rand(2, 3, 7, 5) * 255
    torch.testing.assert_close(inc.resize_images(x, 4, "bilinear"),
                               F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False))
    # TF1 legacy bilinear: output j samples input j * in / out (3 -> 2: positions 0 and 1.5)
    np.testing.assert_allclose(inc._tf1_bilinear_matrix(3, 2), [[1, 0, 0], [0, 0.5, 0.5]])
    np.testing.assert_allclose(inc._tf1_bilinear_matrix(2, 4), [[1, 0], [0.5, 0.5], [0, 1], [0, 1]])
    y = inc.resize_images(x, 4, "bilinear-tf1")
    assert y.shape == (2, 3, 4, 4)
    torch.testing.assert_close(y[..., 0, 0], x[..., 0, 0])
    # clean-fid's mode: Pillow bicubic on float channels; agrees with Pillow on uint8 to rounding
    from PIL import Image
    img = (np.random.default_rng(0).random((40, 30, 3)) * 255).astype(np.uint8)
    t = torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))
    pil = np.asarray(Image.fromarray(img).resize((16, 16), Image.BICUBIC)).astype(np.float32)
    got = inc.resize_images(t, 16, "bicubic-pil")[0].numpy().transpose(1, 2, 0)
    assert np.abs(got - pil).max() <= 1.0
    with pytest.raises(ValueError, match="resize_mode"):
        inc.resize_images(x, 4, "nearest")
    with pytest.raises(ValueError, match="resize"):
        InceptionV3FID(resize=32)


def test_inception_forward_checks_input():
    net = InceptionV3FID(resize=75)
    with pytest.raises(ValueError, match="RGB"):
        net(torch.zeros(1, 1, 80, 80, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0-255"):
        net(torch.full((1, 3, 80, 80), -0.5))
    with pytest.raises(TypeError, match="Tensor"):
        net(np.zeros((1, 3, 80, 80), np.uint8))


def _write_phantom_dataset(folder, n=6, size=64, variant=0):
    """A StyleGAN-layout dataset of `n` crops of skimage's real fundus photo."""
    from skimage.data import retina
    from skimage.transform import resize
    base = (resize(retina(), (160, 160), anti_aliasing=True) * 255).astype(np.uint8)
    items = []
    for i in range(n):
        r, c = 10 * i, 80 - 12 * i
        crop = base[r:r + size, c:c + size].astype(np.int16) + 9 * variant
        name = image_name(i)
        write_png(os.path.join(folder, name), np.clip(crop, 0, 255).astype(np.uint8))
        items.append((name, i % 2))
    write_dataset_json(folder, items)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_phantom_dataset(str(tmp_path_factory.mktemp("fid_ds") / "ds"))


def test_random_inception_end_to_end_on_dataset(dataset):
    torch.manual_seed(0)
    net = InceptionV3FID()  # full 299 x 299 bilinear
    from retina_fast.data.dataset import read_image
    imgs = torch.from_numpy(np.stack([read_image(dataset, image_name(i)) for i in range(2)]).transpose(0, 3, 1, 2))
    feats = net(imgs)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert not torch.equal(feats[0], feats[1])
    small = InceptionV3FID(resize=75)
    small.load_state_dict(net.state_dict())
    st = dataset_stats(dataset, small, batch_size=2)
    assert st.n == 6 and st.mu.shape == (2048,) and st.sigma.shape == (2048, 2048)
    assert np.all(np.isfinite(st.sigma))
    # the same images through compute_stats on an array give the same statistics
    from retina_fast.data.dataset import read_image as ri
    arr = np.stack([ri(dataset, image_name(i)) for i in range(6)])
    st2 = compute_stats(arr, small, batch_size=4)
    np.testing.assert_allclose(st2.mu, st.mu, rtol=1e-5, atol=1e-6)


def test_load_inception_state_dict_and_errors(tmp_path):
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_inception(missing)
    torch.manual_seed(1)
    src = InceptionV3FID(resize=75)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    net = load_inception(tmp_path / "w.pth", resize=75)
    x = torch.randint(0, 256, (2, 3, 80, 80), dtype=torch.uint8)
    torch.testing.assert_close(net(x), src(x), rtol=0, atol=0)
    assert "sha256:" in net.identity and "75 bilinear" in net.identity
    sd["Mixed_5b.extra.weight"] = sd.pop("Mixed_5b.branch1x1.conv.weight")
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        load_inception(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="junk.pth"):
        load_inception(tmp_path / "junk.pth")


class _ScriptedDetector(torch.nn.Module):
    """Stands in for StyleGAN2-ADA's TorchScript detector: uint8 [N,3,H,W] -> [N, dim]."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, dim)

    def forward(self, x, return_features: bool = False):
        y = F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)
        return self.proj(y) if return_features else self.proj(y)[:, :10]


def test_load_inception_torchscript(tmp_path):
    torch.manual_seed(2)
    good = torch.jit.script(_ScriptedDetector(2048))
    torch.jit.save(good, str(tmp_path / "det.pt"))
    net = load_inception(tmp_path / "det.pt")
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(net(x), good(x, return_features=True))
    assert net.identity.startswith("TorchScript(weights=sha256:")
    torch.jit.save(torch.jit.script(_ScriptedDetector(100)), str(tmp_path / "small.pt"))
    with pytest.raises(ValueError, match="2048"):
        load_inception(tmp_path / "small.pt")


# ----------------------------------------------------------------------------------------------
# Cache


class _CountingExtractor:
    """Cheap extractor: mean colour of each 4 x 4 cell (48-D); counts the images it sees."""

    identity = "test-cells-4x4"

    def __init__(self):
        self.seen = 0

    def __call__(self, x):
        self.seen += x.shape[0]
        return F.adaptive_avg_pool2d(x.float(), 4).flatten(1)


def test_dataset_stats_cache_hit_and_miss(tmp_path):
    ds = _write_phantom_dataset(str(tmp_path / "ds"))
    cache = tmp_path / "cache"
    ext = _CountingExtractor()
    first = dataset_stats(ds, ext, batch_size=4, cache_dir=cache)
    assert ext.seen == 6 and len(list(cache.glob("fid-stats-*.npz"))) == 1
    again = dataset_stats(ds, ext, batch_size=3, cache_dir=cache)
    assert ext.seen == 6  # served from the cache
    assert again.n == first.n and np.array_equal(again.mu, first.mu) and np.array_equal(again.sigma, first.sigma)
    # a zip of the same images gives the same statistics (its key differs: CRCs, not mtimes)
    zip_dataset(ds, str(tmp_path / "ds.zip"))
    z = dataset_stats(str(tmp_path / "ds.zip"), ext, batch_size=4)
    np.testing.assert_allclose(z.sigma, first.sigma, rtol=1e-12)
    # max_items is part of the key; the subset is a random (seed 0) choice
    sub = dataset_stats(ds, ext, max_items=4, cache_dir=cache)
    assert sub.n == 4 and len(list(cache.glob("fid-stats-*.npz"))) == 2
    # changing one image misses the cache and changes the statistics
    seen = ext.seen
    from retina_fast.data.dataset import read_image
    img = read_image(ds, image_name(2))
    write_png(os.path.join(ds, image_name(2)), 255 - img)
    changed = dataset_stats(ds, ext, batch_size=4, cache_dir=cache)
    assert ext.seen == seen + 6 and not np.array_equal(changed.mu, first.mu)
    # a different extractor identity misses too
    other = _CountingExtractor()
    other.identity = "another"
    dataset_stats(ds, other, cache_dir=cache)
    assert other.seen == 6
    with pytest.raises(ValueError, match="extractor_id"):
        dataset_stats(ds, lambda x: x.float().flatten(1), cache_dir=cache)
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]


def test_dataset_stats_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dataset_stats(tmp_path / "nope", _CountingExtractor())
    with pytest.raises(ValueError, match="max_items"):
        dataset_stats(tmp_path, _CountingExtractor(), max_items=0)
    (tmp_path / "one").mkdir()
    write_png(str(tmp_path / "one" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=">= 2"):
        dataset_stats(tmp_path / "one", _CountingExtractor())


# ----------------------------------------------------------------------------------------------
# Generator statistics


def test_generator_stats_deterministic_and_batch_independent():
    from retina_fast.gan.networks import make_networks
    torch.manual_seed(3)
    G, _ = make_networks("32")  # the tiny preset of the real StyleGAN2 generator
    G.eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)  # initialised to 0: make the noise visible
    ext = _CountingExtractor()
    a = generator_stats(G, ext, num_images=10, batch_size=3, noise_mode="const", seed=5)
    b = generator_stats(G, ext, num_images=10, batch_size=4, noise_mode="const", seed=5)
    assert a.n == b.n == 10 and ext.seen == 20
    # The same latents whatever the batch size. Batched kernels may round a rare pixel to the
    # other uint8 level (images agree to ~1e-5), which moves a 64-pixel cell mean by 1/64 and a
    # covariance entry by ~0.1: judge sigma on the scale of its entries (thousands here).
    np.testing.assert_allclose(a.mu, b.mu, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-2, atol=1e-4 * np.abs(b.sigma).max())
    c = generator_stats(G, ext, num_images=10, batch_size=3, noise_mode="const", seed=6)
    assert not np.allclose(c.mu, a.mu)
    # random noise: reproducible for a seed, and the caller's RNG state is untouched
    state = torch.get_rng_state()
    r1 = generator_stats(G, ext, num_images=6, batch_size=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = generator_stats(G, ext, num_images=6, batch_size=3, seed=1)
    assert np.array_equal(r1.mu, r2.mu)
    assert not np.array_equal(r1.mu, generator_stats(G, ext, num_images=6, batch_size=3, seed=1,
                                                     noise_mode="const").mu)
    with pytest.raises(ValueError, match="num_images"):
        generator_stats(G, ext, num_images=1)
    # a conditional generator needs labels to draw from
    Gc, _ = make_networks("32", c_dim=2)
    with pytest.raises(ValueError, match="class_labels"):
        generator_stats(Gc, ext, num_images=4)
    cond = generator_stats(Gc.eval(), ext, num_images=4, batch_size=2, class_labels=[0, 1, 1], noise_mode="const")
    assert cond.n == 4


# ----------------------------------------------------------------------------------------------
# Command line


def test_cli_fid_of_folder_with_itself(tmp_path, dataset, capsys):
    from retina_fast.metrics.cli import register
    torch.manual_seed(4)
    torch.save(InceptionV3FID().state_dict(), tmp_path / "w.pth")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="stage"))
    args = parser.parse_args(["fid", "--real", dataset, "--fake", dataset, "--inception", str(tmp_path / "w.pth"),
                              "--batch", "3", "--device", "cpu", "--cache-dir", str(tmp_path / "c")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    value = float(out.strip().split("FID")[-1])
    assert 0 <= value < 1e-3
    assert "bilinear" in out and len(list((tmp_path / "c").glob("*.npz"))) == 1


def test_cli_fid_of_checkpoint(tmp_path, dataset, capsys):
    from retina_fast.gan.networks import make_networks
    from retina_fast.metrics.cli import register
    torch.manual_seed(5)
    G, D = make_networks("32")
    torch.save({"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}, tmp_path / "snap.pt")
    torch.save(InceptionV3FID().state_dict(), tmp_path / "w.pth")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="stage"))
    args = parser.parse_args(["fid", "--real", dataset, "--checkpoint", str(tmp_path / "snap.pt"), "--num", "4",
                              "--inception", str(tmp_path / "w.pth"), "--batch", "4", "--device", "cpu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "4 images" in out and float(out.strip().split("FID")[-1]) > 0
    with pytest.raises(ValueError, match="exactly one of --fake"):  # the top-level CLI: one line, exit 2
        parser.parse_args(["fid", "--real", dataset, "--inception", "x"]).func(
            parser.parse_args(["fid", "--real", dataset, "--inception", "x"]))
