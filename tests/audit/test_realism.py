"""Realism audit (`retina_fast.audit.realism`) on planted truth: phantoms pass, planted defects fail with
their reason, same-distribution sets agree, planted vessel changes are found with the right sign, and
the table's numbers are those of the underlying stages."""
import math
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from retina_fast.audit.realism import (HEADLINE_COLUMNS, MARGIN, METRICS, WORK_SIZE, measure_image_realism,
                                       measure_realism, realism_report)
from retina_fast.data.phantom import make_fundus

FRAME = (512, 680)


def _phantoms(seeds, **kw):
    return [make_fundus(s, size=FRAME, **kw)[0] for s in seeds]


def _discless(seed):
    """A phantom whose optic disc is painted over with the surrounding retina's median colour."""
    img, truth = make_fundus(seed, size=FRAME)
    rr, cc = np.mgrid[:FRAME[0], :FRAME[1]]
    d2 = (rr - truth.disc_center[0]) ** 2 + (cc - truth.disc_center[1]) ** 2
    ring = (d2 > (2.5 * truth.disc_radius) ** 2) & (d2 < (4 * truth.disc_radius) ** 2)
    out = img.copy()
    out[d2 <= (1.8 * truth.disc_radius) ** 2] = np.median(img[ring], axis=0).astype(np.uint8)
    return out


@pytest.fixture(scope="module")
def tables():
    return {"real": measure_realism(_phantoms(range(14))),
            "same": measure_realism(_phantoms(range(100, 114))),
            "none": measure_realism(_phantoms(range(200, 208), vessel_contrast=0.0)),
            "more": measure_realism(_phantoms(range(300, 308), vessel_contrast=1.5))}


def test_phantoms_pass_the_checks(tables):
    for key in ("real", "same"):
        t = tables[key]
        assert list(t.columns[:4]) == ["image", "passed", "reason", "disc_found"]
        assert t["passed"].all(), t[["reason"]]
        assert (t["reason"] == "").all()
        assert np.isfinite(t[list(METRICS)].to_numpy(float)).all()


def test_planted_defects_fail_with_their_reason():
    bad = {"not_colour": np.zeros(FRAME + (3,), np.uint8),  # black frame: no colour, no FOV
           "zoomed": np.broadcast_to(np.array([150, 70, 40], np.uint8), FRAME + (3,)).copy(),  # no FOV edge
           "dark": make_fundus(5, size=FRAME, exposure=0.2)[0],
           "saturated": make_fundus(5, size=FRAME, exposure=3.2)[0],
           "disc_not_found": _discless(5)}
    t = measure_realism(list(bad.values()), names=list(bad))
    assert list(t["reason"]) == list(bad)
    assert not t["passed"].any()
    row = t.set_index("image").loc["disc_not_found"]
    # the FOV was found, so vessels are still measured; the disc metrics and SNR are not
    assert np.isfinite(row["vessel_fraction"]) and math.isnan(row["disc_radius"]) and math.isnan(row["snr"])


def test_off_centre_fov_fails():
    img = make_fundus(3, size=FRAME)[0]
    shifted = np.zeros((FRAME[0], FRAME[1] + 300, 3), np.uint8)
    shifted[:, :FRAME[1]] = img  # a wider frame, FOV at its left: centre 150 px (0.5 x radius) off
    row = measure_image_realism(shifted)
    assert row["reason"] == "off_centre" and not row["passed"]
    assert row["fov_offset"] > 0.3


def test_small_images_are_upscaled_to_the_working_size():
    img = np.asarray(Image.fromarray(make_fundus(7, size=FRAME)[0]).resize((85, 64), Image.Resampling.BOX))
    row = measure_image_realism(img)
    assert row["passed"], row["reason"]
    assert 0.9 < row["fov_radius"] < 1.25


def test_same_distribution_agrees(tables):
    rep = realism_report(tables["real"], tables["same"])
    assert rep.pass_real == rep.pass_synthetic == 1.0
    by = {c.name: c for c in rep.comparisons}
    for name in ("vessel_fraction", "skeleton_length", "snr", "disc_radius", "mean_green"):
        assert abs(by[name].cohens_d) < 0.8, (name, by[name].cohens_d)
        assert rep.ks[name][0] < 0.5, (name, rep.ks[name])
    assert set(rep.headline) == set(HEADLINE_COLUMNS)


