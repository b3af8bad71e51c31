"""Class-conditional StyleGAN2-ADA (`retina-fast train --cond`), as StyleGAN2-ADA's ``--cond``.

Properties: the generated labels are drawn from the training set's labels and the real labels reach
the loss one-hot; a tiny conditional run trains the label embedding and keeps G's output dependent
on c; a resume stays conditional; `generate --class` and the classification study take the
conditional checkpoint; bad `--cond` inputs (no labels, one class, an unconditional snapshot) are
clear errors.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from retina_fast.gan import snapshot as snap
from retina_fast.gan.networks import make_networks
from retina_fast.gan.training import TrainConfig, Trainer, class_labels_for, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, phantom_dataset):
    return phantom_dataset(tmp_path_factory.mktemp("cond"), [0, 1] * 6)


def _cfg(data, outdir, kimg, **kw):
    base = dict(preset="32", tick=0.004, snap=1000, image_snap=0, fid_every=0, workers=0, progress=False,
                deterministic=True, tensorboard=False, device="cpu", batch=4, cond=True)
    base.update(kw)
    return TrainConfig(data=data, outdir=str(outdir), kimg=kimg, **base)


@pytest.fixture(scope="module")
def cond_run(labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("cond_run")
    torch.manual_seed(0)
    init_embed = make_networks("32", c_dim=2)[0].mapping.embed.weight.detach().clone()
    res = train(_cfg(labelled, out, 0.024, fid_every=1, fid_images=8, fid_real_images=8, image_snap=1))
    return res, init_embed


def test_generated_labels_come_from_the_training_labels_and_real_labels_reach_the_loss():
    torch.manual_seed(0)
    G, D = make_networks("32", c_dim=3, mbstd_group=2)
    tr = Trainer(G, D, batch=4, class_labels=[2, 2, 2], device="cpu", style_mixing=0)
    seen = []

    def spy(phase, real_img, real_c, gen_z, gen_c, gain=1.0):
        seen.append((phase, real_c, gen_c))
        return {}

    tr.loss.accumulate_gradients = spy
    tr.step(torch.zeros(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    assert seen
    for phase, real_c, gen_c in seen:
        assert torch.equal(gen_c, torch.tensor([[0., 0., 1.]] * 4))   # only class 2 in the training labels
        assert torch.equal(real_c, torch.eye(3)[[0, 1, 2, 0]])
    with pytest.raises(ValueError, match="real_labels"):
        tr.step(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match="class_labels"):
        Trainer(G, D, batch=4, class_labels=[0, 3], device="cpu")


def test_conditional_run_trains_the_embedding_and_depends_on_c(cond_run):
    res, init_embed = cond_run
    data = snap.load_snapshot(res.last_snapshot)
    assert data["G_kwargs"]["c_dim"] == 2 and data["D_kwargs"]["c_dim"] == 2
    assert data["config"]["cond"] is True
    assert not torch.equal(data["G"]["mapping.embed.weight"], init_embed)   # the label embedding learned
    G = res.trainer.G_ema
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = G(z, torch.eye(2)[[0, 0, 0]], noise_mode="const")
        b = G(z, torch.eye(2)[[1, 1, 1]], noise_mode="const")
    assert torch.isfinite(a).all() and (a - b).abs().amax() > 1e-3
    assert res.fid_history and all(np.isfinite(f) for _, f in res.fid_history)
    assert res.grids and all(os.path.isfile(g) for g in res.grids)


def test_resume_stays_conditional(cond_run, labelled, tmp_path):
    res, _ = cond_run
    more = train(_cfg(labelled, res.outdir, 0.032, cond=False, resume=res.outdir))
    assert more.trainer.G.c_dim == 2 and more.cur_nimg == 32


def test_generate_class_and_study_source(cond_run, tmp_path):
    from retina_fast.classify.study import _synthetic_items
    from retina_fast.gan.generate import generate_images

    res, _ = cond_run
    a = generate_images(res.last_snapshot, [0], tmp_path / "c0", class_idx=0)
    b = generate_images(res.last_snapshot, [0], tmp_path / "c1", class_idx=1)
    assert not np.array_equal(np.asarray(Image.open(a[0])), np.asarray(Image.open(b[0])))
    with pytest.raises(ValueError, match="class_idx"):
        generate_images(res.last_snapshot, [0], tmp_path / "none")
    items = _synthetic_items(res.last_snapshot, 2, str(tmp_path / "study"), synthetic_class=1)
    assert [it.label for it in items] == [1, 1]
    assert all(it.root.endswith("synthetic-class1") for it in items)
    first = np.asarray(Image.open(os.path.join(items[0].root, items[0].name)))
    assert np.array_equal(first, np.asarray(Image.open(b[0])))   # the class-1 image of seed 0


@pytest.mark.parametrize("labels, match", [([None] * 4, "no dataset.json labels"),
                                           ([1, 1, 1, 1], "at least two classes")])
def test_bad_cond_data_is_a_clear_error(tmp_path, phantom_dataset, labels, match):
    data = phantom_dataset(tmp_path / "d", labels)
    with pytest.raises(ValueError, match=match):
        class_labels_for(data)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(_cfg(data, out, 0.008))
    assert not out.exists()


def test_cond_cli_errors_in_one_line(tmp_path, capsys, phantom_dataset):
    from retina_fast.cli import main

    data = phantom_dataset(tmp_path / "one_class", [0, 0, 0, 0])
    with pytest.raises(SystemExit) as e:
        main(["train", "--cond", "--data", data, "--outdir", str(tmp_path / "run"), "--kimg", "0.008",
              "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "at least two classes" in err[0]


def test_cond_from_an_unconditional_snapshot_is_refused(labelled, tmp_path):
    plain = train(_cfg(labelled, tmp_path / "plain", 0.004, cond=False))
    with pytest.raises(ValueError, match="unconditional"):
        train(_cfg(labelled, tmp_path / "again", 0.008, init=plain.last_snapshot))
