"""Classifier, training, imbalance study, labelling workflow and CLI on phantom fundus images.

ResNet18 at 64 px on one thread; phantoms at 96 x 128 (normal vs ERM with its sheen and striae).
The module trains about a dozen tiny runs (~60-90 s on a shared 2-core machine).
"""
import argparse
import csv
import os

import numpy as np
import pytest
import torch
from PIL import Image

from retina_fast.classify import study as study_mod
from retina_fast.classify.labelling import choose_thresholds, label_pool
from retina_fast.classify.metrics import binary_metrics, paired_delong
from retina_fast.classify.model import make_classifier
from retina_fast.classify.split import check_no_leakage
from retina_fast.classify.stage import make_phantom_pool
from retina_fast.classify.study import (
    COMPARISONS,
    compare_modes,
    plan_cells,
    read_results,
    run_study,
)
from retina_fast.classify.train import (
    TrainConfig,
    _oversample,
    augment_batch,
    load_classifier,
    predict,
    train_classifier,
)
from retina_fast.data.items import Item
from retina_fast.data.phantom import make_fundus
from retina_fast.data.pool import read_pool
from retina_fast.report.tables import write_csv

TINY = dict(arch="resnet18", size=64, batch_size=10, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """30 normal + 30 ERM phantom patients, 2 images each, and 60 extra ERM phantoms ('synthetic')."""
    root = tmp_path_factory.mktemp("pool")
    return make_phantom_pool(root, 30, 30, images_per_patient=2, n_synthetic=60, seed=0)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------ model


def test_make_classifier_normalises_input_and_loads_local_weights(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)   # 1000-class head, like an ImageNet file
    path = tmp_path / "imagenet_like.pth"
    torch.save(ref.state_dict(), path)
    model = make_classifier("resnet18", 2, weights=path).eval()
    assert model.fc.out_features == 2
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    # the model maps [-1, 1] inputs to ImageNet normalisation itself: same features as torchvision's net
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref.eval().fc = torch.nn.Identity()
    feats = {}
    model.avgpool.register_forward_hook(lambda m, i, o: feats.setdefault("x", o.flatten(1)))
    with torch.no_grad():
        model(x)
        expected = ref(((x + 1) / 2 - mean) / std)
    torch.testing.assert_close(feats["x"], expected, rtol=1e-4, atol=1e-5)

    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        make_classifier("resnet18", weights=tmp_path / "nowhere.pth")
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="r34.pth"):
        make_classifier("resnet18", weights=tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="arch"):
        make_classifier("vgg16")


# ----------------------------------------------------------------------------------- augmentation


def test_augment_batch_flips_are_exact_and_draws_repeatable():
    x = torch.rand(16, 3, 32, 32)
    y = augment_batch(x, seed=1, epoch=0, step=0, shift=0, zoom=0, rotation=0)
    kinds = set()
    for a, b in zip(x, y):
        for k, t in enumerate((a, a.flip(-1), a.flip(-2), a.flip(-1, -2))):
            if torch.allclose(b, t, atol=1e-5):
                kinds.add(k)
                break
        else:
            pytest.fail("a pure flip did not reproduce the flipped image exactly")
    assert kinds == {0, 1, 2, 3}       # all four flip combinations occur among 16 samples
    y1 = augment_batch(x, seed=1, epoch=0, step=3)
    torch.testing.assert_close(y1, augment_batch(x, seed=1, epoch=0, step=3))
    assert not torch.allclose(y1, augment_batch(x, seed=1, epoch=0, step=4))


def test_augment_batch_shift_and_zoom_stay_in_range():
    side = 64
    x = -torch.ones(64, 1, side, side)
    x[:, :, 28:36, 28:36] = 1.0   # a bright square at the centre
    rows = torch.arange(side, dtype=torch.float32).view(1, side, 1)
    cols = torch.arange(side, dtype=torch.float32).view(1, 1, side)

    def centroid_and_area(img):
        w = (img[:, 0] + 1) / 2
        m = w.sum((1, 2))
        return (w * rows).sum((1, 2)) / m - 31.5, (w * cols).sum((1, 2)) / m - 31.5, m

    y = augment_batch(x, seed=0, epoch=0, step=0, shift=0.0625, zoom=0, rotation=0, hflip=False, vflip=False)
    dr, dc, _ = centroid_and_area(y)
    assert dr.abs().max() <= 0.0625 * side + 0.5 and dc.abs().max() <= 0.0625 * side + 0.5
    assert dr.abs().max() > 0.5 * 0.0625 * side   # the draws do spread over the range
    y = augment_batch(x, seed=0, epoch=0, step=0, shift=0, zoom=0.1, rotation=0, hflip=False, vflip=False)
    _, _, area = centroid_and_area(y)
    scale = (area / 64.0).sqrt()                   # side of the square grows with the zoom
    assert scale.min() > 0.88 and scale.max() < 1.12 and scale.max() - scale.min() > 0.1


