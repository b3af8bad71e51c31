"""Hostile and damaged weight files against every loader, through Python and the command line.

A pickle whose ``__reduce__`` calls ``os.system`` must never run (its marker file never appears),
and it, a truncated file, random bytes and an empty file each give one line naming the file that
never advises ``weights_only=False``; on the command line that is exit status 2.
"""
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from retina_fast.checkpoints import load_torch_file
from retina_fast.classify.model import make_classifier
from retina_fast.classify.train import load_classifier
from retina_fast.cli import main
from retina_fast.data.dataset import write_png
from retina_fast.gan import snapshot as snap
from retina_fast.gan.networks import Discriminator, Generator
from retina_fast.metrics.inception import load_inception
from retina_fast.vessels.fpn import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


class _Payload:
    """Pickles as a call of os.system: unpickling it (unsafely) touches the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _make_files(folder, marker):
    payload = {"format": snap.FORMAT, "G_kwargs": {}, "state_dict": _Payload(marker)}
    files = {}
    for proto in (2, 4):
        files[f"pickle{proto}"] = folder / f"evil-pickle{proto}.pt"
        files[f"pickle{proto}"].write_bytes(pickle.dumps(payload, protocol=proto))
    files["torch-zip"] = folder / "evil-zip.pt"
    torch.save(payload, files["torch-zip"])   # a torch.save archive whose data.pkl calls os.system
    # A zip laid out like a TorchScript archive (the Inception loader routes those to torch.jit.load).
    files["script-zip"] = folder / "evil-script.pt"
    with zipfile.ZipFile(files["script-zip"], "w") as z:
        z.writestr("evil/code/__torch__.py", "import os\nos.system('touch " + str(marker) + "')\n")
        z.writestr("evil/data.pkl", pickle.dumps(payload, protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps((_Payload(marker),), protocol=2))
        z.writestr("evil/version", "3\n")
    good = folder / "good.pt"
    torch.save({"w": torch.arange(5000.0)}, good)
    files["truncated"] = folder / "truncated.pt"
    files["truncated"].write_bytes(good.read_bytes()[:4000])
    files["random"] = folder / "random.pt"
    files["random"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["empty"] = folder / "empty.pt"
    files["empty"].write_bytes(b"")
    return files


KINDS = ("pickle2", "pickle4", "torch-zip", "script-zip", "truncated", "random", "empty")


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "MARKER"
    return _make_files(tmp_path, marker), marker


def test_the_payload_is_live(tmp_path):
    # The files are real attacks: unpickling one without restriction runs the command.
    marker = tmp_path / "MARKER"
    files = _make_files(tmp_path, marker)
    pickle.loads(files["pickle2"].read_bytes())
    assert marker.exists()


LOADERS = {
    "load_torch_file": load_torch_file,
    "snapshot": snap.load_snapshot,
    "generator": Generator.from_checkpoint,
    "discriminator": Discriminator.from_checkpoint,
    "resume": lambda p: snap.resolve_resume(p),
    "fpn": load_model,
    "inception": load_inception,
    "classifier weights": lambda p: make_classifier("resnet18", weights=p),
    "classifier checkpoint": load_classifier,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_in_one_line(hostile, loader, kind):
    files, marker = hostile
    path = files[kind]
    with pytest.raises(ValueError) as e:
        LOADERS[loader](path)
    msg = str(e.value)
    assert not marker.exists(), "the file's code ran"
    assert "\n" not in msg and os.path.basename(path) in msg and len(msg) < 400
    assert "weights_only" not in msg and "safe_globals" not in msg
    if kind.startswith("pickle") or kind == "torch-zip":
        assert "refused" in msg or "not a" in msg or "TorchScript" in msg


def _dataset(folder, n=3):
    folder.mkdir()
    for i in range(n):
        write_png(str(folder / f"img{i}.png"), np.full((64, 64, 3), 40 * i + 20, np.uint8))
    return str(folder)


def _commands(path, data, out):
    return {
        "generate": ["generate", "--network", path, "--seeds", "0", "--outdir", out],
        "train --resume": ["train", "--data", data, "--outdir", out, "--resume", path, "--kimg", "0.01"],
        "finetune": ["finetune", "--resume", path, "--data", data, "--outdir", out, "--kimg", "0.01"],
        "train --inception": ["train", "--data", data, "--outdir", out, "--inception", path, "--kimg", "0.01",
                              "--batch", "2", "--workers", "0"],
        "fid": ["fid", "--real", data, "--fake", data, "--inception", path],
        "vessels measure": ["vessels", "measure", data, "--out", os.path.join(out, "m.csv"), "--method", "fpn",
                            "--checkpoint", path],
        "classify predict": ["classify", "predict", "--checkpoint", path, "--images", data,
                             "--out", os.path.join(out, "s.csv")],
        "classify train": ["classify", "train", "--data", data, "--out", out, "--weights", path,
                           "--arch", "resnet18"],
    }


@pytest.mark.parametrize("kind", ("pickle4", "torch-zip", "truncated", "random"))
@pytest.mark.parametrize("command", list(_commands("p", "d", "o")))
def test_every_command_exits_2_in_one_line(hostile, tmp_path, capsys, command, kind):
    files, marker = hostile
    path = str(files[kind])
    data = _dataset(tmp_path / "images")
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        main(_commands(path, data, out)[command])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert not marker.exists(), "the file's code ran"
    assert len(err.splitlines()) == 1 and err.startswith("retina-fast ") and os.path.basename(path) in err, err
    assert "weights_only" not in err
    assert not os.path.exists(out) or not os.listdir(out), os.listdir(out)


def test_hostile_network_sizes_on_the_command_line(tmp_path, capsys):
    # A well-formed snapshot whose G_kwargs ask for a huge network: one line, nothing allocated.
    from retina_fast.gan.networks import make_networks
    G, D = make_networks("32")
    path = tmp_path / "huge.pt"
    torch.save({"format": snap.FORMAT, "G_kwargs": dict(G.init_kwargs, z_dim=200000), "G_ema": G.state_dict()}, path)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--network", str(path), "--seeds", "0", "--outdir", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "huge.pt" in err and "G_kwargs['z_dim'] = 200000" in err
    assert not out.exists()
