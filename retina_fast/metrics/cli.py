"""`retina-fast fid` and `retina-fast metrics`: FID (and KID, precision/recall, density/coverage)
between a real image set and generated images (a folder, or a checkpoint's generator)."""
import os

from retina_fast.cli_types import finite_float, int_at_least, nonnegative_int, positive_int
from retina_fast.device import resolve_device


def _feature_stats(args, keep_features=False):
    """(real, fake, description of the fake set) from one feature pass over each set."""
    from .fid import dataset_stats, generator_stats
    from .inception import load_inception

    if (args.fake is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --fake DIR or --checkpoint PT")
    # missing paths are named before the Inception network is loaded (seconds) or a cache is written
    for flag, path in (("--real", args.real), ("--fake", args.fake), ("--checkpoint", args.checkpoint),
                       ("--inception", args.inception)):
        if path is not None and not os.path.exists(path):
            raise ValueError(f"{flag} {path!r}: no such file or folder")
    device = resolve_device(args.device, name="--device")
    net = load_inception(args.inception, resize_mode=args.resize_mode, device=device)
    common = dict(batch_size=args.batch, device=device, progress=True, keep_features=keep_features)
    real = dataset_stats(args.real, net, max_items=args.max_items, cache_dir=args.cache_dir,
                         num_workers=args.workers, **common)
    if args.fake is not None:
        fake = dataset_stats(args.fake, net, max_items=args.max_items, cache_dir=args.cache_dir,
                             num_workers=args.workers, **common)
        what = args.fake
    else:
        from retina_fast.synthetic import SyntheticSource

        source = SyntheticSource.from_arg(args.checkpoint, truncation_psi=args.trunc, name="--checkpoint")
        if not source.is_generator:
            raise ValueError(f"--checkpoint {args.checkpoint!r} is a {source.kind} of images: give it as --fake")
        G = source.load_generator(device)
        num = args.num if args.num is not None else real.n
        labels = None
        if getattr(G, "c_dim", 0):
            # A conditional generator draws its classes in the real set's proportions.
            from ..data.dataset import list_images
            labels = [lab for _, lab in list_images(args.real) if lab is not None]
        fake = generator_stats(G, net, num_images=num, truncation_psi=source.truncation_psi, seed=args.seed,
                               noise_mode=args.noise_mode, class_labels=labels, **common)
        what = f"{args.checkpoint} ({num} images, psi {args.trunc})"
    return real, fake, what


def _fid(args):
    from .fid import fid

    real, fake, what = _feature_stats(args)
    value = fid(real, fake)
    print(f"real:  {args.real} ({real.n} images)\nfake:  {what} ({fake.n} images)\n"
          f"resize: 299 x 299 {args.resize_mode}\nFID {value:.4f}")
    return 0


def _metrics(args):
    import csv
    import io

    from ..fileio import write_text_atomic
    from .evaluate import evaluate_metrics, needs_features, parse_metrics

    metrics = parse_metrics(args.metrics, name="--metrics")
    if args.out is not None:
        folder = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(folder):
            raise ValueError(f"--out {args.out!r}: folder {folder!r} does not exist")
    real, fake, what = _feature_stats(args, keep_features=needs_features(metrics))
    values = evaluate_metrics(real, fake, metrics, k=args.k, kid_subsets=args.kid_subsets,
                              kid_subset_size=args.kid_subset_size, seed=args.seed,
                              device=resolve_device(args.device, name="--device"))
    print(f"real:  {args.real} ({real.n} images)\nfake:  {what} ({fake.n} images)\n"
          f"features: {args.inception}, resize 299 x 299 {args.resize_mode}\n")
    print(f"{'metric':<10s} value")
    for name, v in values.items():
        print(f"{name:<10s} {v:.6g}")
    if args.out is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["real", "fake", "real_images", "fake_images", "inception", "resize_mode", *values])
        w.writerow([args.real, what, real.n, fake.n, args.inception, args.resize_mode,
                    *(repr(float(v)) for v in values.values())])
        write_text_atomic(args.out, buf.getvalue())
        print(f"\nwrote {args.out}")
    return 0


def _add_feature_args(p):
    from .inception import RESIZE_MODES

    p.add_argument("--real", required=True, help="real dataset: folder, .zip, or folder of images")
    p.add_argument("--fake", default=None, help="folder of generated images")
    p.add_argument("--checkpoint", default=None, help="snapshot .pt whose G_ema generates the fake set")
    p.add_argument("--num", type=positive_int, default=None,
                   help="images to generate with --checkpoint (default: as many as the real set)")
    p.add_argument("--inception", required=True,
                   help="pytorch-fid state_dict (pt_inception-2015-12-05-6726825d.pth) or TorchScript .pt")
    p.add_argument("--max-items", type=positive_int, default=None, help="use at most this many images of each folder")
    p.add_argument("--batch", type=positive_int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--cache-dir", default=None, help="folder for cached dataset statistics")
    p.add_argument("--workers", type=nonnegative_int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--resize-mode", default="bilinear", choices=RESIZE_MODES,
                   help="resize to 299 x 299: bilinear (pytorch-fid, default), bilinear-tf1, bicubic-pil "
                        "(clean-fid), none")
    p.add_argument("--trunc", type=finite_float, default=1.0, help="truncation psi with --checkpoint (default 1)")
    p.add_argument("--noise-mode", default="random", choices=["random", "const", "none"],
                   help="generator noise with --checkpoint (default random, as StyleGAN2-ADA's metrics)")


def register(subparsers):
    """Add the `fid` and `metrics` sub-commands to the top-level parser's `subparsers`."""
    p = subparsers.add_parser(
        "fid", help="Frechet Inception Distance of generated images (folder or checkpoint) to a dataset",
        description="FID with the inception-2015-12-05 network loaded from a local file (never "
                    "downloaded). Real-set statistics are cached in --cache-dir.")
    _add_feature_args(p)
    p.add_argument("--seed", type=nonnegative_int, default=0, help="latent seed with --checkpoint (default 0)")
    p.set_defaults(func=_fid)

    p = subparsers.add_parser(
        "metrics", help="FID, KID, precision/recall, density/coverage of generated images to a dataset",
        description="FID, KID (kid50k_full's 100 subsets of 1000), precision/recall (pr50k3_full's k=3) "
                    "and density/coverage (Naeem et al. 2020), all from one pass of the Inception "
                    "network (a local file, never downloaded) over each set; the real set's statistics "
                    "and features are cached in --cache-dir. Prints a table; --out writes it as CSV.")
    _add_feature_args(p)
    p.add_argument("--metrics", default="fid,kid,pr",
                   help="comma-separated: fid, kid, pr (precision, recall), dc (density, coverage); "
                        "default fid,kid,pr")
    p.add_argument("--out", default=None, help="CSV file for the values (one row)")
    p.add_argument("--k", type=positive_int, default=3, help="nearest neighbours for pr and dc (default 3)")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="KID subsets (default 100)")
    p.add_argument("--kid-subset-size", type=int_at_least(2), default=1000,
                   help="largest KID subset (default 1000)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="latent seed with --checkpoint, and seed of KID's subsets (default 0)")
    p.set_defaults(func=_metrics)