# ------------------------------------------------------------------------------ training, predict


def test_train_checkpoint_roundtrip_predict(pool, tmp_path):
    items, _ = read_pool(pool[0])
    tr, va = items[::3][:24], items[1::3][:12]
    res = train_classifier(tr, va, TrainConfig(outdir=str(tmp_path / "run"), epochs=2, **TINY))
    hist = _csv(res.history_csv)
    assert len(hist) == 2 and os.path.getsize(res.curve_png) > 1000
    losses = [float(h["valid_loss"]) for h in hist]
    assert res.best_epoch == int(np.argmin(losses))
    assert not [f for f in os.listdir(tmp_path / "run") if ".tmp" in f]
    model = load_classifier(res.checkpoint)
    assert model.input_size == 64
    p1, p2 = predict(res.model, va), predict(model, va)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)
    assert p1.shape == (12,) and ((0 <= p1) & (p1 <= 1)).all()

    with pytest.raises(ValueError, match="unlabelled"):
        train_classifier([Item(pool[0], tr[0].name, None)] + tr, va, TrainConfig(epochs=1, **TINY))
    with pytest.raises(ValueError, match="cfg.size"):
        train_classifier(tr, va, TrainConfig(epochs=1, arch="resnet18", size=16))
    with pytest.raises(ValueError, match="cfg.compile"):
        train_classifier(tr, va, TrainConfig(epochs=1, compile="fastest", **TINY))
    with pytest.raises(ValueError, match="cfg.backend"):
        train_classifier(tr, va, TrainConfig(epochs=1, backend="pillow", **TINY))
    with pytest.raises(ValueError, match="cfg.workers"):
        train_classifier(tr, va, TrainConfig(epochs=1, workers=-2, **TINY))
    with pytest.raises(ValueError, match="nothere.png"):
        train_classifier(tr + [Item(pool[0], "nothere.png", 1)], va, TrainConfig(epochs=1, **TINY))


def test_oversampling_balances_with_replacement():
    items = [Item("r", f"n{i}", 0) for i in range(10)] + [Item("r", f"e{i}", 1) for i in range(3)]
    out = _oversample(items, seed=0)
    labels = [it.label for it in out]
    assert labels.count(0) == labels.count(1) == 10
    assert out[:13] == items and {it.name for it in out if it.label == 1} <= {"e0", "e1", "e2"}
    assert out == _oversample(items, seed=0) and out != _oversample(items, seed=1)


# ----------------------------------------------------------------------------------------- study


def test_plan_cells_ratios_and_nesting():
    labels = np.array([0] * 100 + [1] * 40)
    assign = np.array(["train"] * 140)
    plan = plan_cells(labels, assign, (1.0, 0.5, 0.4, 0.2, 0.1))
    assert (len(plan[1.0]["normal"]), len(plan[1.0]["erm"])) == (40, 40)      # too few ERM: normals cut
    assert (len(plan[0.5]["normal"]), len(plan[0.5]["erm"])) == (80, 40)
    assert (len(plan[0.1]["normal"]), len(plan[0.1]["erm"])) == (100, 10)
    assert plan[0.1]["n_synthetic"] == 90
    assert set(plan[0.1]["erm"]) <= set(plan[0.2]["erm"]) <= set(plan[0.4]["erm"])
    assert (labels[plan[0.1]["erm"]] == 1).all() and (labels[plan[0.1]["normal"]] == 0).all()
    with pytest.raises(ValueError, match="1:0.1"):
        plan_cells(np.array([0] * 5 + [1] * 5), np.array(["train"] * 10), (0.1,))


