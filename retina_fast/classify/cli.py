"""`retina-fast classify train|predict|label|study`: the classifier on the command line.

    retina-fast classify train   --data POOL --out DIR [--labels-csv CSV] [training options]
    retina-fast classify predict --checkpoint DIR/model/checkpoint.pt --images FOLDER --out scores.csv
    retina-fast classify label   --labelled POOL --unlabelled FOLDER --out DIR [--threshold youden]
    retina-fast classify study   --pool POOL --out DIR [--synthetic FOLDER_OR_CHECKPOINT] [--ratios 1:1 1:0.1]

POOL: a folder of images with labels.csv (name, patient_id, label), a `retina-fast data prepare`
output folder (manifest.csv + dataset/), or a dataset folder/zip with dataset.json labels.
"""
import argparse
import os
import sys

from retina_fast.cli_types import (
    finite_float,
    float_range,
    int_at_least,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["register"]

# Flags naming inputs that must exist, checked before anything is created (`_check_inputs`).
_INPUT_FLAGS = ("data", "pool", "labelled", "unlabelled", "images", "checkpoint", "labels_csv", "weights",
                "synthetic")


def _check_inputs(args):
    """ValueError naming the first input flag whose path does not exist."""
    for name in _INPUT_FLAGS:
        path = getattr(args, name, None)
        if path is not None and not os.path.exists(path):
            raise ValueError(f"--{name.replace('_', '-')} {path!r}: no such file or folder")


def _train_args(p, epochs=30):
    g = p.add_argument_group("training (paper defaults)")
    g.add_argument("--arch", default="resnet152",
                   choices=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"], help="default: %(default)s")
    g.add_argument("--weights", default=None, help="local state_dict file (e.g. ImageNet); default random init")
    g.add_argument("--size", type=int_at_least(32), default=512, help="input side in pixels (default: %(default)s)")
    g.add_argument("--batch", type=positive_int, default=10, help="minibatch (default: %(default)s)")
    g.add_argument("--epochs", type=positive_int, default=epochs, help="epochs (default: %(default)s)")
    g.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate (default: %(default)s)")
    g.add_argument("--no-augment", action="store_true", help="no flips/shift/zoom/rotation")
    g.add_argument("--patience", type=positive_int, default=None, help="stop after N epochs without a better valid loss")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="training seed (default: %(default)s)")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    g.add_argument("--backend", default="auto", choices=["auto", "torch", "dali"],
                   help="image loader (default: auto, DALI on CUDA when installed, else torch)")
    g.add_argument("--workers", type=nonnegative_int, default=None,
                   help="loader workers (default: 0 on the CPU, most cores on CUDA)")
    g.add_argument("--amp", default=None, choices=["on", "off"], help="mixed precision (default: on for CUDA)")
    g.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                   help="torch.compile the training step; MODE 'reduce-overhead' adds CUDA graphs, the fastest "
                        "on a GPU (default mode when MODE is left out)")


def _config(args, **over):
    from .train import TrainConfig
    return TrainConfig(arch=args.arch, weights=args.weights, size=args.size, batch_size=args.batch,
                       epochs=args.epochs, lr=args.lr, augment=not args.no_augment, patience=args.patience,
                       seed=args.seed, device=args.device, backend=args.backend, workers=args.workers,
                       amp=None if args.amp is None else args.amp == "on", compile=args.compile, progress=True,
                       **over)


