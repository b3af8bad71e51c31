"""Privacy audit (retina_fast.audit.privacy, .knn) on planted truth: copies of training phantoms are
flagged, independent phantoms are not; C_T; faiss vs torch; nothing written outside --out; bad input."""
import csv
import os

import numpy as np
import pytest
import torch

from retina_fast.audit.knn import exact_knn, faiss_available
from retina_fast.audit.privacy import audit_privacy, data_copying_statistic, leave_one_out_ratios
from retina_fast.cli import main
from retina_fast.data.dataset import image_name, write_dataset_json, write_png
from retina_fast.data.phantom import make_fundus
from retina_fast.data.prepare import MANIFEST_COLUMNS

SIDE = 128
N_TRAIN, N_SYN = 60, 40


def _write_dataset(folder, images, keys):
    """A prepared-like dataset: folder/dataset (PNG + dataset.json) and folder/manifest.csv with keys."""
    ds = os.path.join(folder, "dataset")
    names = [(image_name(i), 0) for i in range(len(images))]
    for (n, _), im in zip(names, images):
        write_png(os.path.join(ds, n), im)
    write_dataset_json(ds, names)
    with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, MANIFEST_COLUMNS)
        w.writeheader()
        for (n, _), k in zip(names, keys):
            w.writerow({"output": n, "key": k, "status": "accepted"})
    return ds


