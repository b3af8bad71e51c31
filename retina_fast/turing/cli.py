"""`retina-fast turing ...`: serve the reading study, create a study, analyse its export.

`register(subparsers)` adds the `turing` group with its sub-commands `serve`, `create-study` and
`analyze`; each command imports what it runs only when it runs, so the parser stays light.

Every argument is checked before anything is created: a bad one stops the command with one line
(ValueError/OSError, reported by `retina_fast.cli`), and a study creation that fails afterwards
removes the database file and store folder it made.
"""
import os
import secrets
import sys
from pathlib import Path

from retina_fast.cli_types import positive_float, positive_int

from .constants import GROUPINGS

TOKEN_ENV = "RETINA_FAST_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 8
MAX_SEED = 2**63 - 1  # the database stores the seed as a signed 64-bit integer


def register(subparsers):
    """Add the `turing` command group to the top-level parser's `subparsers`; return its subparsers."""
    p = subparsers.add_parser("turing", help="visual Turing test: reading-study server and analysis")
    sub = p.add_subparsers(dest="turing_command", required=True)
    add_serve_parser(sub)
    add_create_study_parser(sub)
    add_analyze_parser(sub)
    return sub


def add_serve_parser(turing_subparsers):
    """Add ``serve`` to the ``retina-fast turing`` sub-parsers; return its parser."""
    s = turing_subparsers.add_parser("serve", help="run the reading-study web server (admin API, reader pages)",
                                     description="Serve the Turing-test web app with uvicorn.")
    s.add_argument("--db", default="sqlite:///turing.db", help="SQLAlchemy URL (default: %(default)s)")
    tok = s.add_mutually_exclusive_group()
    tok.add_argument("--admin-token-file", default=None, metavar="FILE",
                     help="file holding the admin secret (surrounding whitespace ignored); preferred, "
                          f"with ${TOKEN_ENV}, because neither shows in the process list "
                          f"(default: ${TOKEN_ENV}; if unset too, a random one is printed)")
    tok.add_argument("--admin-token", default=None,
                     help=f"admin secret on the command line: visible to every user in the process list, "
                          f"so prefer ${TOKEN_ENV} or --admin-token-file")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--store", default="turing_images",
                   help="folder for re-encoded images of studies created via the API (default: %(default)s)")
    s.add_argument("--data-root", default=None,
                   help="if given, study folders sent to the API must lie inside this folder")
    s.add_argument("--access-log", action="store_true", help="log every request (URLs hold reader tokens)")
    s.set_defaults(func=_serve)
    return s


def add_create_study_parser(turing_subparsers):
    """Add ``create-study`` to the ``retina-fast turing`` sub-parsers; return its parser."""
    c = turing_subparsers.add_parser(
        "create-study", help="create a study from two image folders and print reader links",
        description="Re-encode the images into --store, register the study in --db and "
                    "print one invitation link per reader.")
    c.add_argument("--db", default="sqlite:///turing.db", help="SQLAlchemy URL (default: %(default)s)")
    c.add_argument("--real", required=True, help="folder of real images")
    c.add_argument("--synthetic", required=True,
                   help="folder of synthetic images, or a generator checkpoint (.pt/.pkl) to sample once into "
                        "--synthetic-cache")
    c.add_argument("--seeds", default=None, help="with a checkpoint: seeds to generate, e.g. '0-99' (default 0-99)")
    c.add_argument("--trunc", type=float, default=1.0, help="with a checkpoint: truncation psi (default 1 = none)")
    c.add_argument("--class", dest="class_idx", type=int, default=None,
                   help="with a checkpoint: class of a conditional generator")
    c.add_argument("--synthetic-cache", default="turing_synthetic",
                   help="with a checkpoint: folder of the generated images, reused by a rerun (default: %(default)s)")
    c.add_argument("--readers", type=int, required=True, help="number of invitation links")
    c.add_argument("--seed", type=int, required=True, help="seed of the subset choice and display order")
    c.add_argument("--name", default="turing study", help="study name (default: %(default)s)")
    c.add_argument("--n-real", type=int, default=None, help="use a seeded subset of N real images")
    c.add_argument("--n-synthetic", type=int, default=None, help="use a seeded subset of N synthetic images")
    c.add_argument("--max-side", type=int, default=1024, help="side of the stored square images (default: 1024)")
    c.add_argument("--store", default="turing_images", help="folder for re-encoded images (default: %(default)s)")
    c.add_argument("--base-url", default="http://127.0.0.1:8000",
                   help="server address the links start with (default: %(default)s)")
    c.set_defaults(func=_create_study)
    return c


