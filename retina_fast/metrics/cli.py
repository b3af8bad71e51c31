"""`retina-fast fid`: Frechet Inception Distance between a real image set and generated images."""


def _device(name):
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _fid(args):
    from .fid import dataset_stats, fid, generator_stats
    from .inception import RESIZE_MODES, load_inception  # noqa: F401

    if (args.fake is None) == (args.checkpoint is None):
        raise SystemExit("retina-fast fid: give exactly one of --fake DIR or --checkpoint PT")
    device = _device(args.device)
    net = load_inception(args.inception, resize_mode=args.resize_mode, device=device)
    common = dict(batch_size=args.batch, device=device, progress=True)
    real = dataset_stats(args.real, net, max_items=args.max_items, cache_dir=args.cache_dir,
                         num_workers=args.workers, **common)
    if args.fake is not None:
        fake = dataset_stats(args.fake, net, max_items=args.max_items, cache_dir=args.cache_dir,
                             num_workers=args.workers, **common)
        what = args.fake
    else:
        from ..gan.networks import Generator
        G = Generator.from_checkpoint(args.checkpoint, key="G_ema", device=device)
        G.eval()
        num = args.num if args.num is not None else real.n
        fake = generator_stats(G, net, num_images=num, truncation_psi=args.trunc, seed=args.seed,
                               noise_mode=args.noise_mode, **common)
        what = f"{args.checkpoint} ({num} images, psi {args.trunc})"
    value = fid(real, fake)
    print(f"real:  {args.real} ({real.n} images)\nfake:  {what} ({fake.n} images)\n"
          f"resize: 299 x 299 {args.resize_mode}\nFID {value:.4f}")
    return 0


def register(subparsers):
    """Add the `fid` sub-command to the top-level parser's `subparsers`."""
    from .inception import RESIZE_MODES

    p = subparsers.add_parser(
        "fid", help="Frechet Inception Distance of generated images (folder or checkpoint) to a dataset",
        description="FID with the inception-2015-12-05 network loaded from a local file (never "
                    "downloaded). Real-set statistics are cached in --cache-dir.")
    p.add_argument("--real", required=True, help="real dataset: folder, .zip, or folder of images")
    p.add_argument("--fake", default=None, help="folder of generated images")
    p.add_argument("--checkpoint", default=None, help="snapshot .pt whose G_ema generates the fake set")
    p.add_argument("--num", type=int, default=None,
                   help="images to generate with --checkpoint (default: as many as the real set)")
    p.add_argument("--inception", required=True,
                   help="pytorch-fid state_dict (pt_inception-2015-12-05-6726825d.pth) or TorchScript .pt")
    p.add_argument("--max-items", type=int, default=None, help="use at most this many images of each folder")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--cache-dir", default=None, help="folder for cached dataset statistics")
    p.add_argument("--workers", type=int, default=0, help="image-decoding processes (default 0)")
    p.add_argument("--resize-mode", default="bilinear", choices=RESIZE_MODES,
                   help="resize to 299 x 299: bilinear (pytorch-fid, default), bilinear-tf1, bicubic-pil "
                        "(clean-fid), none")
    p.add_argument("--trunc", type=float, default=1.0, help="truncation psi with --checkpoint (default 1)")
    p.add_argument("--noise-mode", default="random", choices=["random", "const", "none"],
                   help="generator noise with --checkpoint (default random, as StyleGAN2-ADA's metrics)")
    p.add_argument("--seed", type=int, default=0, help="latent seed with --checkpoint (default 0)")
    p.set_defaults(func=_fid)