@pytest.mark.parametrize("key, sign", [("none", 1), ("more", -1)])
def test_planted_vessel_change_gives_large_d_of_the_right_sign(tables, key, sign):
    rep = realism_report(tables["real"], tables[key])
    d = rep.headline["realism_vessel_d"]
    assert sign * d > 0.8, d  # d = (real - synthetic) / SD: fewer synthetic vessels -> d > 0
    c = {x.name: x for x in rep.comparisons}["vessel_fraction"]
    assert sign * c.ci_d[0] > 0 and sign * c.ci_d[1] > 0  # the CI excludes 0
    assert rep.ks["vessel_fraction"][0] > 0.4  # same-distribution sets: under 0.5 (above)


def test_table_equals_direct_calls(tmp_path):
    """One image's row against prepare, segment and measure_image called directly; the report's
    numbers against compare and ks_2samp."""
    from scipy import stats

    from retina_fast.data.fov import FieldOfView, crop_geometry
    from retina_fast.data.prepare import PrepareSettings, process_image
    from retina_fast.vessels import compare, segment
    from retina_fast.vessels.batch import measure_image

    imgs = _phantoms(range(20, 24))
    row = measure_realism(imgs[:1]).iloc[0]
    pad = round(MARGIN * min(FRAME))  # the black margin the audit adds around every image
    framed = np.zeros((FRAME[0] + 2 * pad, FRAME[1] + 2 * pad, 3), np.uint8)
    framed[pad:-pad, pad:-pad] = imgs[0]
    reason, fields, square = process_image(Image.fromarray(framed), PrepareSettings(size=WORK_SIZE))
    assert reason is None
    arr = np.asarray(square)
    seg = segment(arr)
    m = measure_image(arr, seg.mask, (fields["disc_row"], fields["disc_col"]), fields["disc_radius"],
                      fov_mask=seg.fov_mask)
    fov = FieldOfView((fields["fov_row"], fields["fov_col"]), fields["fov_radius"])
    out_fov = crop_geometry(fov, WORK_SIZE).output_fov(fov)
    assert row["vessel_fraction"] == m["vessel_fraction"]
    assert row["skeleton_length"] == m["skeleton_length"]
    assert row["snr"] == m["snr"] and row["snr_contrast"] == m["snr_contrast"]
    assert row["disc_radius"] == pytest.approx(fields["disc_radius"] / out_fov.radius)
    assert row["fov_radius"] == pytest.approx(fields["fov_radius"] / (min(FRAME) / 2))
    assert row["mean_green"] == pytest.approx(arr[seg.fov_mask][:, 1].mean())

    real, synth = measure_realism(imgs[:2]), measure_realism(imgs[2:])
    rep = realism_report(real, synth, tmp_path / "out")
    c = compare(real["snr"], synth["snr"], name="snr")
    got = {x.name: x for x in rep.comparisons}["snr"]
    assert got.cohens_d == c.cohens_d and got.mean_real == c.mean_real
    assert rep.ks["snr"][0] == stats.ks_2samp(real["snr"], synth["snr"]).statistic
    assert f"{c.cohens_d:.2f} ({c.ci_d[0]:.2f}, {c.ci_d[1]:.2f})" in rep.table
    files = sorted(os.listdir(tmp_path / "out"))
    assert {"realism.md", "comparison.csv", "real.csv", "synthetic.csv", "hist_vessel_fraction.png"} <= set(files)
    assert not [f for f in files if ".tmp" in f]
    csv = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert csv.loc[csv["name"] == "snr", "ks_distance"].item() == pytest.approx(rep.ks["snr"][0])


def test_bad_input_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="images"):
        measure_realism(tmp_path / "missing")
    with pytest.raises(ValueError, match="size"):
        measure_realism([np.zeros((8, 8, 3), np.uint8)], size=16)
    with pytest.raises(ValueError, match="images is empty"):
        measure_realism([])


def test_dataset_path_and_unreadable_image(tmp_path):
    """A folder is read by name; an undecodable file is one row with reason 'unreadable'."""
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(make_fundus(1, size=FRAME)[0]).save(d / "a.png")
    (d / "b.png").write_bytes(b"not a png")
    t = measure_realism(d)
    assert list(t["image"]) == ["a.png", "b.png"]
    assert list(t["reason"]) == ["", "unreadable"]
    assert "cannot decode" in t["error"][1]
    # worker processes: the same rows (the error text holds an object address)
    pd.testing.assert_frame_equal(measure_realism(d, workers=2).drop(columns="error"), t.drop(columns="error"))


