"""`retina-fast turing ...`: serve the reading study, create a study from the command line.

`register(subparsers)` adds the `turing` group; the analysis module, when present, adds its own
sub-command through `retina_fast.turing.analyze.add_subcommand(turing_subparsers)`.
"""
import os
import secrets
import sys

TOKEN_ENV = "RETINA_FAST_ADMIN_TOKEN"


def register(subparsers):
    """Add the `turing` command group to the top-level parser's `subparsers`; return its subparsers."""
    p = subparsers.add_parser("turing", help="visual Turing test: reading-study server and analysis")
    sub = p.add_subparsers(dest="turing_command", required=True)

    s = sub.add_parser("serve", help="run the reading-study web server (admin API, reader pages)",
                       description="Serve the Turing-test web app with uvicorn.")
    s.add_argument("--db", default="sqlite:///turing.db", help="SQLAlchemy URL (default: %(default)s)")
    s.add_argument("--admin-token", default=None,
                   help=f"admin secret (default: ${TOKEN_ENV}; if unset, a random one is printed)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--store", default="turing_images",
                   help="folder for re-encoded images of studies created via the API (default: %(default)s)")
    s.add_argument("--data-root", default=None,
                   help="if given, study folders sent to the API must lie inside this folder")
    s.add_argument("--access-log", action="store_true", help="log every request (URLs hold reader tokens)")
    s.set_defaults(func=_serve)

    c = sub.add_parser("create-study", help="create a study from two image folders and print reader links",
                       description="Re-encode the images into --store, register the study in --db and "
                                   "print one invitation link per reader.")
    c.add_argument("--db", default="sqlite:///turing.db", help="SQLAlchemy URL (default: %(default)s)")
    c.add_argument("--real", required=True, help="folder of real images")
    c.add_argument("--synthetic", required=True, help="folder of synthetic images")
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

    try:
        from . import analyze
        add_analyze = analyze.add_subcommand
    except (ImportError, AttributeError):
        add_analyze = None  # analysis stage absent: `serve` and `create-study` still work
    if add_analyze is not None:
        add_analyze(sub)  # outside the try: a bug in it must surface, not hide the sub-command
    return sub


def _serve(args):
    import uvicorn
    from .app import create_app
    token = args.admin_token or os.environ.get(TOKEN_ENV)
    if not token:
        token = secrets.token_urlsafe(24)
        print(f"admin token (set {TOKEN_ENV} to choose one): {token}", file=sys.stderr)
    app = create_app(args.db, admin_token=token, image_store=args.store, data_root=args.data_root)
    print(f"admin page: http://{args.host}:{args.port}/admin", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")
    return 0


def _create_study(args):
    from . import db
    from .study import create_study
    if args.readers < 1:
        raise SystemExit("--readers must be >= 1")
    engine = db.make_engine(args.db)
    try:
        sid, n = create_study(engine, args.store, args.name, args.real, args.synthetic, args.seed,
                              args.n_real, args.n_synthetic, args.max_side, progress=True)
    except ValueError as e:
        raise SystemExit(f"create-study: {e}") from None
    with engine.begin() as conn:
        made = db.add_readers(conn, sid, [f"reader-{i + 1:03d}" for i in range(args.readers)])
    base = args.base_url.rstrip("/")
    print(f"study {sid}: {n} images")
    for m in made:
        print(f"{m['name']}\t{base}/r/{m['token']}")
    return 0
