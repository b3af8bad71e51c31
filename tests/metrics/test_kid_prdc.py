"""KID, precision/recall, density/coverage: reference formulas, planted truths, the prdc package,
the shared feature pass and cache, `retina-fast metrics`, and the training hook."""
import csv
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retina_fast.data.dataset import image_name, write_dataset_json, write_png
from retina_fast.metrics import (
    FeatureStats,
    compute_stats,
    dataset_stats,
    evaluate_metrics,
    fid,
    kid,
    knn_radii,
    metric_columns,
    mmd2_unbiased,
    parse_metrics,
    prdc,
    precision_recall,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------
# References written out here


def _mmd2_direct(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, pair by pair (O(n^2) kernel evaluations)."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def _nvlabs_kid(real_features, gen_features, num_subsets, max_subset_size, seed):
    """StyleGAN2-ADA's compute_kid loop, literally (global np.random seeded here)."""
    np.random.seed(seed)
    n = real_features.shape[1]
    m = min(min(real_features.shape[0], gen_features.shape[0]), max_subset_size)
    t = 0
    for _subset_idx in range(num_subsets):
        x = gen_features[np.random.choice(gen_features.shape[0], m, replace=False)]
        y = real_features[np.random.choice(real_features.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def _brute_prdc(real, fake, k):
    """All four metrics from full distance matrices and sorted k-NN distances, pair by pair."""
    def dists(a, b):
        return np.array([[np.sqrt(((u - v) ** 2).sum()) for v in b] for u in a])

    def radii(a):
        return np.array([np.sort(row)[k] for row in dists(a, a)])   # row[0] is the vector itself

    rr, rf, d = radii(real), radii(fake), dists(fake, real)          # d[f, r]
    return {"precision": np.mean([any(d[i, j] <= rr[j] for j in range(len(real))) for i in range(len(fake))]),
            "recall": np.mean([any(d[i, j] <= rf[i] for i in range(len(fake))) for j in range(len(real))]),
            "density": np.mean([sum(d[i, j] < rr[j] for j in range(len(real))) for i in range(len(fake))]) / k,
            "coverage": np.mean([d[:, j].min() < rr[j] for j in range(len(real))]),
            "radii_real": rr}


# ----------------------------------------------------------------------------------------------
# KID


def test_kid_matches_direct_formula_and_is_about_zero_for_a_set_with_itself():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 5))
    y = rng.standard_normal((30, 5)) * 1.3 + 0.4
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_direct(x, y), rel=1e-12)
    # subsets no larger than max_subset_size hold every vector: KID is the MMD^2 of the sets
    z = rng.standard_normal((24, 5)) * 1.3 + 0.4
    assert kid(x, z, num_subsets=3) == pytest.approx(_mmd2_direct(z, x), rel=1e-12)
    # with itself: 2 (mean off-diagonal - mean diagonal kernel) / n, an O(1/n) term (the pairs of a
    # vector with itself are the only difference from a second sample)
    self_kid = kid(x, x, num_subsets=2)
    kxx = (x @ x.T / 5 + 1) ** 3
    off = (kxx.sum() - np.trace(kxx)) / (24 * 23)
    assert self_kid == pytest.approx(2 * (off - np.trace(kxx) / 24) / 24, rel=1e-10)
    # 400 vectors: about 0 next to a shifted set; so are two samples of one distribution
    a, b = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    shifted = kid(a, b + 0.5, max_subset_size=100, num_subsets=50)
    assert shifted > 1
    assert abs(kid(a, a, max_subset_size=400, num_subsets=1)) < 0.05 * shifted
    assert abs(kid(a, b, max_subset_size=100, num_subsets=50)) < 0.05 * shifted


def test_kid_equals_stylegan2_ada_subset_formula():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((230, 32))
    fake = rng.standard_normal((170, 32)) * 0.9 + 0.2
    for seed in (0, 7):
        ours = kid(real, fake, num_subsets=20, max_subset_size=50, seed=seed)
        assert ours == pytest.approx(_nvlabs_kid(real, fake, 20, 50, seed), rel=1e-10, abs=1e-14)
    # float32 features (as the extractor gives them) are taken in float64
    r32, f32 = real.astype(np.float32), fake.astype(np.float32)
    assert kid(r32, f32, num_subsets=5, max_subset_size=60, seed=3) == pytest.approx(
        _nvlabs_kid(r32.astype(np.float64), f32.astype(np.float64), 5, 60, 3), rel=1e-10)
    # the seed matters when subsets are smaller than the sets
    assert kid(real, fake, num_subsets=3, max_subset_size=50, seed=0) != kid(real, fake, num_subsets=3,
                                                                            max_subset_size=50, seed=1)


def test_kid_bad_input():
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="num_subsets"):
        kid(x, x, num_subsets=0)
    with pytest.raises(ValueError, match="max_subset_size"):
        kid(x, x, max_subset_size=1)
    with pytest.raises(ValueError, match="dimension"):
        kid(x, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="real features must be"):
        kid(np.zeros(5), x)
    with pytest.raises(ValueError, match="finite"):
        kid(x, np.full((5, 3), np.nan))


