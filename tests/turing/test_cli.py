"""Bad-input matrix of `retina-fast turing create-study | serve | analyze`.

Every bad argument must stop the command with exit status 2 and one line on stderr naming the
argument (or file), before anything is created: no database, no store folder, no analysis folder.
The commands run through the top-level `retina_fast.cli.main`, as a user's shell would, and a few
through a real subprocess.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from retina_fast import cli as top_cli
from retina_fast.turing import cli as turing_cli

PREFIX = "retina-fast turing: error: "
GOOD_TOKEN = "a-good-admin-token-42"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Folders real/ and synthetic/ of 3 tiny PNGs each, one with a corrupt PNG, an empty one."""
    root = tmp_path_factory.mktemp("turing_cli_images")
    rng = np.random.default_rng(0)
    for kind in ("real", "synthetic", "corrupt"):
        (root / kind).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / kind / f"{i}.png")
    (root / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a folder")
    (root / "not_a_db").write_bytes(b"this is not an SQLite database" * 100)
    (root / "short_token").write_text("short\n")
    return root


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A small simulated export CSV in the app's format."""
    from retina_fast.turing.simulate import simulate_readers
    path = tmp_path_factory.mktemp("turing_cli_export") / "export.csv"
    simulate_readers(n_real=4, n_synthetic=4, path=str(path), seed=3)
    return path


@pytest.fixture(autouse=True)
def _no_traceback_no_server(monkeypatch):
    monkeypatch.delenv("RETINA_FAST_TRACEBACK", raising=False)
    monkeypatch.delenv(turing_cli.TOKEN_ENV, raising=False)
    import uvicorn

    def refuse(*a, **kw):
        raise AssertionError("a bad argument reached uvicorn.run")
    monkeypatch.setattr(uvicorn, "run", refuse)


def _run(argv, capsys):
    """(exit status, stderr) of `retina-fast ARGV` run in-process."""
    try:
        rc = top_cli.main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def _create(images, tmp, **over):
    args = {"--db": f"sqlite:///{tmp / 's.db'}", "--real": images / "real", "--synthetic": images / "synthetic",
            "--readers": 2, "--seed": 0, "--store": tmp / "store"}
    args.update(over)
    return ["turing", "create-study"] + [str(x) for k, v in args.items() if v is not None for x in (k, v)]


# (over-rides of create-study's arguments, regex the one line must match)
CREATE_CASES = {
    "db-garbage": ({"--db": "garbage"}, r"--db: not an SQLAlchemy URL"),
    "db-unknown-dialect": ({"--db": "nosuchdb://x/y"}, r"--db nosuchdb://x/y: "),
    "db-folder-missing": ({"--db": "sqlite:///{tmp}/no/such/dir/s.db"}, r"--db .*folder not found"),
    "db-is-folder": ({"--db": "sqlite:///{tmp}"}, r"--db .*is a folder"),
    "db-not-a-database": ({"--db": "sqlite:///{images}/not_a_db"}, r"--db .*not_a_db: cannot open the database"),
    # root may write anywhere except where the kernel refuses: /proc takes no new files
    "db-unwritable": ({"--db": "sqlite:////proc/turing_test.db"}, r"--db .*(not writable|cannot open the database)"),
    "readers-0": ({"--readers": 0}, r"--readers must be in 1\.\.1000, got 0"),
    "readers-too-many": ({"--readers": 1001}, r"--readers must be in 1\.\.1000, got 1001"),
    "seed-negative": ({"--seed": -1}, r"--seed must be in 0\.\."),
    "seed-overflow": ({"--seed": 2**63}, r"--seed must be in 0\.\."),
    "max-side-small": ({"--max-side": 8}, r"--max-side must be in 16\.\.8192"),
    "n-real-0": ({"--n-real": 0}, r"--n-real must be in 1\.\.3, got 0"),
    "n-real-too-many": ({"--n-real": 4}, r"--n-real must be in 1\.\.3, got 4"),
    "n-synthetic-too-many": ({"--n-synthetic": 99}, r"--n-synthetic must be in 1\.\.3, got 99"),
    "real-missing": ({"--real": "{tmp}/nope"}, r"--real: folder not found"),
    "synthetic-is-file": ({"--synthetic": "{images}/a_file"}, r"--synthetic: folder not found"),
    "real-no-images": ({"--real": "{images}/empty"}, r"--real: no images"),
    "store-is-file": ({"--store": "{images}/a_file"}, r"--store: not a folder"),
    "base-url": ({"--base-url": "ftp://host"}, r"--base-url must start with http"),
    "name-blank": ({"--name": "  "}, r"--name must not be empty"),
    # found only while re-encoding, after the database and store exist: both must be removed again
    "corrupt-image": ({"--real": "{images}/corrupt"}, r"broken\.png"),
}


@pytest.mark.parametrize("case", list(CREATE_CASES))
def test_create_study_bad_input_one_line_exit_2_nothing_left(case, images, tmp_path, capsys):
    over, pattern = CREATE_CASES[case]
    over = {k: (v.format(tmp=tmp_path, images=images) if isinstance(v, str) else v) for k, v in over.items()}
    rc, err = _run(_create(images, tmp_path, **over), capsys)
    assert rc == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(PREFIX), err
    assert re.search(pattern, err), err
    assert sorted(os.listdir(tmp_path)) == [], f"left behind: {os.listdir(tmp_path)}"
    assert (images / "not_a_db").read_bytes() == b"this is not an SQLite database" * 100


def test_create_study_failure_keeps_an_existing_database_and_store(images, tmp_path, capsys):
    """Clean-up removes only what the failed command made, never a study database already in use."""
    argv = _create(images, tmp_path)
    assert top_cli.main(argv) == 0
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "store").iterdir())
    rc, err = _run(_create(images, tmp_path, **{"--real": images / "corrupt"}), capsys)
    assert rc == 2 and "broken.png" in err and err.count("\n") == 1, err
    assert (tmp_path / "s.db").is_file()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == before
    from retina_fast.turing import db
    engine = db.make_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.connect() as conn:
        assert len(conn.execute(db.studies.select()).all()) == 1
    engine.dispose()


