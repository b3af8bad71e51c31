"""NVlabs network pickles (`retina_fast.gan.nvlabs`), without NVlabs' code.

The fixture is written here with the structure of NVlabs' ``torch_utils.persistence``: every
network and layer pickles as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
with ``meta = {'type': 'class', 'version': 6, 'module_src', 'class_name', 'state'}`` and the
module's ``__dict__`` as ``state``; the training loop's dict holds G, D, G_ema, augment_pipe and
training_set_kwargs. Its ``module_src`` would create a marker file if it were ever executed.
Checked: the round trip (our networks from the fixture equal the ones it was written from), the
refusals (a hostile ``__reduce__``, a hostile tensor storage, an unknown class, StyleGAN3-T/R, a
TensorFlow pickle, a truncated file), ``Generator.from_checkpoint``, ``generate``, ``convert`` and
training started from a pickle.
"""
import collections
import copy
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from retina_fast.cli import main as cli_main
from retina_fast.gan import snapshot as snap
from retina_fast.gan.generate import generate_images
from retina_fast.gan.networks import Discriminator, Generator, make_networks
from retina_fast.gan.nvlabs import (PERSISTENCE_HOOK, load_network_pickle, network_pickle_to_snapshot,
                                   read_network_pickle)
from retina_fast.gan.training import TrainConfig, finetune, train

pytestmark = pytest.mark.usefixtures("one_thread")

AUGMENT_P = 0.25


def _hostile_src(marker):
    return f"import os\nos.system('touch {marker}')\nraise SystemExit('module_src must never run')\n"


@pytest.fixture
def nvlabs_modules(monkeypatch):
    """Stand-ins for NVlabs' `torch_utils.persistence` and `dnnlib.util`, present only while pickling."""
    persistence = types.ModuleType("torch_utils.persistence")

    def hook(meta):
        raise AssertionError("the test's own hook is never called: the loader resolves it")

    hook.__module__, hook.__qualname__ = PERSISTENCE_HOOK[0], PERSISTENCE_HOOK[1]
    setattr(persistence, PERSISTENCE_HOOK[1], hook)
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    for name, mod in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                      ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(hook=hook, EasyDict=easy)


class Persistent:
    """Pickles as NVlabs' persistence hook with the meta dict layout of `torch_utils.persistence`."""

    def __init__(self, hook, class_name, state, module_src):
        self.hook, self.class_name, self.state, self.module_src = hook, class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return self.hook, (meta,)


def _record(nv, module, src, init_kwargs=None, rename=None):
    """A module's ``__dict__`` as NVlabs pickles it (children recorded the same way)."""
    rename = rename or {}
    state = {"training": False,
             "_parameters": collections.OrderedDict(module.named_parameters(recurse=False)),
             "_buffers": collections.OrderedDict(module.named_buffers(recurse=False)),
             "_non_persistent_buffers_set": set(),
             "_forward_hooks": collections.OrderedDict(),
             "_modules": collections.OrderedDict((n, _record(nv, c, src, rename=rename))
                                                 for n, c in module.named_children()),
             "_init_args": (), "_init_kwargs": nv.EasyDict(init_kwargs or {})}
    for k, v in vars(module).items():
        if not k.startswith("_") and (v is None or isinstance(v, (bool, int, float, str, list))):
            state[k] = np.float64(v) if k == "weight_gain" else v   # NVlabs keeps numpy gains
    name = rename.get(type(module).__name__, type(module).__name__)
    return Persistent(nv.hook, name, state, src)


def _nvlabs_kwargs(nv, G, D):
    g = {k: v for k, v in G.init_kwargs.items() if k != "impl"}
    g["mapping_kwargs"] = nv.EasyDict(g["mapping_kwargs"])
    g["synthesis_kwargs"] = nv.EasyDict(g["synthesis_kwargs"])
    d = {k: v for k, v in D.init_kwargs.items() if k not in ("impl", "mbstd_group_size", "mbstd_num_channels")}
    # NVlabs' train.py sets the minibatch-std group inside the epilogue's arguments.
    d["epilogue_kwargs"] = nv.EasyDict(dict(d["epilogue_kwargs"], mbstd_group_size=D.init_kwargs["mbstd_group_size"]))
    return g, d