# ----------------------------------------------------------------------------------------------
# Precision, recall, density, coverage


def test_prdc_matches_brute_force_knn_in_blocks():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((60, 6))
    fake = rng.standard_normal((45, 6)) * 1.2 + 0.3
    for k in (1, 3, 5):
        ref = _brute_prdc(real, fake, k)
        # a few rows per block (partial last block) and one block: the same numbers
        for block_bytes in (8 * 60 * 7, 1 << 30):
            ours = prdc(real, fake, k, block_bytes=block_bytes)
            assert ours == {c: pytest.approx(ref[c], abs=1e-12) for c in ("precision", "recall", "density",
                                                                          "coverage")}
        np.testing.assert_allclose(knn_radii(real, k, block_bytes=8 * 60 * 7), ref["radii_real"], rtol=1e-10)
    assert precision_recall(real, fake) == {"precision": prdc(real, fake)["precision"],
                                            "recall": prdc(real, fake)["recall"]}


def test_precision_recall_one_on_identical_sets_and_drop_with_planted_outliers():
    rng = np.random.default_rng(3)
    inliers = rng.standard_normal((150, 8))
    same = prdc(inliers, inliers.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0 and same["density"] >= 1 / 3
    # Outliers far away (their own tight cluster): a fake outlier is in no real ball, and the
    # real vectors stay covered, so precision is exactly the inlier fraction, recall stays 1.
    precisions = []
    for n_out in (0, 10, 50):
        outliers = 100 + rng.standard_normal((n_out, 8)) * 0.1
        fake = np.concatenate([inliers, outliers])
        got = prdc(inliers, fake)
        assert got["precision"] == pytest.approx(150 / (150 + n_out), abs=1e-12) and got["recall"] == 1.0
        ref = _brute_prdc(inliers, fake, 3)
        # (density is left out: a copied vector sits exactly on the balls it was the k-th neighbour
        # of, a tie its strict '<' decides by the last bit of the distances)
        assert {c: got[c] for c in ("precision", "recall", "coverage")} == {
            c: pytest.approx(ref[c], abs=1e-12) for c in ("precision", "recall", "coverage")}
        precisions.append(got["precision"])
    assert precisions[0] > precisions[1] > precisions[2]
    # and symmetrically: real outliers no fake reaches lower recall and coverage
    real = np.concatenate([inliers, 100 + rng.standard_normal((30, 8)) * 0.1])
    got = prdc(real, inliers)
    assert got["precision"] == 1.0 and got["recall"] == pytest.approx(150 / 180, abs=1e-12)
    assert got["coverage"] == pytest.approx(150 / 180, abs=1e-12)


def test_prdc_equals_prdc_package():
    prdc_pkg = pytest.importorskip("prdc")
    rng = np.random.default_rng(4)
    real = rng.standard_normal((400, 64))
    fake = rng.standard_normal((300, 64)) * 1.1 + 0.15
    for k in (3, 5):
        ref = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        ours = prdc(real, fake, k, block_bytes=8 * 400 * 37)
        assert ours == {c: pytest.approx(float(v), abs=1e-12) for c, v in ref.items()}
    # the package's numbers are not trivially 0 or 1 here
    assert 0.2 < ours["precision"] < 1 and 0.2 < ours["recall"] < 1 and 0 < ours["coverage"] < 1


def test_prdc_bad_input():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="more than k"):
        prdc(x, x, k=4)
    with pytest.raises(ValueError, match="k must be"):
        prdc(x, x, k=0)
    with pytest.raises(ValueError, match="dimension"):
        prdc(x, np.zeros((5, 2)), k=1)
    with pytest.raises(ValueError, match="fake features must be finite"):
        prdc(x, np.full((5, 3), np.inf), k=1)