def test_study_end_to_end_synthetic_rescues_minority_sensitivity(pool, tmp_path):
    pool_dir, syn_dir = pool
    out = tmp_path / "study"
    res = run_study(pool_dir, out, synthetic=syn_dir, ratios=("1:1", "1:0.1"), seeds=(0,),
                    train=TrainConfig(epochs=4, **TINY), n_cam=2, keep_checkpoints=False, progress=False)
    rows = {(r["ratio"], r["mode"]): r for r in res.rows}
    assert set(rows) == {("1:1", "real"), ("1:0.1", "real"), ("1:0.1", "synthetic"), ("1:0.1", "oversample"),
                         ("1:0.1", "weighted")}
    r, s = rows[("1:0.1", "real")], rows[("1:0.1", "synthetic")]
    assert s["n_train_synthetic"] == s["n_train_normal"] - s["n_train_erm"] > 0
    assert r["n_train_synthetic"] == 0 and r["n_train_erm"] == round(0.1 * r["n_train_normal"])
    # the paper's effect, on phantoms: topping up the 1:0.1 set with (phantom) synthetic ERM images
    # rescues the minority class
    assert s["sensitivity"] >= r["sensitivity"] + 0.3, (r["sensitivity"], s["sensitivity"])
    assert s["auc"] > r["auc"] + 0.1

    # no patient in two splits; valid/test common to every run and balanced
    split = _csv(out / "split.csv")
    check_no_leakage([x["patient_id"] for x in split], [x["split"] for x in split])
    test_names = None
    for row in res.rows:
        pred = _csv(out / row["run_dir"] / "test_predictions.csv")
        names = [p["name"] for p in pred]
        test_names = test_names or names
        assert names == test_names
        # the row's metrics are those of its saved predictions
        m = binary_metrics([int(p["label"]) for p in pred], [float(p["p_erm"]) for p in pred], 0.5)
        assert m.sensitivity == pytest.approx(row["sensitivity"], abs=1e-6) and m.auc == pytest.approx(row["auc"], abs=1e-6)
        assert not os.path.exists(out / row["run_dir"] / "checkpoint.pt")
        assert os.path.isfile(out / row["run_dir"] / "training_curve.png")
    in_test = {x["name"] for x in split if x["split"] == "test"}
    assert set(test_names) <= in_test
    labels = [int(p["label"]) for p in pred]
    assert labels.count(0) == labels.count(1) >= 8

    table = (out / "table.md").read_text()
    assert "| 1:0.1 | real only |" in table and "+ synthetic ERM" in table and "weighted cross-entropy" in table

    # paired DeLong comparisons: every pair at 1:0.1 (1:1 trains real only), from the saved predictions
    comps = _csv(res.comparisons_csv)
    assert [(c["ratio"], c["mode_a"], c["mode_b"]) for c in comps] == [("1:0.1", a, b) for a, b in COMPARISONS]
    for c in comps:
        preds = [_csv(out / rows[("1:0.1", m)]["run_dir"] / "test_predictions.csv") for m in (c["mode_a"], c["mode_b"])]
        y = [int(p["label"]) for p in preds[0]]
        d = paired_delong(y, *[[float(p["p_erm"]) for p in pr] for pr in preds])
        assert float(c["delta_auc"]) == pytest.approx(d.diff, abs=1e-6) and float(c["p"]) == pytest.approx(d.p, rel=1e-3)
        assert float(c["delta_ci_lo"]) == pytest.approx(d.ci[0], abs=1e-6)
        assert float(c["auc_a"]) == pytest.approx(rows[("1:0.1", c["mode_a"])]["auc"], abs=1e-6)
    syn_vs_real = comps[0]
    assert float(syn_vs_real["delta_auc"]) > 0.1 and float(syn_vs_real["delta_ci_lo"]) < float(syn_vs_real["delta_auc"])
    assert "Paired comparisons" in table and "| 1:0.1 | + synthetic ERM vs real only |" in table
    for png in (res.roc_png, res.metric_png, res.comparisons_png):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 400
    assert len(res.overlays) == 2 * len(res.rows)
    with Image.open(res.overlays[0]) as im:
        assert im.size == (64, 64)


