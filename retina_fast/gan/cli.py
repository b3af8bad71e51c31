"""`retina-fast train | finetune | generate`: the GAN's command line (thin: parses, calls the stage).

    retina-fast train --data prepared/dataset --outdir runs/gan --preset paper1024 --batch 32
    torchrun --nproc_per_node 8 -m retina_fast.cli train ...          # the same, on 8 GPUs
    retina-fast train --resume runs/gan --data prepared/dataset --outdir runs/gan   # after a crash
    retina-fast finetune --resume runs/gan/best.pt --data erm/dataset --outdir runs/erm --freeze-d 4
    retina-fast generate --network runs/erm/best.pt --seeds 0-99 --outdir synthetic
"""
import argparse


def _nonneg_int_or_none(text):
    return None if text.lower() == "none" else int(text)


def _add_common(p, *, finetune):
    p.add_argument("--data", required=True, help="training images: dataset folder/.zip or folder of images")
    p.add_argument("--outdir", required=True, help="run folder (snapshots, logs, grids, FID curve)")
    if not finetune:
        p.add_argument("--preset", default="32", help="paper1024, 512, 256, 64 or 32 (default 32: CPU-sized)")
    p.add_argument("--batch", type=int, default=None, help="total batch over all processes (default: preset's)")
    p.add_argument("--batch-gpu", type=int, default=None, help="images per process per pass (default: batch / processes)")
    p.add_argument("--kimg", type=float, default=25000 if not finetune else 500,
                   help="training length, thousands of real images (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.002 if not finetune else 1e-4,
                   help="Adam learning rate of G and D (default %(default)s; the paper used 0.001 / 1e-4)")
    p.add_argument("--gamma", type=float, default=None, help="R1 weight (default: preset's)")
    p.add_argument("--augment", default="ada", choices=["ada", "noaug", "fixed"], help="augmentation mode (default ada)")
    p.add_argument("--p", type=float, default=0.0, help="augment probability for 'fixed', start value for 'ada'")
    p.add_argument("--target", type=float, default=0.6, help="ADA target of E[sign(D(real))] (default 0.6)")
    p.add_argument("--ada-kimg", type=float, default=500 if not finetune else 100,
                   help="kimg for ADA p to move by 1 (default %(default)s)")
    p.add_argument("--augpipe", default="bgc", help="augmentation pipeline (default bgc)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                   help="random x-flips of the training images (default on)")
    p.add_argument("--tick", type=float, default=4.0, help="kimg per status line (default 4)")
    p.add_argument("--snap", type=int, default=50, help="ticks between snapshots (default 50; 0: only the last)")
    p.add_argument("--img-snap", type=_nonneg_int_or_none, default=None, help="ticks between image grids (default --snap)")
    p.add_argument("--fid-every", type=_nonneg_int_or_none, default=None,
                   help="ticks between FIDs (default --snap; 0: no FID)")
    p.add_argument("--fid-images", type=int, default=50000, help="generated images per FID (default 50000)")
    p.add_argument("--fid-real-images", type=int, default=None, help="real images for the FID reference (default all)")
    p.add_argument("--inception", default=None,
                   help="local Inception-v3 file for FID (never downloaded); without it FID uses RANDOM weights")
    p.add_argument("--freeze-d", type=int, default=0, help="freeze the first N discriminator layers (Freeze-D)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (a killed-and-resumed run then repeats the uninterrupted one)")
    p.add_argument("--impl", default=None, choices=["native", "ref"], help="op implementation (default: native when built)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:k or auto (default)")
    p.add_argument("--workers", type=int, default=3, help="data loader workers (default 3)")
    p.add_argument("--loader", default="torch", choices=["torch", "dali"], help="data loader backend (dali: CUDA only)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard event files")
    p.add_argument("--keep", type=int, default=None, help="keep only the newest N snapshots (default all)")
    p.add_argument("--allow-tf32", action="store_true", help="TF32 matmuls/convolutions on Ampere+ GPUs")


def _config_kwargs(args):
    names = ("batch", "batch_gpu", "kimg", "lr", "gamma", "augment", "p", "ada_kimg", "augpipe", "mirror", "tick",
             "snap", "fid_every", "fid_images", "fid_real_images", "inception", "freeze_d", "seed", "deterministic",
             "impl", "device", "workers", "loader", "tensorboard", "keep", "allow_tf32")
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
                                     **_config_kwargs(args))))


def _finetune(args):
    from .training import finetune
    return _report(finetune(args.resume, args.data, args.outdir, resume=args.continue_run, **_config_kwargs(args)))


def _generate(args):
    from .generate import generate_main
    return generate_main(args)


def register(subparsers):
    """Add `train`, `finetune` and `generate` to the top-level parser's `subparsers`."""
    from .generate import add_generate_args

    p = subparsers.add_parser("train", help="train StyleGAN2-ADA (single process, or DDP under torchrun)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, finetune=False)
    p.add_argument("--resume", default=None,
                   help="continue exactly from a snapshot file or a run folder's newest complete snapshot")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("finetune", help="transfer-learn a snapshot on new images (lr 1e-4, ADA kimg 100)",
                              description="Start from a snapshot's G, D, G_ema (fresh optimisers), e.g. the "
                                          "paper's ERM fine-tuning; outputs as `train`.")
    _add_common(p, finetune=True)
    p.add_argument("--resume", required=True, help="snapshot to start from (its weights)")
    p.add_argument("--continue", dest="continue_run", default=None,
                   help="continue an interrupted fine-tuning run (its snapshot or folder) exactly")
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser("generate", help="images (PNG, optional DICOM marked synthetic) from a snapshot")
    add_generate_args(p)
    p.set_defaults(func=_generate)


def main(argv=None):
    """`python -m retina_fast.gan.cli train ...` (e.g. under torchrun before the top-level CLI lists it)."""
    parser = argparse.ArgumentParser(prog="retina_fast.gan.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    register(parser.add_subparsers(dest="stage", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
