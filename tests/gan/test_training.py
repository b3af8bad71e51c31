"""StyleGAN2-ADA training on the CPU: the tiny preset on phantom fundus images.

Properties: losses finite, parameters move, EMA differs from G, ADA p follows D's overfitting,
snapshots reload bit-identically, kill-and-resume repeats the uninterrupted run exactly (in-process
and after SIGKILLs of a training process), a half-written snapshot is never used, the NaN guard,
generation is deterministic per seed, ref vs native ops, DDP over gloo keeps replicas identical,
fine-tuning with Freeze-D, the command line.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from retina_fast.data.dataset import image_name
from retina_fast.gan import snapshot as snap
from retina_fast.gan.training import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    finetune,
    train,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("one_thread")


def _erm_every_third(n):
    return [1 if i % 3 == 0 else 0 for i in range(n)]


@pytest.fixture(scope="module")
def data16(tmp_path_factory, phantom_dataset):
    return phantom_dataset(tmp_path_factory.mktemp("ds16"), _erm_every_third(16))


@pytest.fixture(scope="module")
def data8(tmp_path_factory, phantom_dataset):
    return phantom_dataset(tmp_path_factory.mktemp("ds8"), _erm_every_third(8), seed=100)


def _cfg(data, outdir, kimg, **kw):
    base = {"preset": "32", "tick": 0.004, "snap": 1000, "image_snap": 0, "fid_every": 0, "workers": 0,
            "progress": False, "deterministic": True, "tensorboard": False, "device": "cpu"}
    base.update(kw)
    return TrainConfig(data=data, outdir=str(outdir), kimg=kimg, **base)


def _stats(outdir):
    with open(os.path.join(outdir, "stats.jsonl")) as f:
        return [json.loads(line) for line in f]


def _losses(rows):
    return {r["nimg"]: {k: v for k, v in r.items() if k.startswith("Loss/")} for r in rows}


REF_KIMG = 0.064   # 16 steps of batch 4 = 4 epochs of the 16-image set


@pytest.fixture(scope="module")
def reference_run(data16, tmp_path_factory):
    """Uninterrupted deterministic run, one tick per step (losses of every step logged)."""
    out = tmp_path_factory.mktemp("ref")
    res = train(_cfg(data16, out, REF_KIMG))
    return res, _losses(_stats(out))


@pytest.fixture(scope="module")
def full_run(data16, tmp_path_factory):
    """A run with every output on: grids, snapshots, FID (random-weight extractor), TensorBoard."""
    out = tmp_path_factory.mktemp("full")
    res = train(_cfg(data16, out, 0.048, tick=0.016, snap=1, fid_every=1, fid_images=8, image_snap=1,
                     inception=PooledColour(), tensorboard=True, deterministic=False))
    return res


class PooledColour(torch.nn.Module):
    """A 48-dimensional stand-in feature extractor (4 x 4 mean colours): keeps FID cheap here; the
    Inception network itself is tested with the metrics."""

    def forward(self, images):
        return torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)


# ---------------------------------------------------------------------------------------------


def test_full_run_outputs(full_run):
    res = full_run
    out = res.outdir
    rows = _stats(out)
    assert [r["tick"] for r in rows] == list(range(len(rows))) and rows[-1]["nimg"] == 48
    for r in rows:
        losses = [v for k, v in r.items() if k.startswith("Loss/")]
        assert losses and all(np.isfinite(losses))
        for k in ("sec_per_kimg", "images_per_sec", "augment_p", "sec_per_tick"):
            assert np.isfinite(r[k])
    assert {"Loss/G_loss", "Loss/D_loss", "Loss/r1_penalty", "Loss/pl_penalty"} <= set().union(*rows)
    for name in ("reals.png", "fakes_init.png", "training_options.json", "fid.csv", "fid.png", "best.pt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out))
    assert len(res.grids) == 1 + len(rows) and all(os.path.isfile(g) for g in res.grids)
    # One snapshot per tick, none left half-written.
    assert snap.list_snapshots(out) == res.snapshots and len(res.snapshots) == len(rows)
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    # FID curve: one point per tick, says the weights are random; best.pt is the lowest point.
    with open(res.fid_csv) as f:
        lines = f.read().splitlines()
    # the realism audit runs with FID by default
    assert lines[0] == "kimg,fid,realism_pass,realism_vessel_d,realism_snr_d,extractor"
    assert len(lines) == 1 + len(rows)
    assert "PooledColour" in lines[1]
    fids = [float(line.split(",")[1]) for line in lines[1:]]
    assert all(np.isfinite(fids)) and res.best_fid == pytest.approx(min(fids), abs=1e-6)
    assert [f for _, f in res.fid_history] == pytest.approx(fids, abs=1e-6)
    best = snap.load_snapshot(res.best)
    assert best["cur_nimg"] == round(res.fid_history[int(np.argmin(fids))][0] * 1000)
    assert best["best_fid"] == res.best_fid


def test_fid_without_inception_file_uses_random_weights_and_says_so():
    from retina_fast.gan.training import _make_extractor
    from retina_fast.metrics.inception import InceptionV3FID

    net, label = _make_extractor(None, torch.device("cpu"))
    assert isinstance(net, InceptionV3FID) and net.weights_id is None and "RANDOM" in label
    again, _ = _make_extractor(None, torch.device("cpu"))   # seeded: the same weights every run
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="inception"):
        train(TrainConfig(data=".", outdir=".", inception="/nonexistent/inception.pth"))


def test_parameters_change_and_ema_differs(full_run):
    first = snap.load_snapshot(full_run.snapshots[0])   # after one step
    last = snap.load_snapshot(full_run.snapshots[-1])
    for net in ("G", "D", "G_ema"):
        weights = [k for k in last[net] if k.endswith("weight")]
        assert len(weights) > 10 and all(not torch.equal(first[net][k], last[net][k]) for k in weights), net
    assert all(not torch.equal(last["G"][k], last["G_ema"][k]) for k in last["G"] if k.endswith("weight"))


def test_ema_follows_its_formula():
    from retina_fast.gan.networks import make_networks

    torch.manual_seed(0)
    G, D = make_networks("32")
    tr = Trainer(G, D, batch=4, gamma=0.05, ema_kimg=0.01, ema_rampup=None)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    tr.step(real)
    before = [p.detach().clone() for p in tr.G_ema.parameters()]
    tr.step(real)
    beta = 0.5 ** (4 / 10)   # 0.5 ** (batch / ema_nimg)
    for e, g, b in zip(tr.G_ema.parameters(), tr.G.parameters(), before):
        assert torch.equal(e, g.lerp(b, beta))
    assert any(not torch.equal(e, g) for e, g in zip(tr.G_ema.parameters(), tr.G.parameters()))


def test_snapshot_reloads_bit_identically(full_run, tmp_path):
    from retina_fast.gan.networks import Discriminator, Generator, z_from_seeds

    trainer = full_run.trainer
    data = snap.load_snapshot(full_run.last_snapshot)
    assert data["format"] == "retina_fast.gan/1" and data["cur_nimg"] == trainer.cur_nimg
    torch.load(full_run.last_snapshot, weights_only=True)   # plain data only
    G = Generator(**data["G_kwargs"])
    G.load_state_dict(data["G"])
    D = Discriminator(**data["D_kwargs"])
    D.load_state_dict(data["D"])
    re = Trainer(G, D, batch=4)
    re.load_state_dict(data)
    for name in ("G", "D", "G_ema"):
        a, b = getattr(trainer, name).state_dict(), getattr(re, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("G", "D"):
        sa, sb = trainer.opts[name].state_dict()["state"], re.opts[name].state_dict()["state"]
        assert all(torch.equal(sa[i][s], sb[i][s]) for i in sa for s in sa[i])
    z = z_from_seeds([1, 2], G.z_dim)
    with torch.no_grad():
        assert torch.equal(trainer.G_ema(z, noise_mode="const"), re.G_ema(z, noise_mode="const"))
    ge = Generator.from_checkpoint(full_run.last_snapshot)   # N's reader of our format
    with torch.no_grad():
        assert torch.equal(ge(z, noise_mode="const"), re.G_ema(z, noise_mode="const"))
    # Save again: the second file holds the same tensors.
    again = snap.save_snapshot(tmp_path / "again.pt", data)
    data2 = snap.load_snapshot(again)
    assert all(torch.equal(data["G_ema"][k], data2["G_ema"][k]) for k in data["G_ema"])


def test_kill_and_resume_in_process_is_exact(data16, reference_run, tmp_path):
    ref_res, ref = reference_run
    # Stop mid-epoch (step 5; 4 batches per epoch), resume with fresh objects.
    train(_cfg(data16, tmp_path, 0.020))
    res = train(_cfg(data16, tmp_path, REF_KIMG, resume=str(tmp_path)))
    got = _losses(_stats(tmp_path))
    assert sorted(got) == sorted(ref)
    assert got == ref   # every loss of every step, bit for bit
    for name in ("G", "D", "G_ema"):
        a, b = getattr(ref_res.trainer, name).state_dict(), getattr(res.trainer, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert res.trainer.augment_p == ref_res.trainer.augment_p
    assert not torch.are_deterministic_algorithms_enabled()   # train() restores the global flags


@pytest.mark.parametrize("dies", ["after_snapshot", "before_snapshot"])
def test_death_next_to_a_snapshot_logs_every_tick_once(data16, reference_run, tmp_path, monkeypatch, dies):
    """The narrow windows the SIGKILL test hits only by chance: the process dies just after a
    snapshot is renamed into place, or just before (its tick already logged). Resuming must still
    log every tick exactly once, in stats.jsonl and in TensorBoard (which purges on resume)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, ref = reference_run
    real_save, saved = snap.save_snapshot, []

    class Died(Exception):
        pass

    def save_and_die(path, data):
        if dies == "before_snapshot" and len(saved) == 2:
            raise Died
        saved.append(real_save(path, data))
        if len(saved) == 3:
            raise Died
        return saved[-1]
    monkeypatch.setattr(snap, "save_snapshot", save_and_die)
    with pytest.raises(Died):
        train(_cfg(data16, tmp_path, REF_KIMG, snap=1, tensorboard=True))
    monkeypatch.undo()
    assert snap.resolve_resume(tmp_path)[0] == saved[-1]
    time.sleep(1.1)   # the resumed run's event file must sort after the first one (names hold seconds)
    train(_cfg(data16, tmp_path, REF_KIMG, resume=str(tmp_path), tensorboard=True))
    got = _losses(_stats(tmp_path))
    assert sorted(got) == sorted(ref) and got == ref
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    g_loss = events.Scalars("Loss/G_loss")
    assert [e.step for e in g_loss] == sorted(ref)
    np.testing.assert_allclose([e.value for e in g_loss], [ref[n]["Loss/G_loss"] for n in sorted(ref)], rtol=1e-6)
    assert all(e.wall_time > 1e9 for e in g_loss)   # absolute times, not seconds since the process started


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from retina_fast.gan.training import TrainConfig, train
data, out, resume = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
train(TrainConfig(data=data, outdir=out, preset='32', kimg=10.0, tick=0.004, snap=1, image_snap=0, fid_every=0,
                  workers=0, progress=False, deterministic=True, tensorboard=False, device='cpu', resume=resume))