def test_study_resume_skips_finished_cells_and_interrupt_loses_none(pool, tmp_path, monkeypatch):
    pool_dir, _ = pool
    out = tmp_path / "study"
    kw = dict(ratios=(1.0, 0.1), modes=("real", "weighted"), train=TrainConfig(epochs=1, **TINY), n_cam=0,
              keep_checkpoints=False, progress=False)
    calls = []
    real_train = study_mod.train_classifier

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt   # killed while training the second cell
        return real_train(*a, **k)

    monkeypatch.setattr(study_mod, "train_classifier", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(pool_dir, out, **kw)
    before = (out / "results.csv").read_bytes()
    assert len(read_results(out / "results.csv")) == 1
    assert not [f for f in os.listdir(out) if ".tmp" in f]

    monkeypatch.setattr(study_mod, "train_classifier", real_train)
    res = run_study(pool_dir, out, **kw)
    assert res.skipped == [("1", "real", 0)] and len(res.trained) == 2
    assert (out / "results.csv").read_bytes().startswith(before)   # the finished cell's row kept as it was
    assert len(res.rows) == 3

    calls.clear()
    monkeypatch.setattr(study_mod, "train_classifier", interrupted)
    res = run_study(pool_dir, out, **kw)              # everything finished: nothing trains
    assert calls == [] and len(res.skipped) == 3 and res.trained == []
    with pytest.raises(ValueError, match="split_seed"):
        run_study(pool_dir, out, **{**kw, "split_seed": 1})


def test_bad_input_leaves_no_settings_to_block_the_corrected_rerun(pool, tmp_path):
    pool_dir, syn_dir = pool
    out = tmp_path / "study"
    kw = dict(ratios=(0.1,), modes=("synthetic",), train=TrainConfig(epochs=1, **TINY), n_cam=0,
              keep_checkpoints=False, progress=False)
    with pytest.raises(ValueError, match="not found"):
        run_study(pool_dir, out, synthetic=tmp_path / "typo", **kw)
    with pytest.raises(ValueError, match="holds 0 images"):   # exists, but no images in it
        (tmp_path / "empty").mkdir()
        run_study(pool_dir, out, synthetic=tmp_path / "empty", **kw)
    assert not (out / "study.json").exists()
    res = run_study(pool_dir, out, synthetic=syn_dir, **kw)
    assert len(res.trained) == 1 and (out / "study.json").exists()


def test_compare_modes_refuses_runs_on_different_test_images(tmp_path):
    for mode, names in (("real", ("a.png", "b.png", "c.png", "d.png")), ("synthetic", ("a.png", "b.png", "c.png", "e.png"))):
        run = tmp_path / "runs" / mode
        run.mkdir(parents=True)
        write_csv(run / "test_predictions.csv", ("root", "name", "label", "p_erm"),
                  [("/pool", n, k % 2, 0.1 * k) for k, n in enumerate(names)])
        study_mod._append_row(tmp_path / "results.csv", {"ratio": "1:0.1", "erm_fraction": "0.1", "mode": mode,
                                                         "seed": 0, "run_dir": f"runs/{mode}"})
    with pytest.raises(ValueError, match="runs/synthetic and runs/real"):
        compare_modes(tmp_path)


def test_results_append_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    study_mod._append_row(path, {"ratio": "1:1", "mode": "real", "auc": 0.9})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk died")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        study_mod._append_row(path, {"ratio": "1:0.1", "mode": "real", "auc": 0.7})
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["results.csv"]


def test_read_pool_errors(tmp_path):
    (tmp_path / "labels.csv").write_text("name,label\na.png,erm\n")
    with pytest.raises(ValueError, match="labels.csv"):
        read_pool(tmp_path)
    (tmp_path / "labels.csv").write_text("name,patient_id,label\na.png,p1,maybe\n")
    with pytest.raises(ValueError, match="row 2"):
        read_pool(tmp_path)
    (tmp_path / "labels.csv").write_text("name,patient_id,label\na.png,p1,normal\nb.png,p2,normal\n")
    with pytest.raises(ValueError, match="both normal and ERM"):
        read_pool(tmp_path)


def test_read_pool_from_prepare_output(tmp_path):
    """A `prepare` output folder: accepted, labelled images; the manifest's key is the patient."""
    from retina_fast.data.dataset import image_name, write_dataset_json, write_png
    from retina_fast.data.prepare import MANIFEST_COLUMNS

    rows = [("a.dcm", "k1", "0", "accepted", image_name(0)), ("b.dcm", "k1", "1", "accepted", image_name(1)),
            ("c.dcm", "k2", "1", "excluded", ""), ("d.dcm", "k3", "", "accepted", image_name(3)),
            ("e.dcm", "k4", "0", "accepted", image_name(4))]
    for _, _, _, status, out in rows:
        if out:
            write_png(tmp_path / "dataset" / out, np.zeros((8, 8, 3), np.uint8))
    write_dataset_json(tmp_path / "dataset", [(r[4], int(r[2]) if r[2] else None) for r in rows if r[4]])
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        for src, key, label, status, out in rows:
            w.writerow({"source": src, "key": key, "label": label, "status": status, "output": out})
    items, pids = read_pool(tmp_path)
    assert [(it.name, it.label) for it in items] == [(image_name(0), 0), (image_name(1), 1), (image_name(4), 0)]
    assert list(pids) == ["k1", "k1", "k4"] and items[0].root == str(tmp_path / "dataset")


# ------------------------------------------------------------------------------------- labelling


def test_choose_thresholds_by_hand():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.85, 0.9])
    t = choose_thresholds(y, p, sensitivities=(0.75, 1.0))
    # p >= 0.8 calls 3 of 4 ERM and no normal (J = 0.75); p >= 0.4 all ERM and one normal (J = 0.75 too):
    # the tie goes to the higher threshold
    assert t["youden"] == 0.8
    assert t["sens>=0.75"] == 0.8 and t["sens>=1.00"] == 0.4 and t["0.5"] == 0.5


