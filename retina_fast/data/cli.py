"""`retina-fast` sub-commands of the data stage."""
from retina_fast.cli_types import int_at_least, int_range, positive_int


def _prepare(args):
    from .prepare import prepare
    from .reasons import DESCRIPTIONS, REASONS

    salt = args.salt if args.salt_file is None else read_salt_file(args.salt_file)
    res = prepare(args.src, args.out, size=args.size, workers=args.workers, zip=args.zip, salt=salt,
                  png_compress_level=args.png_compress_level, labels=args.labels, resample=args.resample,
                  source_names=not args.no_source_names)
    total = res.accepted + sum(res.excluded.values())
    print(f"{total} source files: {res.accepted} accepted, {sum(res.excluded.values())} excluded"
          + (f" ({res.reused} done by an earlier run)" if res.reused else ""))
    for reason in REASONS:
        if res.excluded.get(reason):
            print(f"  {reason:22s} {res.excluded[reason]:7d}  {DESCRIPTIONS[reason]}")
    print(f"dataset:  {res.zip or res.dataset}\nmanifest: {res.manifest}")
    return 0


def read_salt_file(path):
    """The salt in the first line of the text file `path` (stripped); ValueError naming it when empty."""
    try:
        with open(path, encoding="utf-8") as f:
            salt = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--salt-file {path!r} cannot be read: {e}") from None
    if not salt:
        raise ValueError(f"--salt-file {path!r}: its first line is empty")
    return salt


def register(subparsers):
    """Add this stage's sub-commands to the top-level parser's `subparsers`."""
    from .prepare import MIN_SIZE

    p = subparsers.add_parser(
        "prepare", help="ingest DICOM/PNG/JPEG fundus photographs into an anonymised 1024 px dataset",
        description="Anonymise, quality-filter (reasons in retina_fast.data.REASONS), centre and "
                    "square-crop fundus photographs into a StyleGAN2-ADA dataset plus OUT/manifest.csv. "
                    "Rerunning into the same OUT resumes.")
    p.add_argument("src", help="folder of source files (searched recursively)")
    p.add_argument("out", help="output folder")
    p.add_argument("--size", type=int_at_least(MIN_SIZE), default=1024,
                   help=f"output side in pixels (default 1024; at least {MIN_SIZE})")
    p.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--zip", action="store_true", help="also write OUT/dataset.zip")
    salt = p.add_mutually_exclusive_group()
    salt.add_argument("--salt-file", default=None,
                      help="file whose first line is the secret salt of the pseudonymous patient keys "
                           "(default: generated, kept in OUT/salt)")
    salt.add_argument("--salt", default=None,
                      help="the salt itself (visible to other users in the process list: prefer --salt-file)")
    p.add_argument("--png-compress-level", type=int_range(0, 9), default=1, help="zlib level 0-9 (default 1, fast)")
    p.add_argument("--labels", default=None,
                   help="CSV with columns file (or source) and label (normal/erm) for dataset.json")
    p.add_argument("--resample", default="box", choices=["box", "lanczos", "bicubic"],
                   help="antialiased resize filter: box (area averaging, default, fast) or lanczos")
    p.add_argument("--no-source-names", action="store_true",
                   help="write a salted hash instead of each source's path to manifest.csv and the journal "
                        "(for file or folder names that carry patient names)")
    p.set_defaults(func=_prepare)