def register(subparsers):
    """Add the `classify` command group to the top-level parser's `subparsers`; return its subparsers."""
    p = subparsers.add_parser("classify", help="ERM-vs-normal classifier: train, predict, label a pool, "
                                               "imbalance study (Table 4)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="classify_command", required=True)

    t = sub.add_parser("train", help="split a labelled pool 7:1:2 by patient, train, report test metrics")
    t.add_argument("--data", required=True, help="labelled pool (see `classify --help`)")
    t.add_argument("--labels-csv", default=None, help="CSV name,patient_id,label (default: POOL/labels.csv)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--split-seed", type=nonnegative_int, default=0)
    t.add_argument("--class-weight", default=None, choices=["balanced"], help="weighted cross-entropy")
    t.add_argument("--oversample", action="store_true", help="random oversampling of the minority class")
    _train_args(t)
    t.set_defaults(func=_train)

    q = sub.add_parser("predict", help="P(ERM) of every image with a trained checkpoint")
    q.add_argument("--checkpoint", required=True, help="checkpoint.pt written by training")
    q.add_argument("--images", required=True, help="folder of images, or dataset folder/zip")
    q.add_argument("--out", required=True, help="CSV to write (name, p_erm, label)")
    q.add_argument("--threshold", type=probability, default=0.5, help="ERM when p_erm >= this (default: %(default)s)")
    q.add_argument("--device", default="auto")
    q.add_argument("--batch", type=positive_int, default=32)
    q.add_argument("--backend", default="auto", choices=["auto", "torch", "dali"])
    q.add_argument("--workers", type=nonnegative_int, default=None)
    q.set_defaults(func=_predict)

    lab = sub.add_parser("label", help="the paper's labelling workflow: train on labelled images, label a pool")
    lab.add_argument("--labelled", required=True, help="labelled pool (see `classify --help`)")
    lab.add_argument("--labels-csv", default=None)
    lab.add_argument("--unlabelled", required=True, help="folder of images to label")
    lab.add_argument("--out", required=True, help="output folder")
    lab.add_argument("--threshold", default="youden",
                     help="rule (youden, 0.5, sens>=0.90, ...) or a number (default: %(default)s)")
    lab.add_argument("--sensitivities", type=float_range(0, 1, min_open=True, max_open=True), nargs="+", default=[0.9, 0.95],
                     help="targets of the fixed-sensitivity thresholds (default: 0.9 0.95)")
    lab.add_argument("--split-seed", type=nonnegative_int, default=0)
    _train_args(lab)
    lab.set_defaults(func=_label)

    s = sub.add_parser("study", help="imbalance study: ratios x (real, synthetic, oversample, weighted), resumable")
    s.add_argument("--pool", required=True, help="labelled pool of real images (see `classify --help`)")
    s.add_argument("--labels-csv", default=None)
    s.add_argument("--out", required=True, help="output folder (rerun to resume)")
    s.add_argument("--synthetic", default=None, help="folder of synthetic ERM images or a generator checkpoint")
    s.add_argument("--ratios", nargs="+", default=["1:1", "1:0.5", "1:0.4", "1:0.3", "1:0.2", "1:0.1"],
                   help="normal:ERM ratios (default: the paper's six)")
    s.add_argument("--modes", nargs="+", default=["real", "synthetic", "oversample", "weighted"],
                   choices=["real", "synthetic", "oversample", "weighted"])
    s.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0], help="training seeds per cell (default: 0)")
    s.add_argument("--split-seed", type=nonnegative_int, default=0)
    s.add_argument("--no-balance-eval", action="store_true", help="keep the split's class ratio in valid/test")
    s.add_argument("--threshold", type=probability, default=0.5)
    s.add_argument("--auc-ci", default="delong", choices=["delong", "bootstrap"])
    s.add_argument("--n-cam", type=nonnegative_int, default=2, help="Grad-CAM overlays per run (default: %(default)s)")
    s.add_argument("--truncation-psi", type=finite_float, default=1.0, help="when generating from a checkpoint")
    s.add_argument("--class", dest="synthetic_class", type=nonnegative_int, default=None,
                   help="class to generate from a conditional checkpoint (`train --cond`; 1 = ERM)")
    s.add_argument("--synthetic-filter", default=None, choices=["audit"],
                   help="audit: use only synthetic images that pass the realism audit's checks "
                        "(table.md says how many were dropped)")
    s.add_argument("--no-checkpoints", action="store_true", help="delete each run's checkpoint after testing")
    _train_args(s)
    s.set_defaults(func=_study)
    return sub


def _train(args):
    from .labelling import train_on_pool
    _check_inputs(args)
    fit = train_on_pool(args.data, args.out, labels_csv=args.labels_csv, split_seed=args.split_seed,
                        train=_config(args, class_weight=args.class_weight, oversample=args.oversample))
    m = fit.test_metrics
    print(f"best epoch {fit.result.best_epoch + 1}; test AUC {m.auc:.3f} [{m.auc_ci[0]:.3f}, {m.auc_ci[1]:.3f}], "
          f"accuracy {m.accuracy:.3f}, sensitivity {m.sensitivity:.3f}, specificity {m.specificity:.3f}\n"
          f"checkpoint: {fit.result.checkpoint}\nmetrics: {fit.metrics_json}")
    return 0


def _predict(args):
    import os

    from retina_fast.data.items import items_from_source
    from retina_fast.report.tables import write_csv

    from .train import load_classifier, predict
    _check_inputs(args)
    model = load_classifier(args.checkpoint, args.device)
    items = items_from_source(args.images)
    p = predict(model, items, batch_size=args.batch, backend=args.backend, workers=args.workers, progress=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_csv(args.out, ("name", "p_erm", "label"),
              [(it.name, f"{v:.6g}", "erm" if v >= args.threshold else "normal") for it, v in zip(items, p)])
    print(f"{len(items)} images, {int((p >= args.threshold).sum())} called ERM -> {args.out}")
    return 0


def _label(args):
    from .labelling import label_pool
    _check_inputs(args)
    try:
        threshold = float(args.threshold)
    except ValueError:
        threshold = args.threshold
    res = label_pool(args.labelled, args.unlabelled, args.out, labels_csv=args.labels_csv, train=_config(args),
                     split_seed=args.split_seed, sensitivities=args.sensitivities, threshold=threshold)
    with open(res.thresholds_md, encoding="utf-8") as f:
        print(f.read())
    print(f"{res.n_erm} ERM, {res.n_normal} normal at {res.threshold_rule} = {res.threshold:.4f} -> {res.labels_csv}")
    return 0


def _study(args):
    from .study import run_study
    _check_inputs(args)
    cfg = _config(args)
    res = run_study(args.pool, args.out, labels_csv=args.labels_csv, synthetic=args.synthetic, ratios=args.ratios,
                    modes=args.modes, seeds=args.seeds, train=cfg, split_seed=args.split_seed,
                    balance_eval=not args.no_balance_eval, threshold=args.threshold, auc_method=args.auc_ci,
                    n_cam=args.n_cam, truncation_psi=args.truncation_psi, synthetic_class=args.synthetic_class,
                    keep_checkpoints=not args.no_checkpoints, synthetic_filter=args.synthetic_filter)
    with open(res.table_md, encoding="utf-8") as f:
        sys.stdout.write(f.read())
    print(f"\n{len(res.trained)} runs trained, {len(res.skipped)} already done; results: {res.results_csv}\n"
          f"ROC: {res.roc_png}\nmetrics vs ratio: {res.metric_png}\n"
          f"paired comparisons: {res.comparisons_csv}" + (f", {res.comparisons_png}" if res.comparisons_png else ""))
    return 0