def test_label_pool_workflow(pool, tmp_path):
    unl = tmp_path / "unlabelled"
    unl.mkdir()
    truth = {}
    for i in range(10):
        img, _ = make_fundus(777_000 + i, size=(96, 128), disease="erm" if i % 2 else None)
        Image.fromarray(img).save(unl / f"u{i:02d}.png")
        truth[f"u{i:02d}.png"] = i % 2
    res = label_pool(pool[0], unl, tmp_path / "label", train=TrainConfig(epochs=5, **TINY), progress=False)
    rows = _csv(res.labels_csv)
    assert [r["name"] for r in rows] == sorted(truth)
    p = np.array([float(r["p_erm"]) for r in rows])
    assert ((0 <= p) & (p <= 1)).all()
    assert all((r["label"] == "erm") == (float(r["p_erm"]) >= res.threshold) for r in rows)
    assert res.threshold_rule == "youden" and res.n_erm + res.n_normal == 10
    thr = {r["rule"]: r for r in _csv(res.thresholds_csv)}
    assert set(thr) == {"0.5", "youden", "sens>=0.90", "sens>=0.95"}
    assert float(thr["sens>=0.90"]["valid_sensitivity"]) >= 0.9
    assert float(thr["sens>=0.95"]["threshold"]) <= float(thr["sens>=0.90"]["threshold"])
    # the labelling model separates unseen phantoms
    y = np.array([truth[r["name"]] for r in rows])
    assert p[y == 1].mean() > p[y == 0].mean()
    with pytest.raises(ValueError, match="threshold"):
        label_pool(pool[0], unl, tmp_path / "bad", threshold="median", train=TrainConfig(epochs=1, **TINY))


# ------------------------------------------------------------------------------------------- CLI


def test_train_on_pool_checks_inputs_before_writing(pool, tmp_path):
    # split.csv used to be written before the weights file or the splits were checked.
    from retina_fast.classify.labelling import train_on_pool
    garbage = tmp_path / "imagenet.pth"
    garbage.write_bytes(os.urandom(5000))
    out = tmp_path / "fit"
    with pytest.raises(ValueError, match="imagenet.pth") as e:
        train_on_pool(pool[0], out, train=TrainConfig(epochs=1, weights=str(garbage), **TINY), progress=False)
    assert "\n" not in str(e.value)
    wrong = tmp_path / "resnet34.pth"
    torch.save(make_classifier("resnet34").state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet34.pth.*does not fit resnet18"):
        train_on_pool(pool[0], out, train=TrainConfig(epochs=1, weights=str(wrong), **TINY), progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train_on_pool(pool[0], out, train=TrainConfig(epochs=0, **TINY), progress=False)
    assert not out.exists()


def test_cli_predict_and_parse(pool, tmp_path):
    from retina_fast.classify.cli import _config, register

    items, _ = read_pool(pool[0])
    res = train_classifier(items[:20], items[20:30], TrainConfig(outdir=str(tmp_path / "m"), epochs=1, **TINY))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="stage"))
    out = tmp_path / "scores.csv"
    args = parser.parse_args(["classify", "predict", "--checkpoint", res.checkpoint, "--images", pool[1],
                              "--out", str(out), "--device", "cpu"])
    assert args.func(args) == 0
    rows = _csv(out)
    assert len(rows) == 60 and rows[0]["name"] == "synthetic00000.png"
    expected = predict(res.model, pool[1])
    np.testing.assert_allclose([float(r["p_erm"]) for r in rows], expected, rtol=1e-4, atol=1e-5)
    args = parser.parse_args(["classify", "study", "--pool", "p", "--out", "o", "--ratios", "1:1", "1:0.1",
                              "--modes", "real", "synthetic", "--seeds", "0", "1", "--arch", "resnet18"])
    assert args.ratios == ["1:1", "1:0.1"] and args.seeds == [0, 1] and args.batch == 10 and args.size == 512
    assert args.compile is False
    for flags, mode in ((["--compile"], True), (["--compile", "reduce-overhead"], "reduce-overhead")):
        args = parser.parse_args(["classify", "study", "--pool", "p", "--out", "o", *flags])
        assert args.compile == mode and _config(args).compile == mode
    with pytest.raises(SystemExit):
        parser.parse_args(["classify", "study", "--pool", "p", "--out", "o", "--compile", "fastest"])


