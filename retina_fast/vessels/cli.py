"""`retina-fast` sub-commands of the vessels stage: measure, compare, train-seg."""
import os
import sys

# (CSV column, table name, image-size-relative?) for `compare`, in table order
COMPARED = (("vessel_pixels", "vessel amount (px)", True),
            ("skeleton_length", "skeleton length (px)", False),
            ("snr", "zone-B SNR", False),
            ("snr_db", "zone-B SNR (dB)", False))


def register(subparsers):
    """Add this stage's sub-commands to the top-level parser's `subparsers`."""
    p = subparsers.add_parser("vessels", help="vessel metrics: measure a folder, compare real vs synthetic")
    sub = p.add_subparsers(dest="vessels_command", required=True)

    m = sub.add_parser("measure", help="segment vessels and measure amount and zone-B SNR of every image",
                       description="Write one CSV row per image (vessel pixels, skeleton length, zone-B SNR).")
    m.add_argument("dir", help="StyleGAN2-ADA dataset (folder with dataset.json, or .zip) or a folder of PNG/JPEG")
    m.add_argument("--out", default="vessel_metrics.csv", help="CSV to write (default: %(default)s)")
    m.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    m.add_argument("--zone", choices=("radii", "diameters"), default="radii",
                   help="zone B: 2-3 disc radii from the disc centre (standard, default) or the paper's "
                        "literal 2-3 disc diameters")
    m.add_argument("--method", choices=("hessian", "fpn"), default="hessian", help="segmentation method")
    m.add_argument("--checkpoint", default=None, help="FPN checkpoint (--method fpn)")
    m.add_argument("--limit", type=int, default=None, help="measure only the first N images")
    m.set_defaults(func=_measure)

    c = sub.add_parser("compare", help="real vs synthetic: t-tests, Cohen's d, Markdown table, plots",
                       description="Compare two metrics CSVs written by `vessels measure`.")
    c.add_argument("real_csv")
    c.add_argument("synth_csv")
    c.add_argument("--out", default="vessel_comparison", help="output folder (default: %(default)s)")
    c.add_argument("--image-size", type=float, default=1024 * 1024,
                   help="pixels per image, for the difference as %% of image size (default: 1024 x 1024)")
    c.set_defaults(func=_compare)

    t = sub.add_parser("train-seg", help="train the FPN vessel segmentation network",
                       description="Train the FPN vessel segmentation network (retina_fast.vessels.fpn).")
    try:
        from . import fpn  # imported here, not at module load: only the parser needs it
        _ = (fpn.add_arguments, fpn.main)
    except (ImportError, AttributeError) as e:
        t.set_defaults(func=_train_seg_unavailable, why=f"{type(e).__name__}: {e}")
    else:
        fpn.add_arguments(t)
        t.set_defaults(func=fpn.main)


def _measure(args):
    from .batch import measure_folder
    rows = measure_folder(args.dir, args.out, workers=args.workers, method=args.method,
                          checkpoint=args.checkpoint, limit=args.limit, zone=args.zone)
    bad = sum(1 for r in rows if r["reason"])
    print(f"measured {len(rows)} images ({bad} with a reason, see the 'reason' column) -> {args.out}")
    return 0


def _compare(args):
    from retina_fast.data.dataset import write_text_atomic
    from retina_fast.report.plots import box_plot, histogram_plot

    from .batch import read_metrics_csv, write_rows_csv
    from .compare import compare, comparison_table

    real, synth = read_metrics_csv(args.real_csv), read_metrics_csv(args.synth_csv)
    os.makedirs(args.out, exist_ok=True)
    results, plots = [], []
    for col, title, rel in COMPARED:
        if col not in real or col not in synth:
            continue
        try:
            results.append(compare(real[col], synth[col], name=title, image_size=args.image_size if rel else None))
        except ValueError as e:
            print(f"skipped {title}: {e}", file=sys.stderr)
            continue
        groups = {"real": real[col], "synthetic": synth[col]}
        plots.append(histogram_plot(groups, os.path.join(args.out, f"hist_{col}.png"), title=title, xlabel=title))
        plots.append(box_plot(groups, os.path.join(args.out, f"box_{col}.png"), title=title, ylabel=title))
    if not results:
        print("nothing to compare: no metric has 2 finite values in both CSVs", file=sys.stderr)
        return 1
    rows = [r.as_dict() for r in results]
    write_rows_csv(os.path.join(args.out, "comparison.csv"), rows, columns=tuple(rows[0]))
    notes = ["", ("Unpaired t-tests (Student: equal variances; Welch: unequal). Difference = real - synthetic, "
                  "with its 95 % CI (Welch). Cohen's d with the pooled SD; its 95 % CI by the normal "
                  "approximation."),
             "SNR is an amplitude ratio (mean vessel intensity / background SD, zone B); dB = 20 log10."]
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


def _train_seg_unavailable(args):
    print(f"train-seg is unavailable: retina_fast.vessels.fpn could not be loaded ({args.why})", file=sys.stderr)
    return 2