# ----------------------------------------------------------------------------------------------
# One feature pass for all: FeatureStats keeps the features, the cache keeps them too


class _Counting:
    """4 x 4 mean colours (48-D) that counts the images it has seen."""
    identity = "counting-pool4"

    def __init__(self):
        self.seen = 0

    def __call__(self, x):
        self.seen += x.shape[0]
        return F.adaptive_avg_pool2d(x.float(), 4).flatten(1)


def _write_dataset(folder, n=8, seed=0, size=16):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    items = []
    for i in range(n):
        img = np.clip(rng.normal(120 + 5 * i, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        write_png(os.path.join(folder, image_name(i)), img)
        items.append((image_name(i), i % 2))
    write_dataset_json(folder, items)
    return folder


def test_feature_stats_keep_features_same_moments_and_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 7)).astype(np.float32)
    plain, kept = FeatureStats(), FeatureStats(keep_features=True)
    for i in range(0, 50, 16):
        plain.append(x[i:i + 16])
        kept.append(torch.from_numpy(x[i:i + 16]))
    assert np.array_equal(kept.features, x) and kept.features.dtype == np.float32
    assert np.array_equal(kept.mu, plain.mu) and np.array_equal(kept.sigma, plain.sigma)
    assert not plain.has_features
    with pytest.raises(ValueError, match="keep_features"):
        plain.features
    loaded = FeatureStats.load(kept.save(tmp_path / "s.npz"))
    assert loaded.has_features and np.array_equal(loaded.features, x) and loaded.n == 50
    assert not FeatureStats.load(tmp_path / "s.npz", with_features=False).has_features
    with pytest.raises(ValueError, match="features must be"):
        FeatureStats(kept.mu, kept.sigma, 50, features=x[:10])


def test_dataset_stats_cache_keeps_features_and_fid_is_unchanged(tmp_path):
    ds = _write_dataset(str(tmp_path / "ds"))
    cache, ext = tmp_path / "cache", _Counting()
    plain = dataset_stats(ds, ext, batch_size=3, cache_dir=cache)
    assert ext.seen == 8
    kept = dataset_stats(ds, ext, batch_size=3, cache_dir=cache, keep_features=True)
    assert ext.seen == 16  # the cached file had no features: computed once more, and replaced
    again = dataset_stats(ds, ext, batch_size=5, cache_dir=cache, keep_features=True)
    plain_again = dataset_stats(ds, ext, cache_dir=cache)
    assert ext.seen == 16 and len(list(cache.glob("fid-stats-*.npz"))) == 1
    assert np.array_equal(again.features, kept.features) and kept.features.shape == (8, 48)
    assert not plain_again.has_features
    for s in (kept, again, plain_again):
        assert np.array_equal(s.mu, plain.mu) and np.array_equal(s.sigma, plain.sigma)
    # the features are the extractor's on the images, in dataset order
    from retina_fast.data.dataset import read_image
    imgs = np.stack([read_image(ds, image_name(i)) for i in range(8)])
    direct = compute_stats(imgs, _Counting(), batch_size=8, keep_features=True)
    np.testing.assert_array_equal(kept.features, direct.features)


