"""`retina-fast train | finetune | generate | convert`: the GAN's command line (thin: parses, calls the stage).

    retina-fast train --data prepared/dataset --outdir runs/gan --preset paper1024 --batch 32
    torchrun --nproc_per_node 8 -m retina_fast.cli train ...          # the same, on 8 GPUs
    retina-fast train --resume runs/gan --data prepared/dataset --outdir runs/gan   # after a crash
    retina-fast finetune --resume runs/gan/best.pt --data erm/dataset --outdir runs/erm --freeze-d 4
    retina-fast generate --network runs/erm/best.pt --seeds 0-99 --outdir synthetic
    retina-fast convert network-snapshot-025000.pkl nvlabs.pt        # an NVlabs pickle -> our snapshot
"""
import argparse

from retina_fast.cli_types import (
    int_at_least,
    nonnegative_float,
    nonnegative_int,
    optional,
    positive_float,
    positive_int,
    probability,
)


def _add_common(p, *, finetune):
    p.add_argument("--data", required=True, help="training images: dataset folder/.zip or folder of images")
    p.add_argument("--outdir", required=True, help="run folder (snapshots, logs, grids, FID curve)")
    if not finetune:
        p.add_argument("--preset", default="32", help="paper1024, 512, 256, 64 or 32 (default 32: CPU-sized)")
        p.add_argument("--cond", action="store_true",
                       help="class-conditional on dataset.json's labels (0 normal, 1 ERM); generate with --class")
    p.add_argument("--batch", type=positive_int, default=None, help="total batch over all processes (default: preset's)")
    p.add_argument("--batch-gpu", type=positive_int, default=None, help="images per process per pass (default: batch / processes)")
    p.add_argument("--kimg", type=positive_float, default=25000 if not finetune else 500,
                   help="training length, thousands of real images (default %(default)s)")
    p.add_argument("--lr", type=positive_float, default=0.002 if not finetune else 1e-4,
                   help="Adam learning rate of G and D (default %(default)s; the paper used 0.001 / 1e-4)")
    p.add_argument("--gamma", type=nonnegative_float, default=None, help="R1 weight (default: preset's)")
    p.add_argument("--augment", default="ada", choices=["ada", "noaug", "fixed"], help="augmentation mode (default ada)")
    p.add_argument("--p", type=probability, default=0.0, help="augment probability for 'fixed', start value for 'ada'")
    p.add_argument("--target", type=probability, default=0.6, help="ADA target of E[sign(D(real))] (default 0.6)")
    p.add_argument("--ada-kimg", type=positive_float, default=500 if not finetune else 100,
                   help="kimg for ADA p to move by 1 (default %(default)s)")
    p.add_argument("--augpipe", default="bgc", help="augmentation pipeline (default bgc)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                   help="random x-flips of the training images (default on)")
    p.add_argument("--tick", type=positive_float, default=4.0, help="kimg per status line (default 4)")
    p.add_argument("--snap", type=nonnegative_int, default=50, help="ticks between snapshots (default 50; 0: only the last)")
    p.add_argument("--img-snap", type=optional(nonnegative_int), default=None, help="ticks between image grids (default --snap)")
    p.add_argument("--fid-every", type=optional(nonnegative_int), default=None,
                   help="ticks between FIDs (default --snap; 0: no FID)")
    p.add_argument("--fid-images", type=positive_int, default=50000, help="generated images per FID (default 50000)")
    p.add_argument("--fid-real-images", type=positive_int, default=None, help="real images for the FID reference (default all)")
    p.add_argument("--inception", default=None,
                   help="local Inception-v3 file for FID (never downloaded); without it FID uses RANDOM weights")
    p.add_argument("--metrics", default="fid",
                   help="at each FID: comma-separated fid, kid, pr (precision, recall), dc (density, coverage), "
                        "columns of fid.csv (default fid; FID is always computed)")
    p.add_argument("--realism-every", type=optional(nonnegative_int), default=None,
                   help="ticks between realism audits (share passing prepare's checks, vessel-fraction and SNR "
                        "Cohen's d; columns of fid.csv; default: with FID; 0: never)")
    p.add_argument("--realism-images", type=int_at_least(2), default=None,
                   help="generated and training images per realism audit (default min(64, --fid-images))")
    p.add_argument("--max-minutes", type=positive_float, default=None,
                   help="stop cleanly after this many minutes even before --kimg")
    p.add_argument("--freeze-d", type=nonnegative_int, default=0, help="freeze the first N discriminator layers (Freeze-D)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (a killed-and-resumed run then repeats the uninterrupted one)")
    p.add_argument("--impl", default=None, choices=["native", "ref"], help="op implementation (default: native when built)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:k or auto (default)")
    p.add_argument("--workers", type=nonnegative_int, default=3, help="data loader workers (default 3)")
    p.add_argument("--loader", default="torch", choices=["torch", "dali"], help="data loader backend (dali: CUDA only)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard event files")
    p.add_argument("--keep", type=positive_int, default=None, help="keep only the newest N snapshots (default all)")
    p.add_argument("--allow-tf32", action="store_true", help="TF32 matmuls/convolutions on Ampere+ GPUs")


def _config_kwargs(args):
    names = ("batch", "batch_gpu", "kimg", "lr", "gamma", "augment", "p", "ada_kimg", "augpipe", "mirror", "tick",
             "snap", "fid_every", "fid_images", "fid_real_images", "inception", "metrics", "realism_every",
             "realism_images", "max_minutes", "freeze_d", "seed",
             "deterministic", "impl", "device", "workers", "loader", "tensorboard", "keep", "allow_tf32")
    kw = {n: getattr(args, n) for n in names}
    kw.update(ada_target=args.target, image_snap=args.img_snap)
    return kw


def _report(result):
    if result.rank != 0:
        return 0
    print(f"\n{result.cur_nimg / 1000:.3f} kimg in {result.outdir}; last snapshot {result.last_snapshot}"
          + (f"; best FID {result.best_fid:.4f} ({result.best})" if result.best_fid is not None else ""))
    return 0


def _train(args):
    from .training import TrainConfig, train
    return _report(train(TrainConfig(data=args.data, outdir=args.outdir, preset=args.preset, resume=args.resume,
                                     cond=args.cond, **_config_kwargs(args))))


def _finetune(args):
    from .training import finetune
    return _report(finetune(args.resume, args.data, args.outdir, resume=args.continue_run, **_config_kwargs(args)))


def _generate(args):
    from .generate import generate_main
    return generate_main(args)


def _convert(args):
    from .nvlabs import convert_network_pickle
    out = convert_network_pickle(args.src, args.dst)
    print(f"{args.src} -> {out} (G, D, G_ema and ADA p; no optimiser state: training from it starts fresh)")
    return 0


def register(subparsers):
    """Add `train`, `finetune`, `generate` and `convert` to the top-level parser's `subparsers`."""
    from .generate import add_generate_args

    p = subparsers.add_parser("train", help="train StyleGAN2-ADA (single process, or DDP under torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, finetune=False)
    p.add_argument("--resume", default=None,
                   help="continue exactly from a snapshot file or a run folder's newest complete snapshot; "
                        "an NVlabs network pickle (.pkl) gives G, D, G_ema and ADA p, with fresh optimisers")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("finetune", help="transfer-learn a snapshot on new images (lr 1e-4, ADA kimg 100)",
                              description="Start from a snapshot's G, D, G_ema (fresh optimisers), e.g. the "
                                          "paper's ERM fine-tuning; outputs as `train`.")
    _add_common(p, finetune=True)
    p.add_argument("--resume", required=True,
                   help="snapshot to start from (its weights), or an NVlabs network pickle (.pkl)")
    p.add_argument("--continue", dest="continue_run", default=None,
                   help="continue an interrupted fine-tuning run (its snapshot or folder) exactly")
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser("generate", help="images (PNG, optional DICOM marked synthetic) from a snapshot")
    add_generate_args(p)
    p.set_defaults(func=_generate)

    p = subparsers.add_parser("convert", help="NVlabs StyleGAN2-ADA/StyleGAN3 network pickle -> our snapshot (.pt)",
                              description="Read an NVlabs network pickle without running the code it embeds "
                                          "(StyleGAN2 networks; StyleGAN3-T/R and TensorFlow pickles are refused) "
                                          "and write it as a retina_fast.gan/1 snapshot, atomically.")
    p.add_argument("src", help="network-snapshot-*.pkl of stylegan2-ada-pytorch or stylegan3 (--cfg=stylegan2)")
    p.add_argument("dst", help="snapshot file to write (.pt)")
    p.set_defaults(func=_convert)


def main(argv=None):
    """`python -m retina_fast.gan.cli train ...` (e.g. under torchrun before the top-level CLI lists it)."""
    parser = argparse.ArgumentParser(prog="retina_fast.gan.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    register(parser.add_subparsers(dest="stage", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