def _shift(a, dy, dx):
    """Translate by (dy, dx) px, filling with black (a copy moved inside the frame)."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0),
                                                                  max(-dx, 0):w - max(dx, 0)]
    return out


def _copy(a, kind, rng):
    """Training image `a` as a memorising generator would return it: exact, mirrored, shifted, noisy."""
    if kind == 1:
        return np.ascontiguousarray(a[:, ::-1])
    if kind == 2:
        return _shift(a, 3, -2)
    if kind == 3:
        return np.clip(a + rng.normal(0, 6, a.shape), 0, 255).astype(np.uint8)
    return a.copy()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("privacy")
    train = [make_fundus(s, size=(SIDE, SIDE))[0] for s in range(N_TRAIN)]
    tr = _write_dataset(str(root / "train"), train, [f"P{i // 2:03d}" for i in range(N_TRAIN)])
    ho = _write_dataset(str(root / "heldout"), [make_fundus(1000 + s, size=(SIDE, SIDE))[0] for s in range(N_SYN)],
                        [f"H{i:03d}" for i in range(N_SYN)])
    rng = np.random.default_rng(0)
    copies, indep = root / "copies", root / "independent"
    for i in range(N_SYN):
        write_png(str(copies / f"c{i:03d}.png"), _copy(train[i], i % 4, rng))
        write_png(str(indep / f"s{i:03d}.png"), make_fundus(2000 + i, size=(SIDE, SIDE))[0])
    return {"root": root, "train": tr, "heldout": ho, "copies": str(copies), "independent": str(indep)}


def _run(cohort, synthetic, out, **kw):
    return audit_privacy(cohort["train"], synthetic, str(cohort["root"] / out), heldout=cohort["heldout"],
                         extractor=None, n_cells=2, min_cell=5, **kw)


def test_copies_are_flagged_with_strongly_negative_c_t(cohort):
    rep = _run(cohort, cohort["copies"], "out_copies")
    s = rep.spaces["pixel"]
    # exact, mirrored, shifted and noisy copies: each kind is flagged (planted: synthetic i copies train i)
    for kind in range(4):
        assert s.suspected[kind::4].mean() >= 0.8, kind
    assert s.suspected.mean() >= 0.9
    assert (s.indices[:, 0] == np.arange(N_SYN)).mean() >= 0.95
    assert s.mirrored[1::4].all() and not s.mirrored[0::4].any()
    assert s.copying["C_T"] < -3
    with open(rep.files["suspected_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == int(s.suspected.sum())
    assert {r["patient_key"] for r in rows} <= {f"P{i // 2:03d}" for i in range(N_TRAIN)}
    assert os.path.getsize(rep.files["sheet_pixel"]) > 1000


def test_independent_phantoms_are_not_flagged(cohort):
    rep = _run(cohort, cohort["independent"], "out_indep", quantile=0.05)
    s = rep.spaces["pixel"]
    # False-positive rate measured here: 4 of 40 (10 %) at quantile 0.05 (the threshold is the 5 %
    # quantile of 60 leave-one-out ratios: ~5 % expected, with that much sampling noise); C_T 1.15.
    # The copies of the test above: 38 of 40 (exact 10/10, mirrored 10/10, shifted 8/10, noisy
    # 10/10), C_T -5.19.
    fpr = s.suspected.mean()
    assert fpr <= 0.2
    assert abs(s.copying["C_T"]) < 2.5


def test_feature_space_with_a_given_extractor(cohort, tmp_path):
    proj = torch.from_numpy(np.random.default_rng(0).normal(size=(3 * 16 * 16, 32)).astype(np.float32))

    def extractor(x):   # uint8 [N, 3, H, W] -> [N, 32]: a fixed random projection of a 16 x 16 thumbnail
        t = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 16)
        return t.flatten(1) @ proj

    rep = audit_privacy(cohort["train"], cohort["copies"], str(tmp_path / "o"), extractor=extractor, k=3)
    s = rep.spaces["inception"]
    assert s.distances.shape == (N_SYN, 3)
    assert s.suspected[0::4].all()          # exact copies, in any feature space
    assert not rep.spaces["pixel"].copying   # no held-out set: no C_T


def test_c_t_on_gaussians():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 8))
    heldout = rng.normal(size=(200, 8))
    assert abs(data_copying_statistic(train, heldout, rng.normal(size=(200, 8)), n_cells=4)["C_T"]) < 2
    copies = train[:200] + rng.normal(scale=0.01, size=(200, 8))
    assert data_copying_statistic(train, heldout, copies, n_cells=4)["C_T"] < -8


def test_leave_one_out_ratio_quantile_is_the_false_positive_rate():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(1000, 6))
    null = leave_one_out_ratios(train, np.arange(1000), backend="torch")
    thr = np.quantile(null, 0.1)
    d, i = exact_knn(rng.normal(size=(2000, 6)), train, 1, backend="torch")
    r, _ = exact_knn(train[i[:, 0]], train, 1, backend="torch", exclude=i[:, 0])
    assert 0.06 < np.mean(d[:, 0] / r[:, 0] < thr) < 0.14


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu not installed")
def test_faiss_and_torch_agree_exactly():
    rng = np.random.default_rng(3)
    q, r = rng.normal(size=(300, 64)).astype(np.float32), rng.normal(size=(2000, 64)).astype(np.float32)
    r[5] = q[7]   # an exact duplicate and a tie between two reference rows
    r[9] = r[5]
    df, i_f = exact_knn(q, r, 5, backend="faiss")
    dt, i_t = exact_knn(q, r, 5, backend="torch", block_bytes=1 << 16)
    assert np.array_equal(i_f, i_t) and np.array_equal(df, dt)
    assert i_f[7, 0] == 5 and i_f[7, 1] == 9 and df[7, 0] == 0
    ex = np.arange(300)
    assert np.array_equal(exact_knn(r[:300], r, 2, backend="faiss", exclude=ex)[1],
                          exact_knn(r[:300], r, 2, backend="torch", exclude=ex)[1])


def _tree(path):
    return sorted((os.path.relpath(os.path.join(d, f), path), os.path.getsize(os.path.join(d, f)))
                  for d, _, fs in os.walk(path) for f in fs)


def test_cli_writes_only_inside_out(cohort, capsys):
    root = str(cohort["root"])
    before = _tree(root)
    out = os.path.join(root, "cli_out")
    rc = main(["audit", "privacy", "--train", cohort["train"], "--synthetic", cohort["copies"], "--out", out,
               "--inception", "none", "--k", "2", "--backend", "torch"])
    assert rc == 0
    after = _tree(root)
    new = [p for p in after if p not in before]
    assert new and all(p.startswith("cli_out" + os.sep) for p, _ in new)
    assert [p for p in before if p not in after] == []
    assert "suspected copies" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["--synthetic", "/nonexistent/x"], "synthetic"),
    (["--inception", "/nonexistent/i.pt"], "--inception"),
    (["--k", "1000"], "k=1000"),
])
def test_bad_input_is_one_line_and_exit_2(cohort, tmp_path, capsys, args, needle):
    argv = ["audit", "privacy", "--train", cohort["train"], "--synthetic", cohort["copies"],
            "--out", str(tmp_path / "o"), "--inception", "none"]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("retina-fast audit: error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_synthetic_from_a_checkpoint(cohort, tmp_path):
    """The demo's path: a generator snapshot is sampled in memory (seeds 0..num-1), 32 px images
    against 128 px training images; the report lands in --out only."""
    from retina_fast.gan.networks import make_networks

    torch.manual_seed(0)
    G, D = make_networks("32")
    path = tmp_path / "snap.pt"
    torch.save({"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), "cur_nimg": 0}, path)
    rep = audit_privacy(cohort["train"], str(path), str(tmp_path / "out"), extractor=None, num=6, k=2)
    s = rep.spaces["pixel"]
    assert rep.synthetic_names == [f"seed{i:06d}" for i in range(6)] and s.indices.shape == (6, 2)
    assert sorted(os.listdir(tmp_path)) == ["out", "snap.pt"]
    assert os.path.isfile(rep.files["sheet_pixel"]) and os.path.isfile(rep.files["summary_md"])