def test_evaluate_metrics_one_pass():
    rng = np.random.default_rng(6)
    real, fake = FeatureStats(keep_features=True), FeatureStats(keep_features=True)
    real.append(rng.standard_normal((40, 5)))
    fake.append(rng.standard_normal((30, 5)) + 0.3)
    out = evaluate_metrics(real, fake, "dc,kid,pr,fid", kid_subsets=4, kid_subset_size=20, seed=2)
    assert list(out) == ["fid", "kid", "precision", "recall", "density", "coverage"]
    assert out["fid"] == fid(real, fake)
    assert out["kid"] == kid(real.features, fake.features, num_subsets=4, max_subset_size=20, seed=2)
    assert {c: out[c] for c in ("precision", "recall", "density", "coverage")} == prdc(real.features, fake.features)
    assert metric_columns("pr,fid") == ("fid", "precision", "recall")
    with pytest.raises(ValueError, match="--metrics"):
        parse_metrics("fid,is", name="--metrics")
    with pytest.raises(ValueError, match="keep_features"):
        evaluate_metrics(FeatureStats(real.mu, real.sigma, real.n), fake, "kid")
    assert evaluate_metrics(FeatureStats(real.mu, real.sigma, real.n), fake, "fid") == {"fid": out["fid"]}


# ----------------------------------------------------------------------------------------------
# Command line