"""


def _kill_after_snapshots(data, out, n_snapshots, resume=None, delay=0.0):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, "-c", _CHILD, data, str(out)] + ([str(resume)] if resume else [])
    before = len(snap.list_snapshots(out)) if os.path.isdir(out) else 0
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while len(snap.list_snapshots(out) if os.path.isdir(out) else []) < before + n_snapshots:
            if proc.poll() is not None:
                raise AssertionError(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.time() - t0 > 60:
                raise AssertionError("child made no snapshots in 60 s")
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_sigkill_then_resume_is_exact(data16, reference_run, tmp_path):
    _, ref = reference_run
    rng = random.Random(1234)
    out = tmp_path / "run"
    # Kill twice at random moments (snapshots are written every step, so often mid-write).
    _kill_after_snapshots(data16, out, 2, delay=rng.uniform(0, 0.4))
    _kill_after_snapshots(data16, out, 2, resume=out, delay=rng.uniform(0, 0.4))
    found = snap.list_snapshots(out)
    for p in found:
        snap.load_snapshot(p)   # every listed snapshot is complete
    path, data = snap.resolve_resume(out)
    assert path == found[-1] and 0 < data["cur_nimg"] < REF_KIMG * 1000
    res = train(_cfg(data16, out, REF_KIMG, resume=str(out)))
    got = _losses(_stats(out))
    assert sorted(got) == sorted(ref) and got == ref
    assert res.cur_nimg == REF_KIMG * 1000


def test_resume_from_older_snapshot_rewrites_logs_and_fid_curve(full_run, data16, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(full_run.outdir, out)
    older = out / os.path.basename(full_run.snapshots[1])    # tick 1 of 4
    res = train(_cfg(data16, out, 0.048, tick=0.016, snap=1, fid_every=1, fid_images=8, image_snap=0,
                     inception=PooledColour(), deterministic=False, resume=str(older)))
    nimgs = [r["nimg"] for r in _stats(out)]
    assert nimgs == [4, 20, 36, 48]                          # no duplicated ticks from the first run
    lines = (out / "fid.csv").read_text().splitlines()[1:]
    kimgs = [float(line.split(",")[0]) for line in lines]
    assert kimgs == [0.004, 0.020, 0.036, 0.048]
    fids = [float(line.split(",")[1]) for line in lines]
    best = snap.load_snapshot(out / "best.pt")
    assert best["cur_nimg"] == round(kimgs[int(np.argmin(fids))] * 1000) and res.best_fid == pytest.approx(min(fids))
    # Resuming a finished run does nothing.
    again = train(_cfg(data16, out, 0.048, tick=0.016, fid_every=0, resume=str(out)))
    assert again.cur_nimg == 48 and [r["nimg"] for r in _stats(out)] == nimgs


def test_half_written_snapshot_is_never_used(tmp_path, monkeypatch):
    good = {"format": snap.FORMAT, "cur_nimg": 8, "x": torch.arange(10)}
    p8 = snap.save_snapshot(tmp_path / snap.snapshot_name(8), good)

    # A write that dies part-way leaves no file under the final name.
    def dying_save(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")
    monkeypatch.setattr(snap.torch, "save", dying_save)
    with pytest.raises(OSError):
        snap.save_snapshot(tmp_path / snap.snapshot_name(12), dict(good, cur_nimg=12))
    monkeypatch.undo()
    assert snap.list_snapshots(tmp_path) == [p8]
    # What a SIGKILL mid-write leaves (a temporary file) is not a snapshot; a damaged newest file
    # (e.g. a disk error) is skipped for the older complete one.
    (tmp_path / f".{snap.snapshot_name(16)}.tmp999").write_bytes(b"PK garbage")
    (tmp_path / snap.snapshot_name(20)).write_bytes(b"PK\x03\x04 truncated")
    assert snap.list_snapshots(tmp_path) == [p8, str(tmp_path / snap.snapshot_name(20))]
    path, data = snap.resolve_resume(tmp_path)
    assert path == p8 and torch.equal(data["x"], good["x"])
    with pytest.raises(ValueError, match="cannot be read"):
        snap.load_snapshot(tmp_path / snap.snapshot_name(20))


def test_nan_loss_stops_and_keeps_last_good_snapshot(data16, tmp_path, monkeypatch):
    from retina_fast.gan.loss import StyleGAN2Loss

    calls = {"n": 0}
    run_D = StyleGAN2Loss.run_D

    def poisoned(self, img, c):
        calls["n"] += 1
        out = run_D(self, img, c)
        return out * float("nan") if calls["n"] > 20 else out   # ~ step 7 onwards
    monkeypatch.setattr(StyleGAN2Loss, "run_D", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss '\w+' is nan at kimg 0\.0\d\d") as err:
        train(_cfg(data16, tmp_path, 0.2, snap=2))
    found = snap.list_snapshots(tmp_path)
    assert found and str(found[-1]) in str(err.value)
    bad_kimg = float(str(err.value).split("at kimg ")[1].split()[0])
    last = snap.load_snapshot(found[-1])
    assert last["cur_nimg"] < bad_kimg * 1000
    assert all(torch.isfinite(v).all() for v in last["G"].values() if v.is_floating_point())


def test_ada_p_follows_discriminator_overfitting(data8, tmp_path):
    # 8 images, ADA adjusting fast (ada_kimg 0.5: p moves 0.032 per update), one tick = one update.
    res = train(_cfg(data8, tmp_path, 0.16, tick=0.016, ada_kimg=0.5, ada_target=0.6, deterministic=False))
    rows = _stats(tmp_path)
    step = 4 * 4 / 500
    p_prev = 0.0
    moves = []
    for r in rows[1:]:
        rt = r["Loss/ada_rt"]
        expect = max(p_prev + np.sign(rt - 0.6) * step, 0.0)
        assert r["augment_p"] == pytest.approx(expect, abs=1e-6)
        moves.append(np.sign(rt - 0.6))
        p_prev = r["augment_p"]
    # D overfits the 8 images: E[sign(D(real))] sits above the target, so p rises.
    assert sum(m > 0 for m in moves) > len(moves) / 2
    assert res.augment_p > 0.1


def test_generation_is_deterministic_per_seed(full_run, tmp_path):
    from PIL import Image

    from retina_fast.gan.generate import generate_images

    # One seed per pass (the default): bit-identical per seed, whatever the other seeds.
    a = generate_images(full_run.last_snapshot, [7, 3, 5], tmp_path / "a")
    b = generate_images(full_run.last_snapshot, [5, 7], tmp_path / "b")
    img = {os.path.basename(p): np.asarray(Image.open(p)) for p in a}
    for p in b:
        assert np.array_equal(np.asarray(Image.open(p)), img[os.path.basename(p)])
    assert not np.array_equal(img["seed000007.png"], img["seed000003.png"])
    # Batched passes: the same latents; batched matmuls round differently, at most 1 grey level.
    c = generate_images(full_run.last_snapshot, [7, 3, 5], tmp_path / "c", batch_size=3)
    for p in c:
        diff = np.abs(np.asarray(Image.open(p)).astype(int) - img[os.path.basename(p)])
        assert diff.max() <= 1 and diff.mean() < 0.01


@pytest.mark.native
def test_ref_and_native_ops_agree(full_run):
    from retina_fast.gan.networks import (
        Discriminator,
        Generator,
        set_impl,
        z_from_seeds,
    )

    G = Generator.from_checkpoint(full_run.last_snapshot, impl="native")
    z = z_from_seeds(range(4), G.z_dim)
    with torch.no_grad():
        native = G(z, noise_mode="const")
        ref = set_impl(G, "ref")(z, noise_mode="const")
    assert native.abs().max() > 0.01 and (native - ref).abs().max() < 1e-4
    # One training step on identical weights and RNG: the same losses within float rounding.
    data = snap.load_snapshot(full_run.last_snapshot)
    losses = {}
    for impl in ("native", "ref"):
        G = Generator(**dict(data["G_kwargs"], impl=impl))
        D = Discriminator(**dict(data["D_kwargs"], impl=impl))
        tr = Trainer(G, D, batch=4, gamma=0.05)
        tr.load_networks(data)
        torch.manual_seed(5)
        real = torch.rand(4, 3, 32, 32) * 2 - 1
        losses[impl] = tr.step(real)
    assert losses["native"].keys() == losses["ref"].keys() and len(losses["native"]) >= 6
    for k in losses["native"]:
        assert float(losses["native"][k]) == pytest.approx(float(losses["ref"][k]), rel=1e-3, abs=1e-5), k


def _ddp_worker(rank, world, port, data, out, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    res = train(TrainConfig(data=data, outdir=out, preset="32", batch=8, kimg=0.048, tick=0.016, snap=1,
                            image_snap=0, fid_every=0, workers=0, progress=False, tensorboard=False, device="cpu"))
    t = res.trainer
    torch.save({"G": t.G.state_dict(), "D": t.D.state_dict(), "G_ema": t.G_ema.state_dict(),
                "p": t.augment_p, "nimg": t.cur_nimg}, os.path.join(result_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_ddp_two_processes_keep_replicas_identical(data16, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    mp.spawn(_ddp_worker, args=(2, port, data16, str(out), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["nimg"] == r1["nimg"] == 48 and r0["p"] == r1["p"]
    for net in ("G", "D", "G_ema"):
        for k in r0[net]:
            if k.endswith("w_avg"):
                continue   # a per-process running mean of its own latents, as in StyleGAN2-ADA
            assert torch.equal(r0[net][k], r1[net][k]), (net, k)
    first = snap.load_snapshot(snap.list_snapshots(out)[0])
    assert not torch.equal(first["D"]["b4.out.weight"], r0["D"]["b4.out.weight"])   # it trained
    assert first["rng"]["world_size"] == 2 and len(first["rng"]["ranks"]) == 2
    assert first["config"]["batch"] == 8 and first["config"]["world_size"] == 2


def test_finetune_freeze_d(full_run, data8, tmp_path):
    res = finetune(full_run.last_snapshot, data8, tmp_path, kimg=0.016, freeze_d=2, tick=0.004, snap=1000,
                   image_snap=0, fid_every=0, workers=0, progress=False, tensorboard=False, device="cpu")
    src = snap.load_snapshot(full_run.last_snapshot)
    out = snap.load_snapshot(res.last_snapshot)
    cfg = out["config"]
    assert cfg["lr"] == 1e-4 and cfg["ada_kimg"] == 100 and cfg["augment"] == "ada" and cfg["freeze_d"] == 2
    assert cfg["init"] == full_run.last_snapshot and out["cur_nimg"] == 16
    # Freeze-D: the first two layers (b32.fromrgb, b32.conv0) keep their weights, the rest train.
    frozen = [k for k in src["D"] if k.startswith(("b32.fromrgb.", "b32.conv0."))]
    assert frozen and all(torch.equal(src["D"][k], out["D"][k]) for k in frozen)
    assert not torch.equal(src["D"]["b32.conv1.weight"], out["D"]["b32.conv1.weight"])
    assert not torch.equal(src["G"]["synthesis.b32.conv1.weight"], out["G"]["synthesis.b32.conv1.weight"])
    # lr 1e-4 (x the lazy-regularisation ratio) moves the weights far less than training at 2e-3 did.
    assert out["opt_G"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 4 / 5)
    assert out["opt_D"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 16 / 17)


def test_bad_config_is_named(data16, tmp_path):
    with pytest.raises(ValueError, match="data"):
        train(_cfg(str(tmp_path / "missing"), tmp_path, 0.01))
    with pytest.raises(ValueError, match="preset"):
        train(_cfg(data16, tmp_path, 0.01, preset="77"))
    with pytest.raises(ValueError, match="augment"):
        train(_cfg(data16, tmp_path, 0.01, augment="sometimes"))
    with pytest.raises(ValueError, match="kimg"):
        train(_cfg(data16, tmp_path, 0))
    with pytest.raises(ValueError, match="resume"):
        train(_cfg(data16, tmp_path, 0.01, resume=str(tmp_path / "nothing.pt")))
    with pytest.raises(ValueError, match="fewer than the per-process batch"):
        train(_cfg(data16, tmp_path, 0.01, batch=32))
    with pytest.raises(ValueError, match="snapshot"):
        finetune(str(tmp_path / "nope.pt"), data16, tmp_path)
    snap.save_snapshot(tmp_path / snap.snapshot_name(4), {"format": snap.FORMAT})
    with pytest.raises(ValueError, match="already holds snapshots"):
        train(_cfg(data16, tmp_path, 0.01))


def test_bad_inputs_leave_no_outputs(data16, tmp_path):
    # A bad --inception file or a truncated image used to leave training_options.json, stats.jsonl
    # and TensorBoard files behind: both are now checked before the run writes anything.
    garbage = tmp_path / "inception.pt"
    garbage.write_bytes(os.urandom(3000))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="inception.pt") as e:
        train(_cfg(data16, out, 0.01, fid_every=1, inception=str(garbage), tensorboard=True))
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value)
    assert not out.exists()
    cut = tmp_path / "cut"
    shutil.copytree(data16, cut)
    victim = cut / image_name(9)
    victim.write_bytes(victim.read_bytes()[:-100])   # a truncated copy: the image's end is missing
    with pytest.raises(ValueError, match=f"1 of 16 images are unusable.*{image_name(9)}.*truncated"):
        train(_cfg(str(cut), out, 0.01, tensorboard=True))
    assert not out.exists()
    victim.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=f"{image_name(9)}.*neither a PNG nor a JPEG"):
        train(_cfg(str(cut), out, 0.01, tensorboard=True))
    assert not out.exists()


def test_command_line_train_resume_generate(data8, tmp_path):
    import argparse

    from retina_fast.gan.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="stage", required=True))
    out = tmp_path / "run"
    common = ["--data", data8, "--outdir", str(out), "--tick", "0.008", "--fid-every", "0", "--img-snap", "0",
              "--workers", "0", "--device", "cpu", "--no-tensorboard", "--deterministic"]
    args = parser.parse_args(["train", "--kimg", "0.008"] + common)
    assert args.func(args) == 0
    args = parser.parse_args(["train", "--kimg", "0.016", "--resume", str(out)] + common)
    assert args.func(args) == 0
    assert [r["nimg"] for r in _stats(out)] == [4, 8, 16]
    last = snap.list_snapshots(out)[-1]
    args = parser.parse_args(["generate", "--network", last, "--seeds", "0-2", "--outdir", str(tmp_path / "g"),
                              "--device", "cpu"])
    assert args.func(args) == 0
    assert sorted(os.listdir(tmp_path / "g")) == ["seed000000.png", "seed000001.png", "seed000002.png"]


def test_augment_modes(data8, tmp_path):
    fixed = train(_cfg(data8, tmp_path / "fixed", 0.012, augment="fixed", p=0.3))
    assert fixed.trainer.augment_pipe is not None and fixed.augment_p == pytest.approx(0.3)
    none = train(_cfg(data8, tmp_path / "none", 0.012, augment="noaug"))
    assert none.trainer.augment_pipe is None and none.trainer.ada is None
    assert snap.load_snapshot(none.last_snapshot)["ada_stats"] is None


@pytest.mark.cuda
def test_cuda_training_with_fp16_layers(data16, tmp_path):
    from retina_fast.gan.networks import make_networks

    torch.manual_seed(0)
    G, D = make_networks("64", num_fp16_res=2)
    tr = Trainer(G, D, batch=4, gamma=0.05, device="cuda")
    before = [p.detach().clone() for p in tr.D.parameters()]
    real = torch.rand(4, 3, 64, 64, device="cuda") * 2 - 1
    for _ in range(5):
        losses = tr.step(real)
        assert all(torch.isfinite(v).all() for v in losses.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, tr.D.parameters()))
    res = train(_cfg(data16, tmp_path, 0.016, device="cuda", deterministic=False))
    data = snap.load_snapshot(res.last_snapshot)   # CUDA snapshot, read on the CPU
    assert data["cur_nimg"] == 16 and all(v.device.type == "cpu" for v in data["G"].values())
