"""`retina-fast audit ...`: the synthetic-data audit's sub-commands (privacy, realism)."""
import os

from retina_fast.cli_types import positive_int


def register(subparsers):
    audit = subparsers.add_parser("audit", help="audit a synthetic image set against its training set")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    _register_privacy(sub)
    _register_realism(sub)


# ------------------------------------------------------------------------------------ audit realism


def _register_realism(sub):
    from retina_fast.cli_types import finite_float, nonnegative_int

    p = sub.add_parser("realism", help="quality checks and vessel/disc/colour metrics, synthetic vs real")
    p.add_argument("--real", required=True, help="real (training) dataset folder, .zip or folder of images")
    p.add_argument("--synthetic", required=True,
                   help="folder of synthetic images, or a generator snapshot (.pt/.pkl) to sample")
    p.add_argument("--num", type=positive_int, default=100,
                   help="images to generate from a snapshot (seeds 0..N-1; default 100)")
    p.add_argument("--seeds", default=None, help="seeds to generate instead of --num, e.g. '0-99,200'")
    p.add_argument("--trunc", type=finite_float, default=1.0, help="truncation psi when generating (default 1 = none)")
    p.add_argument("--class", dest="class_idx", type=nonnegative_int, default=None,
                   help="class of a conditional generator")
    p.add_argument("--size", type=positive_int, default=None,
                   help="working size of the checks, px (default 512; smaller images are upscaled)")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="downscale larger images to this side first (default: the synthetic images' side)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes (default 1)")
    p.add_argument("--out", required=True, help="output folder (realism.md, comparison.csv, per-image CSVs, "
                                                "histograms)")
    p.set_defaults(func=realism_main)


def realism_main(args):
    """`retina-fast audit realism`: measure both sets, print and write the report."""
    from .realism import WORK_SIZE, realism_report

    from retina_fast.data.dataset import list_images, read_image
    from retina_fast.synthetic import SyntheticSource

    real = os.fspath(args.real)
    if not os.path.exists(real):
        raise ValueError(f"--real {real!r} does not exist")
    source = SyntheticSource.from_arg(args.synthetic, seeds=args.seeds, num=None if args.seeds else args.num,
                                      class_idx=args.class_idx, truncation_psi=args.trunc, name="--synthetic")
    if not list_images(real):  # checked before a snapshot's images are generated into --out
        raise ValueError(f"--real {real!r} holds no images")
    synthetic = source.path
    if source.is_generator:
        # pinned folder name: the report in --out is of these images, whatever the checkpoint's name
        paths = source.resolve(args.out, name="synthetic-images", progress=True)
        synthetic = os.path.dirname(paths[0])
    resolution = args.resolution
    if resolution is None:
        names = list_images(synthetic)
        if not names:
            raise ValueError(f"--synthetic {synthetic!r} holds no images")
        resolution = min(read_image(synthetic, names[0][0]).shape[:2])
    report = realism_report(real, synthetic, args.out, size=args.size or WORK_SIZE, resolution=resolution,
                            workers=args.workers, progress=True)
    print(report.table)
    print(f"wrote {report.files['markdown']}, {report.files['csv']} and {len(report.files['histograms'])} "
          f"histograms")
    return 0


# ------------------------------------------------------------------------------------ audit privacy


def _register_privacy(sub):
    from retina_fast.cli_types import float_range

    p = sub.add_parser("privacy", help="nearest training images of each synthetic image, suspected copies, "
                                       "authenticity (Alaa 2022) and C_T (Meehan 2020)")
    p.add_argument("--train", required=True,
                   help="training dataset (prepare's OUT/dataset; patient keys from OUT/manifest.csv)")
    p.add_argument("--synthetic", required=True,
                   help="folder of synthetic images, or a generator snapshot (.pt/.pkl) to sample")
    p.add_argument("--heldout", default=None,
                   help="real dataset of patients not trained on (same population), for C_T")
    p.add_argument("--out", required=True, help="output folder (summary.md/csv, neighbours.csv, "
                                                "suspected_copies.csv, closest_pairs_*.png); nothing is written "
                                                "elsewhere")
    p.add_argument("--inception", default="random",
                   help="local Inception-v3 weights for the feature space, 'random' (default: random weights, "
                        "said so) or 'none' (pixel space only)")
    p.add_argument("--k", type=positive_int, default=5, help="nearest training images listed per image (default 5)")
    p.add_argument("--quantile", type=float_range(0, 1, min_open=True, max_open=True), default=0.05,
                   help="suspected copy: distance ratio below this quantile of the training set's own "
                        "(leave-one-out; about the false-positive rate; default 0.05)")
    p.add_argument("--num", type=positive_int, default=None,
                   help="images to generate from a snapshot (seeds 0..N-1; default: as many as training "
                        "images, at most 10000)")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi when generating (default 1 = none)")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class of a conditional generator")
    p.add_argument("--no-mirror", action="store_true", help="do not match left-right mirrored images too")
    p.add_argument("--min-cell", type=positive_int, default=20,
                   help="C_T: smallest count of held-out and of synthetic images for a cell to count (default 20)")
    p.add_argument("--cells", type=positive_int, default=None, help="C_T: k-means cells (default from the sizes)")
    p.add_argument("--backend", choices=("auto", "faiss", "torch"), default="auto",
                   help="exact k-NN by faiss-cpu or chunked torch products (default: faiss when installed)")
    p.add_argument("--device", default="cpu", help="device of the Inception network / generator (default cpu)")
    p.set_defaults(func=privacy_main)


def privacy_main(args):
    from .privacy import audit_privacy

    from retina_fast.synthetic import SyntheticSource

    # the same source as every stage's --synthetic; a generator is sampled in memory by the audit
    # (up to 10000 images at full size are not worth caching as files)
    source = SyntheticSource.from_arg(args.synthetic, num=args.num, class_idx=args.class_idx,
                                      truncation_psi=args.trunc, name="--synthetic")
    inception = None if args.inception.lower() == "none" else args.inception
    if inception not in (None, "random") and not os.path.isfile(inception):
        raise ValueError(f"--inception {inception!r}: no such file")
    report = audit_privacy(args.train, source.path, args.out, heldout=args.heldout, extractor=inception,
                           k=args.k, quantile=args.quantile, num=args.num, truncation_psi=args.trunc,
                           class_idx=args.class_idx, mirror=not args.no_mirror, n_cells=args.cells,
                           min_cell=args.min_cell, backend=args.backend, device=args.device, progress=True)
    print(f"feature space: {report.extractor_label}\n")
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    print("\nwrote " + ", ".join(report.files.values()))
    return 0