def test_study_synthetic_from_generator_checkpoint(pool, tmp_path):
    """'synthetic' mode from a generator snapshot: images generated once (seed%06d.png), then reused."""
    from retina_fast.gan.networks import make_networks

    torch.manual_seed(0)
    G, _ = make_networks("32")
    ckpt = tmp_path / "snapshot.pt"
    torch.save({"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "G_ema": G.state_dict()}, ckpt)
    out = tmp_path / "study"
    kw = dict(synthetic=ckpt, ratios=(0.1,), modes=("synthetic",), train=TrainConfig(epochs=1, **TINY), n_cam=0,
              keep_checkpoints=False, progress=False)
    res = run_study(pool[0], out, **kw)
    row = res.rows[0]
    gen = sorted(os.listdir(out / "synthetic"))
    assert len(gen) == row["n_train_synthetic"] > 0 and gen[0] == "seed000000.png"
    with Image.open(out / "synthetic" / gen[0]) as im:
        assert im.size == (32, 32)
    stamp = os.path.getmtime(out / "synthetic" / gen[0])
    res = run_study(pool[0], out, **{**kw, "seeds": (0, 1)})    # a second seed: images reused, not regenerated
    assert res.trained == [("0.1", "synthetic", 1)] and os.path.getmtime(out / "synthetic" / gen[0]) == stamp


def test_dali_and_torch_backends_train_alike(pool):
    """The DALI loader (CPU pipeline here, GPU decode on CUDA) feeds training exactly like the torch one."""
    items, _ = read_pool(pool[0])
    tr, va = items[0::3][:20], items[1::3][:10]
    runs = [train_classifier(tr, va, TrainConfig(epochs=1, backend=b, **TINY)) for b in ("dali", "torch")]
    assert runs[0].history[0]["train_loss"] == pytest.approx(runs[1].history[0]["train_loss"], rel=1e-4)
    np.testing.assert_allclose(predict(runs[0].model, va, backend="dali"), predict(runs[0].model, va), atol=1e-5)


def test_compiled_training_matches_eager(pool, monkeypatch):
    """compile='reduce-overhead' (no CUDA graphs on the CPU) trains the same weights as eager: the
    compiled wrapper shares the model's parameters, so the kept model is the trained one. Only
    full batches reach the compiled step (one static shape, no second compile)."""
    from retina_fast.classify import train as train_mod

    items, _ = read_pool(pool[0])
    tr, va = items[:25], items[25:35]   # batches of 10, 10 and 5
    cfg = dict(epochs=1, augment=False, arch="resnet18", size=32, batch_size=10, device="cpu")
    eager = train_classifier(tr, va, TrainConfig(**cfg))
    compiled_batches = []
    real_compiled = train_mod._compiled

    def spy(model, mode):
        step = real_compiled(model, mode)
        if mode is False:
            return step

        def call(x):
            compiled_batches.append(x.shape[0])
            return step(x)
        call.parameters = step.parameters
        return call
    monkeypatch.setattr(train_mod, "_compiled", spy)
    compiled = train_classifier(tr, va, TrainConfig(compile="reduce-overhead", **cfg))
    assert compiled_batches == [10, 10]
    untrained = train_classifier(tr, va, TrainConfig(**{**cfg, "lr": 1e-12}))
    p_e, p_c, p_u = (predict(r.model, va) for r in (eager, compiled, untrained))
    np.testing.assert_allclose(p_c, p_e, atol=2e-3)
    # Training moved the predictions far more than compiling did (means: a max picks one noisy image).
    assert np.abs(p_e - p_u).mean() > 10 * max(np.abs(p_c - p_e).mean(), 1e-4)