def add_analyze_parser(turing_subparsers):
    """Add ``analyze`` to the ``retina-fast turing`` sub-parsers (its ``func`` runs the analysis).

    Parameters
    ----------
    turing_subparsers : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned for ``retina-fast turing``.

    Returns
    -------
    argparse.ArgumentParser
        The ``analyze`` parser.
    """
    p = turing_subparsers.add_parser(
        "analyze", help="analyse a Turing-test export: per-reader metrics, GEE vs residents, Figure 4",
        description="Per-reader accuracy / sensitivity / specificity, group means ± SD (paper Table 2), "
                    "logistic GEE vs residents with exchangeable and independence working correlations "
                    "(paper Table 3), a Figure-4-style bar chart and the top synthetic images.")
    p.add_argument("export", help="export file from the app (CSV or JSON, one row per answer)")
    p.add_argument("--out", default="turing_analysis", help="output folder (default: %(default)s)")
    p.add_argument("--years-threshold", type=positive_float, default=5,
                   help="years in practice splitting the experience groups (default: %(default)s)")
    p.add_argument("--groupings", nargs="+", choices=GROUPINGS, default=list(GROUPINGS),
                   help="reader groupings to analyse (default: both)")
    p.add_argument("--top-k", type=positive_int, default=3, help="length of the top-image lists (default: 3)")
    p.add_argument("--cov-type", choices=("robust", "bias_reduced", "naive"), default="robust",
                   help="covariance of the GEE estimates (default: robust sandwich)")
    p.set_defaults(func=_analyze)
    return p


def admin_token(args):
    """The admin secret from --admin-token-file, --admin-token or $RETINA_FAST_ADMIN_TOKEN, or None.

    Raises
    ------
    OSError
        The token file cannot be read.
    ValueError
        The token given is shorter than 8 characters.
    """
    if args.admin_token_file is not None:
        where = f"--admin-token-file {args.admin_token_file}"
        try:
            token = Path(args.admin_token_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise ValueError(f"{where}: not a text file") from None
        except OSError as e:
            raise OSError(f"{where}: {e.strerror or e}") from None
    elif args.admin_token is not None:
        where, token = "--admin-token", args.admin_token
    else:
        where, token = f"${TOKEN_ENV}", os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: the admin token must have at least {MIN_TOKEN_CHARS} characters")
    return token


def _int_in(value, flag, lo, hi):
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{flag} must be in {lo}..{hi}, got {value}")


def _folder(path, flag):
    if not Path(path).is_dir():
        raise ValueError(f"{flag}: folder not found: {path}")
    return Path(path)


def _new_folder(path, flag):
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag}: not a folder: {path}")