def _networks(c_dim=0, seed=0):
    torch.manual_seed(seed)
    G, D = make_networks("32", c_dim=c_dim)
    with torch.no_grad():   # non-trivial noise strengths, w_avg and biases, as after training
        for m in (G, D):
            for n, t in list(m.named_parameters()) + list(m.named_buffers()):
                if n.endswith(("noise_strength", "w_avg", "bias")):
                    t.add_(0.3 * torch.randn_like(t))
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.mul_(1.01)
    return G.eval(), D.eval(), G_ema.eval()


def write_fixture(nv, path, G, D, G_ema, src="", augment_p=AUGMENT_P, rename=None, extra=None, protocol=None):
    g_kw, d_kw = _nvlabs_kwargs(nv, G, D)
    aug_state = {"_parameters": collections.OrderedDict(), "_modules": collections.OrderedDict(),
                 "_buffers": collections.OrderedDict(p=torch.tensor(augment_p)), "_init_args": (),
                 "_init_kwargs": nv.EasyDict(xflip=1, rotate90=1)}
    data = dict(training_set_kwargs=dict(nv.EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                     path="/data/fundus.zip", use_labels=G.c_dim > 0,
                                                     resolution=G.img_resolution, xflip=False)),
                G=_record(nv, G, src, g_kw, rename), D=_record(nv, D, src, d_kw, rename),
                G_ema=_record(nv, G_ema, src, g_kw, rename),
                augment_pipe=Persistent(nv.hook, "AugmentPipe", aug_state, src))
    data.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return str(path)


@pytest.fixture
def fixture_pkl(nvlabs_modules, tmp_path, monkeypatch):
    marker = tmp_path / "module_src_ran"
    G, D, G_ema = _networks()
    path = write_fixture(nvlabs_modules, tmp_path / "network-snapshot-000000.pkl", G, D, G_ema,
                         src=_hostile_src(marker))
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)   # the loader needs none of them
    return types.SimpleNamespace(path=path, G=G, D=D, G_ema=G_ema, marker=marker)


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ---------------------------------------------------------------------------------------------


# Protocol 3: what NVlabs' recommended Python 3.7 writes (sets as builtins.set); 5: Python 3.8+.
@pytest.mark.parametrize("c_dim, protocol", [(0, 3), (2, 5)])
def test_round_trip_equals_the_networks_written(nvlabs_modules, tmp_path, c_dim, protocol):
    marker = tmp_path / "module_src_ran"
    G, D, G_ema = _networks(c_dim, seed=c_dim)
    path = write_fixture(nvlabs_modules, tmp_path / "net.pkl", G, D, G_ema, src=_hostile_src(marker),
                         protocol=protocol)
    nets = load_network_pickle(path)
    assert not marker.exists()
    for ours, ref in ((nets.G, G), (nets.D, D), (nets.G_ema, G_ema)):
        _assert_same_state(ours, ref)
        assert ours.init_kwargs == dict(ref.init_kwargs, mapping_kwargs=ours.init_kwargs["mapping_kwargs"])
    assert nets.augment_p == pytest.approx(AUGMENT_P)
    assert nets.training_set_kwargs["resolution"] == 32
    z = torch.randn(4, G.z_dim)
    c = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0]), c_dim).float() if c_dim else None
    with torch.no_grad():
        for psi, cutoff in ((1, None), (0.7, None), (0.5, 3)):
            kw = dict(truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
            assert torch.equal(nets.G_ema(z, c, **kw), G_ema(z, c, **kw))
        img = G(z, c, noise_mode="const")
        assert torch.equal(nets.D(img, c), D(img, c))
    loaded = Generator.from_checkpoint(path)   # G_ema, through the .pkl dispatch
    _assert_same_state(loaded, G_ema)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    _assert_same_state(Discriminator.from_checkpoint(path), D)
    with pytest.raises(ValueError, match="not a Generator"):
        Generator.from_checkpoint(path, key="D")


def test_read_records_without_running_source(fixture_pkl):
    data = read_network_pickle(fixture_pkl.path)
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    assert data["G"].class_name == "Generator" and data["G"].version == 6
    assert "os.system" in data["G"].module_src   # kept as text, never executed
    assert [n for n, _ in data["G"].walk("G")][:3] == ["G", "G.synthesis", "G.synthesis.b4"]
    assert not fixture_pkl.marker.exists()


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_hostile_reduce_is_refused_unrun(nvlabs_modules, tmp_path):
    marker = tmp_path / "pwned"
    G, D, G_ema = _networks()
    # At the top level, and inside a layer's state (reached only through the persistence hook).
    top = write_fixture(nvlabs_modules, tmp_path / "top.pkl", G, D, G_ema,
                        extra={"progress": _System(f"touch {marker}")})
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_System(f"touch {marker}"), f)
    nested = _record(nvlabs_modules, G, "")
    nested.state["_modules"]["synthesis"].state["payload"] = _System(f"touch {marker}")
    with open(tmp_path / "nested.pkl", "wb") as f:
        pickle.dump({"G_ema": nested}, f)
    for path in (top, tmp_path / "plain.pkl", tmp_path / "nested.pkl"):
        with pytest.raises(ValueError, match=r"refusing (posix|nt|os)\.system") as e:
            load_network_pickle(path, keys=("G_ema",))
        assert "\n" not in str(e.value) and os.fspath(path) in str(e.value)
    assert not marker.exists()


