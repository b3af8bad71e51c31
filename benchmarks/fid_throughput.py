"""FID pipeline throughput: Inception-v3 features per resize mode, and the Frechet distance at 2048-D.

    python benchmarks/fid_throughput.py [--images 8] [--size 1024] [--batch 4] [--device cpu|cuda]

Random weights (the speed does not depend on them). Prints a table of images/s per resize mode for
uint8 images of --size x --size resized to 299 x 299, and the time of one 2048-D frechet_distance.
"""
import argparse
import time

import numpy as np
import torch

from retina_fast.metrics import InceptionV3FID, frechet_distance
from retina_fast.metrics.inception import RESIZE_MODES


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {args.images} images "
          f"{args.size} x {args.size} -> 299 x 299, batch {args.batch}")
    print(f"{'resize mode':14s} {'images/s':>9s} {'ms/image':>9s}")
    for mode in [m for m in RESIZE_MODES if m != "none"]:
        net = InceptionV3FID(resize_mode=mode).to(dev)
        with torch.no_grad():
            net(x[:1].to(dev))  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, args.images, args.batch):
                net(x[i:i + args.batch].to(dev))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        print(f"{mode:14s} {args.images / dt:9.2f} {1000 * dt / args.images:9.1f}")
    rng = np.random.default_rng(0)
    f = rng.standard_normal((4096, 2048))
    s = np.cov(f, rowvar=False)
    t = time.perf_counter()
    frechet_distance(f.mean(0), s, f.mean(0) + 0.1, 1.1 * s)
    print(f"frechet_distance 2048-D (numpy float64): {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