def _serve(args):
    import uvicorn

    from . import db
    from .app import create_app
    _int_in(args.port, "--port", 1, 65535)
    if args.data_root is not None:
        _folder(args.data_root, "--data-root")
    _new_folder(args.store, "--store")
    token = admin_token(args)
    db.make_engine(args.db, "--db").dispose()  # the last check (can the database be opened?) creates it
    if args.admin_token is not None:
        print(f"warning: --admin-token shows in the process list; prefer ${TOKEN_ENV} or --admin-token-file",
              file=sys.stderr)
    if token is None:
        token = secrets.token_urlsafe(24)
        print(f"admin token (set {TOKEN_ENV} to choose one): {token}", file=sys.stderr)
    app = create_app(args.db, admin_token=token, image_store=args.store, data_root=args.data_root)
    print(f"admin page: http://{args.host}:{args.port}/admin", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")
    return 0


def _check_create_study(args):
    """Every create-study argument that can be checked before a database or folder is made."""
    from . import db
    from .study import list_images
    if not args.name.strip():
        raise ValueError("--name must not be empty")
    _int_in(args.readers, "--readers", 1, db.MAX_READERS_PER_STUDY)
    _int_in(args.seed, "--seed", 0, MAX_SEED)
    _int_in(args.max_side, "--max-side", 16, 8192)
    source = _synthetic_source(args)
    for flag, path, n in (("--real", args.real, args.n_real), ("--synthetic", args.synthetic, args.n_synthetic)):
        if flag == "--synthetic" and source is not None:
            _int_in(n, "--n-synthetic", 1, len(source.seeds))  # at most the images the seeds give
            continue
        files = list_images(_folder(path, flag).resolve(), flag)
        _int_in(n, f"--n-{flag[2:]}", 1, len(files))  # at most the images the folder holds
    _new_folder(args.store, "--store")
    if not args.base_url.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https://, got {args.base_url!r}")
    db.check_db_url(args.db, "--db")


def _synthetic_source(args):
    """The generator checkpoint --synthetic names, as a `SyntheticSource` (None for a folder)."""
    from retina_fast.synthetic import GENERATOR_SUFFIXES, SyntheticSource

    if not str(args.synthetic).lower().endswith(GENERATOR_SUFFIXES):
        return None
    return SyntheticSource.from_arg(args.synthetic, seeds=args.seeds, class_idx=args.class_idx,
                                    truncation_psi=args.trunc, name="--synthetic")


def _missing_folders(path):
    """The folders `path` and its missing ancestors, innermost first (what mkdir -p would create)."""
    made = []
    p = Path(path).absolute()
    while not p.exists():
        made.append(p)
        p = p.parent
    return made


def _create_study(args):
    from . import db
    from .study import create_study
    _check_create_study(args)
    synthetic, source = args.synthetic, _synthetic_source(args)
    if source is not None:   # generated (or found from an earlier run) before anything else is made
        synthetic = os.path.dirname(source.resolve(args.synthetic_cache, progress=True)[0])
        print(f"synthetic: {source.describe()} -> {synthetic}")
    db_file = db.sqlite_file(args.db)
    new_db = db_file is not None and not db_file.exists()
    new_store = _missing_folders(args.store)
    engine = None
    try:
        engine = db.make_engine(args.db, "--db")
        sid, n = create_study(engine, args.store, args.name, args.real, synthetic, args.seed,
                              args.n_real, args.n_synthetic, args.max_side, progress=True)
        with engine.begin() as conn:
            made = db.add_readers(conn, sid, [f"reader-{i + 1:03d}" for i in range(args.readers)])
    except BaseException:
        # A failed creation leaves nothing it made: no schema-only database, no empty store.
        if engine is not None:
            engine.dispose()
        if new_db:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(db_file) + suffix).unlink(missing_ok=True)
        for folder in new_store:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: something else wrote there meanwhile
        raise
    base = args.base_url.rstrip("/")
    print(f"study {sid}: {n} images")
    for m in made:
        print(f"{m['name']}\t{base}/r/{m['token']}")
    return 0


def _analyze(args):
    # A bad export raises ValueError: `retina_fast.cli` reports it in one line, exit status 2.
    from .analyze import analyze
    result = analyze(args.export, args.out, groupings=args.groupings, years_threshold=args.years_threshold,
                     top_k=args.top_k, cov_type=args.cov_type)
    print(result.markdown)
    print(f"wrote {', '.join(os.path.basename(f) for f in result.files)} to {args.out}")
    return 0