class _HostileStorage:
    """A tensor storage whose bytes are a torch.save pickle that calls os.system."""

    def __init__(self, cmd):
        import io
        buf = io.BytesIO()
        torch.save(_System(cmd), buf, _use_new_zipfile_serialization=False)
        self.raw = buf.getvalue()

    def __reduce__(self):
        import torch.storage
        return torch.storage._load_from_bytes, (self.raw,)


def test_hostile_tensor_storage_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "storage.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _HostileStorage(f"touch {marker}")}, f)
    with pytest.raises(ValueError, match="storage cannot be read tensors-only"):
        read_network_pickle(path)
    assert not marker.exists()


def test_other_classes_are_refused_by_name(nvlabs_modules, tmp_path):
    G, D, G_ema = _networks()
    path = write_fixture(nvlabs_modules, tmp_path / "torch.pkl", G, D, G_ema,
                         extra={"loss": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match=r"refusing torch\.nn\.modules\.linear\.Linear"):
        load_network_pickle(path)
    path = write_fixture(nvlabs_modules, tmp_path / "unknown.pkl", G, D, G_ema,
                         rename={"ToRGBLayer": "FancyToRGB"})
    with pytest.raises(ValueError, match="G.synthesis.b4.torgb is a FancyToRGB"):
        load_network_pickle(path)
    path = write_fixture(nvlabs_modules, tmp_path / "top.pkl", G, D, G_ema, rename={"Discriminator": "Critic"})
    with pytest.raises(ValueError, match="D is of unknown class 'Critic'"):
        load_network_pickle(path)
    # Keys that are absent are named.
    with pytest.raises(ValueError, match=r"has no \['G', 'D'\]"):
        with open(tmp_path / "ema_only.pkl", "wb") as f:
            pickle.dump({"G_ema": _record(nvlabs_modules, G_ema, "")}, f)
        load_network_pickle(tmp_path / "ema_only.pkl")


def test_stylegan3_is_refused_naming_the_class(nvlabs_modules, tmp_path):
    G, D, G_ema = _networks()
    g_kw, _ = _nvlabs_kwargs(nvlabs_modules, G, D)
    rec = _record(nvlabs_modules, G_ema, "", g_kw)
    synth = rec.state["_modules"]["synthesis"]
    synth.state["_modules"] = collections.OrderedDict(
        input=Persistent(nvlabs_modules.hook, "SynthesisInput", {"_modules": {}}, ""))
    with open(tmp_path / "sg3t.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    with pytest.raises(ValueError, match="StyleGAN3-T/R.*class SynthesisInput at G_ema.synthesis.input"):
        Generator.from_checkpoint(tmp_path / "sg3t.pkl")
    rec = _record(nvlabs_modules, G_ema, "", dict(g_kw, magnitude_ema_beta=0.999))
    with open(tmp_path / "sg3r.pkl", "wb") as f:
        pickle.dump({"G_ema": rec}, f)
    with pytest.raises(ValueError, match="StyleGAN3-T/R.*takes magnitude_ema_beta"):
        Generator.from_checkpoint(tmp_path / "sg3r.pkl")


def test_tensorflow_pickle_is_refused(tmp_path):
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    # (G, D, Gs) of dnnlib.tflib.network.Network objects, as the TF StyleGAN2 repository pickles them.
    net = b"cdnnlib.tflib.network\nNetwork\n)\x81}b"
    path.write_bytes(b"\x80\x02" + net + net + net + b"\x87.")
    with pytest.raises(ValueError, match="legacy TensorFlow StyleGAN pickle"):
        Generator.from_checkpoint(path)


def test_truncated_empty_and_foreign_files(fixture_pkl, tmp_path):
    raw = open(fixture_pkl.path, "rb").read()
    cases = {"truncated.pkl": raw[: len(raw) // 2], "empty.pkl": b"", "text.pkl": b"hello, world\n" * 10,
             "zip.pkl": b"PK\x03\x04" + raw[:100]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as e:
            load_network_pickle(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg
        if name in ("truncated.pkl", "empty.pkl"):
            assert "truncated" in msg
    with pytest.raises(FileNotFoundError):
        load_network_pickle(tmp_path / "missing.pkl")


def test_convert_cli_and_generate(fixture_pkl, tmp_path, capsys):
    out = tmp_path / "converted" / "nvlabs.pt"
    assert cli_main(["convert", fixture_pkl.path, str(out)]) == 0
    data = snap.load_snapshot(out)
    assert data["nvlabs"]["augment_p"] == pytest.approx(AUGMENT_P) and data["config"] == {"preset": "32"}
    _assert_same_state(Generator.from_checkpoint(out), fixture_pkl.G_ema)
    _assert_same_state(Generator.from_checkpoint(out, key="G"), fixture_pkl.G)
    _assert_same_state(Discriminator.from_checkpoint(out), fixture_pkl.D)
    assert [p.name for p in out.parent.iterdir()] == ["nvlabs.pt"]   # no temporary left behind
    # generate from the pickle and from its conversion: the same files.
    a = generate_images(fixture_pkl.path, "0-2", tmp_path / "a", truncation_psi=0.7)
    assert cli_main(["generate", "--network", str(out), "--seeds", "0-2", "--outdir", str(tmp_path / "b"),
                     "--trunc", "0.7", "--device", "cpu"]) == 0
    for p in a:
        assert open(p, "rb").read() == open(tmp_path / "b" / os.path.basename(p), "rb").read()
    # A bad input: one line, exit 2, nothing written.
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(open(fixture_pkl.path, "rb").read()[:1000])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli_main(["convert", str(bad), str(tmp_path / "never.pt")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("retina-fast convert: error:") and "truncated" in err and "\n" not in err
    assert not (tmp_path / "never.pt").exists()
    assert not fixture_pkl.marker.exists()


@pytest.fixture
def data8(tmp_path, phantom_dataset):
    return phantom_dataset(tmp_path / "data", [0] * 8)


@pytest.mark.parametrize("how", ["train --resume x.pkl", "finetune --resume x.pkl", "train --resume converted.pt"])
def test_training_starts_from_the_pickle(fixture_pkl, data8, tmp_path, how):
    src = fixture_pkl.path
    if how.endswith("converted.pt"):
        src = snap.save_snapshot(tmp_path / "converted.pt", network_pickle_to_snapshot(src))
    kw = dict(kimg=0.004, batch=4, tick=0.004, snap=1000, image_snap=0, fid_every=0, workers=0, progress=False,
              deterministic=True, tensorboard=False, device="cpu", lr=1e-12)
    out = tmp_path / "run"
    if how.startswith("finetune"):
        res = finetune(src, data8, str(out), **{k: v for k, v in kw.items() if k != "lr"}, lr=1e-12)
    else:
        res = train(TrainConfig(data=data8, outdir=str(out), preset="32", resume=src, **kw))
    t = res.trainer
    # One step at lr 1e-12 from the pickle's weights; ADA p from its augment pipe (ADA adjusts
    # p every 4 steps: not yet); fresh optimisers and counters.
    for ours, ref in ((t.G, fixture_pkl.G), (t.D, fixture_pkl.D)):
        for (n, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            if not n.endswith("w_avg"):   # tracked from the step's latents
                assert torch.allclose(a, b, rtol=0, atol=1e-9), n
    assert t.augment_p == pytest.approx(AUGMENT_P)
    assert res.cur_nimg == 4
    assert max(s["step"].item() for s in t.opts["G"].state_dict()["state"].values()) <= 2   # Gmain + Greg