def test_training_hook_writes_realism_columns_and_max_minutes_stops(tmp_path):
    """`train --realism-every 1` (no FID): fid.csv gets the headline columns at every tick, with an
    empty fid; `max_minutes` ends a long run cleanly after its first tick; the real sample is cached."""
    from retina_fast.data.dataset import image_name, write_dataset_json, write_png
    from retina_fast.data.prepare import PrepareSettings, process_image
    from retina_fast.gan.training import TrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    items = []
    for i in range(6):
        _, _, square = process_image(Image.fromarray(make_fundus(i, size=FRAME)[0]), PrepareSettings(size=64))
        write_png(str(data / image_name(i)), np.asarray(square))
        items.append((image_name(i), 0))
    write_dataset_json(str(data), items)
    cfg = TrainConfig(data=str(data), outdir=str(tmp_path / "run"), preset="32", kimg=1000.0, tick=0.008,
                      snap=1000, image_snap=0, fid_every=0, realism_every=1, realism_images=3, max_minutes=1e-4,
                      workers=0, progress=False, tensorboard=False, device="cpu")
    res = train(cfg)
    assert res.cur_nimg < 1000  # stopped by the clock, not by kimg
    csv = pd.read_csv(tmp_path / "run" / "fid.csv")
    assert list(csv.columns) == ["kimg", "fid", *HEADLINE_COLUMNS, "extractor"]
    assert len(csv) == 1 and csv["fid"].isna().all()
    assert 0 <= csv["realism_pass"].item() <= 1
    # a d that cannot be measured (no generated image passes yet) is left out: an empty cell
    assert "realism_pass" in res.metric_history[-1][1] and res.metric_history[-1][1].keys() <= set(HEADLINE_COLUMNS)
    assert (tmp_path / "run" / "fid.png").exists()
    cache = tmp_path / "run" / "fid-cache" / "realism-real.csv"
    real = pd.read_csv(cache, comment="#")
    assert len(real) == 3 and real["passed"].all()  # phantoms at 32 px, upscaled, pass
    # the command line, from the run's snapshot; a missing input is one line and exit status 2
    from retina_fast.cli import main

    out = tmp_path / "audit"
    assert main(["audit", "realism", "--real", str(data), "--synthetic", res.last_snapshot, "--num", "3",
                 "--out", str(out)]) == 0
    assert len(os.listdir(out / "synthetic-images")) == 3
    assert "| training |" not in (out / "realism.md").read_text()  # CLI groups: real / synthetic
    assert len(pd.read_csv(out / "synthetic.csv")) == 3 and len(pd.read_csv(out / "real.csv")) == 6
    with pytest.raises(SystemExit) as e:
        main(["audit", "realism", "--real", str(tmp_path / "nope"), "--synthetic", str(data),
              "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and not (tmp_path / "x").exists()


def test_study_synthetic_filter_audit_drops_failing_images(tmp_path):
    """`run_study(synthetic_filter='audit')`: planted failing synthetic images (black, dark) come first
    in the folder's order; they are dropped, counted in table.md, and passing ones replace them."""
    from retina_fast.classify.stage import make_phantom_pool
    from retina_fast.classify.study import run_study
    from retina_fast.classify.train import TrainConfig
    from retina_fast.data.dataset import write_png

    pool_dir, syn_dir = make_phantom_pool(tmp_path / "pool", 20, 20, images_per_patient=2, n_synthetic=40, seed=0)
    planted = {"000_black.png": np.zeros((96, 128, 3), np.uint8),
               "001_dark.png": make_fundus(9, size=(96, 128), exposure=0.2)[0]}
    for name, img in planted.items():
        write_png(os.path.join(syn_dir, name), img)
    out = tmp_path / "study"
    with pytest.raises(ValueError, match="synthetic_filter"):
        run_study(pool_dir, out, synthetic=syn_dir, synthetic_filter="fid", progress=False)
    res = run_study(pool_dir, out, synthetic=syn_dir, ratios=(0.1,), modes=("synthetic",),
                    train=TrainConfig(epochs=1, arch="resnet18", size=32, batch_size=10, device="cpu"),
                    n_cam=0, keep_checkpoints=False, progress=False, synthetic_filter="audit")
    audit = pd.read_csv(out / "synthetic_audit.csv")
    need = int(res.rows[0]["n_train_synthetic"])
    assert need > 0 and audit["kept"].sum() == need
    assert list(audit["image"][:2]) == list(planted) and not audit["kept"][:2].any()
    assert list(audit["reason"][:2].fillna("")) == ["not_colour", "dark"]
    dropped = int((~audit["passed"]).sum())
    assert dropped >= 2
    table = (out / "table.md").read_text()
    assert f"{dropped} of {len(audit)} audited dropped" in table and "not_colour 1" in table