class _ScriptedDetector(torch.nn.Module):
    """A cheap stand-in for a TorchScript Inception file: uint8 [N, 3, H, W] -> [N, 2048]."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 2048)

    def forward(self, x, return_features: bool = False):
        return torch.tanh(self.proj(F.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1) * 4 - 2))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script/save are deprecated
def test_cli_metrics_folder_with_itself_and_against_another(tmp_path, capsys):
    from retina_fast.cli import main

    ds = _write_dataset(str(tmp_path / "ds"))
    other = _write_dataset(str(tmp_path / "other"), seed=1)
    torch.manual_seed(4)
    # one weights file for every metric (a TorchScript detector: the Inception network itself is
    # tested with FID, and costs seconds per image on one CPU thread)
    torch.jit.save(torch.jit.script(_ScriptedDetector()), str(tmp_path / "w.pt"))
    common = ["--inception", str(tmp_path / "w.pt"), "--device", "cpu", "--batch", "8"]
    out = tmp_path / "m.csv"
    # (no FID here: its 2048 x 2048 eigendecompositions take ~10 s on this busy machine; the FID
    # column is `fid` of the same statistics, test_evaluate_metrics_one_pass)
    assert main(["metrics", "--real", ds, "--fake", ds, "--metrics", "kid,pr,dc", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c"), *common]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "coverage" in text
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["real_images"] == "8"
    row = {c: float(rows[0][c]) for c in ("kid", "precision", "recall", "density", "coverage")}
    assert "fid" not in rows[0] and row["precision"] == row["recall"] == row["coverage"] == 1.0
    self_kid = row["kid"]
    # against another set: the numbers are the formulas' on the cached features
    assert main(["metrics", "--real", ds, "--fake", other, "--metrics", "pr,kid", "--out", str(out),
                 "--cache-dir", str(tmp_path / "c"), *common]) == 0
    with open(out) as f:
        row = next(csv.DictReader(f))
    assert list(row)[-3:] == ["kid", "precision", "recall"]
    from retina_fast.metrics import load_inception
    net = load_inception(str(tmp_path / "w.pt"))
    real = dataset_stats(ds, net, keep_features=True, cache_dir=tmp_path / "c")
    fake = dataset_stats(other, net, keep_features=True, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2
    assert real.has_features and fake.has_features
    assert float(row["kid"]) == pytest.approx(kid(real.features, fake.features), rel=1e-6)
    assert self_kid == pytest.approx(kid(real.features, real.features), rel=1e-6)
    assert float(row["precision"]) == prdc(real.features, fake.features)["precision"]


def test_cli_metrics_bad_input(tmp_path, capsys):
    from retina_fast.cli import main
    ds = _write_dataset(str(tmp_path / "ds"))
    for argv, what in ((["--metrics", "fid,bogus"], "--metrics"), (["--k", "0"], "--k"),
                       (["--out", str(tmp_path / "no" / "m.csv")], "--out")):
        with pytest.raises(SystemExit) as e:
            main(["metrics", "--real", ds, "--fake", ds, "--inception", str(tmp_path / "w.pt"), *argv])
        assert e.value.code == 2 and what in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


# ----------------------------------------------------------------------------------------------
# Training: metrics at the FID interval, in the curve CSV and plot


class PooledColour(torch.nn.Module):
    def forward(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)


def test_training_metrics_columns_in_fid_curve(tmp_path):
    from retina_fast.gan import snapshot as snap
    from retina_fast.gan.training import TrainConfig, train

    # 64 px images for the 32 px preset: the reference features come through the loader's resize
    data = _write_dataset(str(tmp_path / "ds"), size=64)
    with pytest.raises(ValueError, match="metrics"):
        train(TrainConfig(data=str(data), outdir=str(tmp_path / "x"), metrics="fid,nope", device="cpu"))
    assert not (tmp_path / "x").exists()
    out = tmp_path / "run"
    res = train(TrainConfig(data=str(data), outdir=str(out), preset="32", kimg=0.016, tick=0.008, snap=1,
                            fid_every=1, fid_images=8, image_snap=0, inception=PooledColour(), metrics="fid,kid,pr",
                            workers=0, progress=False, tensorboard=False, device="cpu"))
    lines = (out / "fid.csv").read_text().splitlines()
    # (the realism audit's headline columns come with FID by default)
    assert lines[0] == "kimg,fid,kid,precision,recall,realism_pass,realism_vessel_d,realism_snr_d,extractor"
    assert len(lines) == 1 + len(res.fid_history)
    rows = [line.split(",") for line in lines[1:]]
    assert [float(r[1]) for r in rows] == pytest.approx([f for _, f in res.fid_history], abs=1e-6)
    for (kimg, values), r in zip(res.metric_history, rows):
        assert float(r[0]) == pytest.approx(kimg)
        assert [float(x) for x in r[2:5]] == pytest.approx([values[c] for c in ("kid", "precision", "recall")],
                                                           rel=1e-5)
        assert 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1 and np.isfinite(values["kid"])
    assert os.path.isfile(out / "fid.png")
    stats = [__import__("json").loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert any("Metrics/kid" in s and "Metrics/precision" in s for s in stats)
    assert snap.load_snapshot(res.last_snapshot)["metric_history"] == res.metric_history
    # Resumed from its first snapshot: the extra columns continue, one row per FID, none duplicated.
    again = train(TrainConfig(data=str(data), outdir=str(out), preset="32", kimg=0.016, tick=0.008, snap=1,
                              fid_every=1, fid_images=8, image_snap=0, inception=PooledColour(),
                              metrics="fid,kid,pr", workers=0, progress=False, tensorboard=False, device="cpu",
                              resume=res.snapshots[0]))
    lines = (out / "fid.csv").read_text().splitlines()
    assert lines[0] == "kimg,fid,kid,precision,recall,realism_pass,realism_vessel_d,realism_snr_d,extractor"
    assert [round(k * 1000) for k, _ in again.metric_history] == [round(k * 1000) for k, _ in again.fid_history]
    assert [float(line.split(",")[0]) for line in lines[1:]] == pytest.approx([k for k, _ in again.fid_history])
    assert again.metric_history[0] == res.metric_history[0]
    assert all(line.split(",")[2] != "" for line in lines[1:])
