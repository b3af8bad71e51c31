"""`retina_fast.synthetic.SyntheticSource`: one synthetic-image source for every stage."""
import ast
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from retina_fast.cli import main
from retina_fast.data.dataset import write_png
from retina_fast.synthetic import SyntheticSource


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A tiny unconditional preset-'32' generator snapshot (random weights)."""
    from retina_fast.gan.networks import make_networks

    torch.manual_seed(0)
    G, D = make_networks("32")
    path = tmp_path_factory.mktemp("synthetic_source") / "snap.pt"
    torch.save({"format": "retina_fast.gan/1", "G_kwargs": G.init_kwargs, "D_kwargs": D.init_kwargs,
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), "cur_nimg": 0}, path)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png", "c.png"):
        write_png(str(tmp_path / "imgs" / name), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return tmp_path / "imgs"


def test_folder_source_resolves_to_its_sorted_images(folder):
    src = SyntheticSource.from_arg(str(folder), num=1, truncation_psi=0.5)   # generator options: ignored
    assert src.kind == "folder" and not src.is_generator and os.fspath(src) == str(folder)
    assert src.resolve() == [str(folder / n) for n in ("a.png", "b.png", "c.png")]
    assert src.with_seeds([0, 1]).resolve() == [str(folder / "a.png"), str(folder / "b.png")]
    with pytest.raises(ValueError, match="holds 3 images; 5 are needed"):
        src.with_seeds(range(5)).resolve()
    assert src.describe() == str(folder)


def test_zip_dataset_is_extracted_once(folder, tmp_path):
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as f:
        for n in ("a.png", "b.png"):
            f.write(folder / n, n)
    src = SyntheticSource.from_arg(str(z))
    paths = src.resolve(tmp_path / "cache")
    assert [os.path.basename(p) for p in paths] == ["a.png", "b.png"]
    assert open(paths[0], "rb").read() == (folder / "a.png").read_bytes()


@pytest.mark.parametrize("arg, kw, match", [
    ("missing", {}, r"--synthetic '.*missing': no such folder or file"),
    ("notes.txt", {}, r"--synthetic '.*notes.txt': not a folder, dataset .zip or generator checkpoint"),
    ("snap.pt", {"truncation_psi": float("nan")}, "--synthetic truncation_psi must be"),
    ("snap.pt", {"class_idx": -1}, "--synthetic class must be"),
    ("snap.pt", {"seeds": "0-3", "num": 4}, "give seeds or num, not both"),
    ("snap.pt", {"seeds": "3-1"}, "runs backwards"),
])
def test_bad_source_is_one_line_naming_the_argument(tmp_path, arg, kw, match):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "snap.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=match) as e:
        SyntheticSource.from_arg(str(tmp_path / arg), name="--synthetic", **kw)
    assert "\n" not in str(e.value)


def test_generator_images_are_those_of_generate_and_cached(snapshot, tmp_path):
    from retina_fast.gan.generate import generate_images

    src = SyntheticSource.from_arg(snapshot, seeds="3,5", truncation_psi=0.7)
    assert src.is_generator and src.seeds == (3, 5)
    assert src.describe() == f"{snapshot} (seeds 3,5, psi 0.7)"
    paths = src.resolve(tmp_path / "cache", device="cpu")
    root = os.path.dirname(paths[0])
    assert os.path.basename(root) == src.cache_name() and src.cache_name().startswith("snap-psi0.7-const-")
    assert [os.path.basename(p) for p in paths] == ["seed000003.png", "seed000005.png"]
    assert sorted(os.listdir(root)) == ["seed000003.png", "seed000005.png"]   # nothing else, no temporaries
    ref = generate_images(snapshot, [3, 5], tmp_path / "ref", truncation_psi=0.7)
    for p, r in zip(paths, ref):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(r)))
    # a rerun reuses the files; other parameters get another folder
    stamps = [os.stat(p).st_mtime_ns for p in paths]
    assert src.resolve(tmp_path / "cache") == paths and [os.stat(p).st_mtime_ns for p in paths] == stamps
    other = SyntheticSource.from_arg(snapshot, seeds="3,5", truncation_psi=1.0).resolve(tmp_path / "cache")
    assert os.path.dirname(other[0]) != root
    assert not np.array_equal(np.asarray(Image.open(other[0])), np.asarray(Image.open(paths[0])))
    # a killed run's gap is filled: only the missing seed is generated
    os.remove(paths[1])
    assert src.resolve(tmp_path / "cache") == paths and os.stat(paths[0]).st_mtime_ns == stamps[0]
    with pytest.raises(ValueError, match="unconditional"):
        SyntheticSource.from_arg(snapshot, num=1, class_idx=1).resolve(tmp_path / "cache")


def test_metrics_package_does_not_import_gan():
    """metrics gets its generator through retina_fast.synthetic, never from retina_fast.gan directly."""
    root = os.path.join(os.path.dirname(__file__), "..", "retina_fast", "metrics")
    for name in os.listdir(root):
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(open(os.path.join(root, name), encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                mods = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for m in mods:
                assert not (m.startswith("retina_fast.gan") or m.startswith("..gan")), (name, m)


def test_turing_create_study_from_a_checkpoint(snapshot, folder, tmp_path, capsys):
    """`turing create-study --synthetic SNAPSHOT`: the study's synthetic images are the generated files."""
    import sqlalchemy as sa

    from retina_fast.turing import db

    cache = tmp_path / "cache"
    rc = main(["turing", "create-study", "--db", f"sqlite:///{tmp_path / 's.db'}", "--real", str(folder),
               "--synthetic", snapshot, "--seeds", "0-2", "--readers", "1", "--seed", "0",
               "--store", str(tmp_path / "store"), "--synthetic-cache", str(cache)])
    assert rc == 0
    (gen,) = os.listdir(cache)
    assert sorted(os.listdir(cache / gen)) == [f"seed{i:06d}.png" for i in range(3)]
    engine = db.make_engine(f"sqlite:///{tmp_path / 's.db'}", "--db")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.images.c.source, db.images.c.truth)).all()
    engine.dispose()
    assert sorted(s for s, t in rows if t == "synthetic") == [f"seed{i:06d}.png" for i in range(3)]
    assert str(cache / gen) in capsys.readouterr().out


def test_turing_create_study_bad_seeds_leave_nothing(snapshot, folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["turing", "create-study", "--db", f"sqlite:///{tmp_path / 's.db'}", "--real", str(folder),
              "--synthetic", snapshot, "--seeds", "0-2", "--n-synthetic", "5", "--readers", "1", "--seed", "0",
              "--store", str(tmp_path / "store"), "--synthetic-cache", str(tmp_path / "cache")])
    assert e.value.code == 2 and "--n-synthetic must be in 1..3, got 5" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["imgs"]   # no database, store or generated images