def _serve(tmp, *extra, db=None):
    return ["turing", "serve", "--db", db or f"sqlite:///{tmp / 's.db'}", "--store", str(tmp / "store"),
            "--admin-token-file", str(tmp.parent / "token_file"), *extra]


SERVE_CASES = {
    "port-negative": (["--port", "-1"], r"--port must be in 1\.\.65535, got -1"),
    "port-0": (["--port", "0"], r"--port must be in 1\.\.65535, got 0"),
    "port-too-big": (["--port", "70000"], r"--port must be in 1\.\.65535, got 70000"),
    "data-root-missing": (["--data-root", "{tmp}/nope"], r"--data-root: folder not found"),
    "store-is-file": (["--store", "{images}/a_file"], r"--store: not a folder"),
    "db-garbage": (["--db", "garbage"], r"--db: not an SQLAlchemy URL"),
    "db-folder-missing": (["--db", "sqlite:///{tmp}/no/dir/s.db"], r"--db .*folder not found"),
    "db-unwritable": (["--db", "sqlite:////proc/turing_test.db"], r"--db .*(not writable|cannot open the database)"),
    "db-not-a-database": (["--db", "sqlite:///{images}/not_a_db"], r"--db .*not_a_db: cannot open the database"),
}


@pytest.mark.parametrize("case", list(SERVE_CASES))
def test_serve_bad_input_one_line_exit_2_nothing_left(case, images, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "token_file").write_text(GOOD_TOKEN + "\n")
    extra, pattern = SERVE_CASES[case]
    rc, err = _run(_serve(work, *[x.format(tmp=work, images=images) for x in extra]), capsys)
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(PREFIX), err
    assert re.search(pattern, err), err
    assert os.listdir(work) == [], f"left behind: {os.listdir(work)}"


@pytest.mark.parametrize("how,pattern", [
    ("file-missing", r"--admin-token-file .*nope: No such file"),
    ("file-short", r"--admin-token-file .*short_token: the admin token must have at least 8"),
    ("flag-short", r"--admin-token: the admin token must have at least 8"),
    ("env-short", r"\$RETINA_FAST_ADMIN_TOKEN: the admin token must have at least 8"),
])
def test_serve_bad_admin_token_is_one_line(how, pattern, images, tmp_path, capsys, monkeypatch):
    argv = ["turing", "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--store", str(tmp_path / "store")]
    argv += {"file-missing": ["--admin-token-file", str(tmp_path / "nope")],
             "file-short": ["--admin-token-file", str(images / "short_token")],
             "flag-short": ["--admin-token", "short"], "env-short": []}[how]
    if how == "env-short":
        monkeypatch.setenv(turing_cli.TOKEN_ENV, "short")
    rc, err = _run(argv, capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith(PREFIX), err
    assert re.search(pattern, err), err
    assert os.listdir(tmp_path) == []


def test_serve_token_file_and_flag_exclude_each_other(tmp_path, capsys):
    rc, err = _run(["turing", "serve", "--admin-token", GOOD_TOKEN, "--admin-token-file", str(tmp_path / "t")],
                   capsys)
    assert rc == 2 and "not allowed with argument" in err


@pytest.mark.parametrize("case", ["missing", "empty", "no-columns", "out-is-file"])
def test_analyze_bad_input_one_line_exit_2_nothing_left(case, export, images, tmp_path, capsys):
    path = {"missing": tmp_path / "nope.csv", "empty": tmp_path / "empty.csv",
            "no-columns": images / "a_file", "out-is-file": export}[case]
    if case == "empty":
        path.write_text("")
    out = images / "a_file" if case == "out-is-file" else tmp_path / "analysis"
    rc, err = _run(["turing", "analyze", str(path), "--out", str(out)], capsys)
    assert rc == 2, err
    assert err.count("\n") == 1, err
    assert os.path.basename(str(out if case == "out-is-file" else path)) in err, err
    assert not (tmp_path / "analysis").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["empty.csv"] if case == "empty" else [])


@pytest.mark.parametrize("flag, value", [("--top-k", "0"), ("--years-threshold", "nan"),
                                         ("--years-threshold", "-1"), ("--years-threshold", "inf")])
def test_analyze_bad_numbers_are_refused_before_reading(flag, value, export, tmp_path, capsys):
    rc, err = _run(["turing", "analyze", str(export), "--out", str(tmp_path / "analysis"), flag, value], capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(errors) == 1 and f"argument {flag}" in errors[0], err
    assert not (tmp_path / "analysis").exists()


def test_cli_error_in_a_real_process(tmp_path):
    """The entry point's view (one process start costs ~10 s, so one case): `serve --port 70000`
    printed a traceback and left a database behind."""
    env = {k: v for k, v in os.environ.items() if k != "RETINA_FAST_TRACEBACK"}
    env[turing_cli.TOKEN_ENV] = GOOD_TOKEN
    r = subprocess.run([sys.executable, "-m", "retina_fast.cli", "turing", "serve", "--port", "70000",
                        "--db", f"sqlite:///{tmp_path / 's.db'}"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"{PREFIX}--port must be in 1..65535, got 70000\n"
    assert os.listdir(tmp_path) == []
