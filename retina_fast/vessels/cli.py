"""`retina-fast` sub-commands of the vessels stage: measure, compare, train-seg."""
import os
import sys

from retina_fast.cli_types import int_at_least, nonnegative_int, positive_float, positive_int

# (CSV column, table name, image-size-relative?) for `compare`, in table order
COMPARED = (("vessel_pixels", "vessel amount (px)", True),
            ("skeleton_length", "skeleton length (px)", False),
            ("snr", "zone-B SNR", False),
            ("snr_db", "zone-B SNR (dB)", False),
            ("snr_signal", "zone-B SNR, signal / SD", False),
            ("snr_contrast", "zone-B CNR, |background - vessel| / SD", False))


def register(subparsers):
    """Add this stage's sub-commands to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("vessels", help="vessel metrics: measure a folder, compare real vs synthetic")
    sub = p.add_subparsers(dest="vessels_command", required=True)

    m = sub.add_parser("measure", help="segment vessels and measure amount and zone-B SNR of every image",
                       description="Write one CSV row per image (vessel pixels, skeleton length, zone-B SNR).")
    m.add_argument("dir", help="StyleGAN2-ADA dataset (folder with dataset.json, or .zip) or a folder of PNG/JPEG")
    m.add_argument("--out", default="vessel_metrics.csv", help="CSV to write (default: %(default)s)")
    m.add_argument("--workers", type=positive_int, default=2, help="processes (default: %(default)s)")
    m.add_argument("--zone", choices=("radii", "diameters"), default="radii",
                   help="zone B: 2-3 disc radii from the disc centre (standard, default) or the paper's "
                        "literal 2-3 disc diameters")
    m.add_argument("--snr-kind", choices=("signal", "contrast"), default="signal",
                   help="ratio in the snr/snr_db columns: the paper's literal mean vessel intensity / "
                        "background SD (default) or |background mean - vessel mean| / background SD; "
                        "snr_signal and snr_contrast always hold both")
    m.add_argument("--method", choices=("hessian", "fpn"), default="hessian", help="segmentation method")
    m.add_argument("--checkpoint", default=None, help="FPN checkpoint (--method fpn)")
    m.add_argument("--limit", type=positive_int, default=None, help="measure only the first N images")
    m.set_defaults(func=_measure)

    c = sub.add_parser("compare", help="real vs synthetic: t-tests, Cohen's d, Markdown table, plots",
                       description="Compare two metrics CSVs written by `vessels measure`.")
    c.add_argument("real_csv")
    c.add_argument("synth_csv")
    c.add_argument("--out", default="vessel_comparison", help="output folder (default: %(default)s)")
    c.add_argument("--image-size", type=positive_float, default=1024 * 1024,
                   help="pixels per image, for the difference as %% of image size (default: 1024 x 1024)")
    c.set_defaults(func=_compare)

    t = sub.add_parser("train-seg", help="train the FPN vessel segmentation network",
                       description="Train the FPN vessel segmentation network (retina_fast.vessels.fpn).")
    try:
        # imported here, not at module load (it imports torch and segmentation-models-pytorch)
        from .fpn import DEFAULT_PHANTOM_SIZE
    except ImportError as e:
        t.set_defaults(func=_train_seg_unavailable, why=f"{type(e).__name__}: {e}")
    else:
        _train_seg_arguments(t, DEFAULT_PHANTOM_SIZE)
        t.set_defaults(func=_train_seg)


def _measure(args):
    from .batch import measure_folder
    if args.method == "fpn" and args.checkpoint is None:
        raise ValueError("--method fpn needs --checkpoint (a checkpoint written by `vessels train-seg`)")
    if args.method != "fpn" and args.checkpoint is not None:
        raise ValueError("--checkpoint is only used with --method fpn")
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise ValueError(f"--checkpoint {args.checkpoint!r}: no such file")
    rows = measure_folder(args.dir, args.out, workers=args.workers, method=args.method,
                          checkpoint=args.checkpoint, limit=args.limit, zone=args.zone,
                          kind=args.snr_kind)
    bad = sum(1 for r in rows if r["reason"])
    print(f"measured {len(rows)} images ({bad} with a reason, see the 'reason' column) -> {args.out}")
    return 0


def _compare(args):
    from retina_fast.data.dataset import write_text_atomic
    from retina_fast.report.plots import box_plot, histogram_plot

    from .batch import read_metrics_csv, write_rows_csv
    from .compare import compare, comparison_table

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out!r} is a file, not a folder")
    real, synth = read_metrics_csv(args.real_csv), read_metrics_csv(args.synth_csv)
    results, compared = [], []
    kinds = [sorted(set(t.get("snr_kind", ["signal"]))) for t in (real, synth)]
    for col, title, rel in COMPARED:
        if col not in real or col not in synth:
            continue
        if col in ("snr", "snr_db") and kinds[0] != kinds[1]:
            # Two different ratios under one name: only the per-kind rows compare like with like.
            print(f"skipped {title}: measured as {kinds[0]} (real) and {kinds[1]} (synthetic); "
                  "see the snr_signal and snr_contrast rows", file=sys.stderr)
            continue
        try:
            results.append(compare(real[col], synth[col], name=title, image_size=args.image_size if rel else None))
        except ValueError as e:
            print(f"skipped {title}: {e}", file=sys.stderr)
            continue
        compared.append((col, title))
    if not results:  # checked before --out is created
        raise ValueError(f"nothing to compare: no metric has 2 finite values in both {args.real_csv!r} "
                         f"and {args.synth_csv!r}")
    os.makedirs(args.out, exist_ok=True)
    plots = []
    for col, title in compared:
        groups = {"real": real[col], "synthetic": synth[col]}
        plots.append(histogram_plot(groups, os.path.join(args.out, f"hist_{col}.png"), title=title, xlabel=title))
        plots.append(box_plot(groups, os.path.join(args.out, f"box_{col}.png"), title=title, ylabel=title))
    rows = [r.as_dict() for r in results]
    write_rows_csv(os.path.join(args.out, "comparison.csv"), rows, columns=tuple(rows[0]))
    notes = ["", ("Unpaired t-tests (Student: equal variances; Welch: unequal). Difference = real - synthetic, "
                  "with its 95 % CI (Welch). Cohen's d with the pooled SD; its 95 % CI by the normal "
                  "approximation."),
             ("SNR (`snr`, `snr_db`) is the ratio chosen at measurement (`--snr-kind`, the CSV's snr_kind): "
              "'signal' = mean vessel intensity / background SD (the paper's literal definition), 'contrast' = "
              "|background mean - vessel mean| / background SD; both are also compared on their own rows "
              "(snr_signal, snr_contrast). dB = 20 log10.")]
    for r in results:
        if r.name.startswith("vessel amount"):
            notes.append(f"Vessel amount: the mean difference is {r.difference_pct_of_image:.2f} % of the image "
                         f"size ({args.image_size:.0f} px) and {r.difference_pct_of_pooled:.1f} % of the mean "
                         f"of both groups.")
    md = (f"# Vessel metrics: real vs synthetic\n\nreal: `{args.real_csv}`  \nsynthetic: `{args.synth_csv}`\n\n"
          + comparison_table(results) + "\n".join(notes) + "\n")
    write_text_atomic(os.path.join(args.out, "comparison.md"), md)
    print(md)
    print(f"wrote {args.out}/comparison.md, comparison.csv and {len(plots)} plots")
    return 0


def _train_seg_arguments(parser, default_phantom_size):
    """Arguments of `retina-fast vessels train-seg`."""
    parser.add_argument("--data", default=None,
                        help="HRF/DRIVE-like folder (images/ + manual1/ or masks/ ...); default: phantoms")
    parser.add_argument("--phantoms", type=positive_int, default=64, help="number of training phantoms (no --data)")
    parser.add_argument("--phantom-size", type=int_at_least(64), nargs=2, default=list(default_phantom_size),
                        metavar=("H", "W"), help="training phantom size, px")
    parser.add_argument("--out", required=True, help="checkpoint path to write")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--crop", type=positive_int, default=256, help="crop side, px (multiple of 32)")
    parser.add_argument("--crops-per-image", type=positive_int, default=16, help="crops per image per epoch")
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--short-side", type=positive_int, default=None,
                        help="rescale images to this short side, px (default: phantom short side / as is)")
    parser.add_argument("--encoder", default="resnet18", help="smp encoder name (random init)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's); 1 is much faster on a busy machine")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    parser.add_argument("--eval-phantoms", type=nonnegative_int, default=3,
                        help="held-out phantoms to report pixel AUC on after training (0: none)")
    return parser


def _train_seg(args):
    """Run `retina-fast vessels train-seg` with parsed `args`; returns the exit status."""
    import numpy as np
    import torch

    from .fpn import evaluate_phantoms, train_seg

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    source = args.data if args.data is not None else args.phantoms
    result = train_seg(source, args.out, epochs=args.epochs, batch_size=args.batch_size, crop=args.crop,
                       lr=args.lr, device=args.device, seed=args.seed,
                       crops_per_image=args.crops_per_image, phantom_size=tuple(args.phantom_size),
                       short_side=args.short_side, encoder_name=args.encoder, max_steps=args.max_steps)
    losses = result["losses"]
    k = max(1, len(losses) // 10)
    print(f"trained {result['steps']} steps on {result['n_images']} images; loss "
          f"{np.mean(losses[:k]):.4f} (first {k}) -> {np.mean(losses[-k:]):.4f} (last {k}); "
          f"checkpoint {result['checkpoint']}")
    if args.eval_phantoms > 0:
        aucs = evaluate_phantoms(args.out, args.eval_phantoms, seed=args.seed,
                                 size=tuple(args.phantom_size), device=args.device)
        print(f"held-out phantom pixel AUC: {np.mean(aucs):.4f} "
              f"({', '.join(f'{a:.4f}' for a in aucs)})")
    return 0


def _train_seg_unavailable(args):
    print(f"train-seg is unavailable: retina_fast.vessels.fpn could not be loaded ({args.why})", file=sys.stderr)
    return 2
