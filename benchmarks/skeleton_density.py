"""Skeleton speed against mask density and vessel width: retina_fast vs scikit-image, side by side.

    NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/skeleton_density.py [--repeats 5]

Masks: phantom vessel masks (`retina_fast.data.phantom.make_fundus`) and random-walk polylines dilated
to 3, 5, 9, 15 and 20 px, at 1024 x 1024 and 1536 x 2048 (the paper's frame size). The polyline count
scales with the area (80 per megapixel: about 10 % foreground at 3 px), so thicker lines also mean
denser masks, up to about 65 % foreground where vessels merge into blobs. Every output is checked
equal to scikit-image's before timing. Both implementations run on one thread (scikit-image's Zhang
skeleton is single-threaded; ours uses no Numba parallelism). Times are the process CPU time of the
best of `--repeats` runs, interleaved, so that other jobs on a shared machine disturb them less.
Bar: >= 4x on every row.
"""
import argparse
import sys
import time

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line
from skimage.morphology import skeletonize as sk_skeletonize

from retina_fast.data.phantom import make_fundus
from retina_fast.vessels import skeletonize

WIDTHS = (3, 5, 9, 15, 20)
SHAPES = ((1024, 1024), (1536, 2048))
LINES_PER_MPX = 80


def polyline_mask(seed, shape, width):
    """Random-walk polylines (4-11 segments of 50-250 px each) dilated to `width` px."""
    rng = np.random.default_rng(seed)
    h, w = shape
    centre = np.zeros(shape, bool)
    for _ in range(max(1, round(h * w / 2**20 * LINES_PER_MPX))):
        p, ang = rng.uniform((0, 0), (h, w)), rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(4, 12))):
            ang += rng.normal(0, 0.6)
            q = p + rng.uniform(50, 250) * np.array([np.sin(ang), np.cos(ang)])
            rr, cc = line(int(p[0]), int(p[1]), int(q[0]), int(q[1]))
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            centre[rr[ok], cc[ok]] = True
            p = q
    return ndi.distance_transform_edt(~centre) <= (width - 1) / 2


def cases():
    for shape in SHAPES:
        yield f"phantom {shape[0]}x{shape[1]}", make_fundus(100, size=shape)[1].vessel_mask
        for width in WIDTHS:
            yield f"polylines {width} px, {shape[0]}x{shape[1]}", polyline_mask(width, shape, width)


def best_cpu_times(fns, mask, repeats):
    best = [np.inf] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.process_time()
            fn(mask)
            best[k] = min(best[k], time.process_time() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per implementation and mask (>= 1)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    skeletonize(np.ones((8, 8), bool))  # compile (or load the Numba cache) outside the timings
    print(f"skeletonize, 1 thread each, process CPU time, best of {args.repeats} (identical output checked)")
    print("| mask | foreground | retina_fast ms | scikit-image ms | ratio |\n|---|---:|---:|---:|---:|")
    worst = np.inf
    for name, mask in cases():
        if not np.array_equal(skeletonize(mask), sk_skeletonize(mask)):
            raise SystemExit(f"{name}: output differs from scikit-image")
        ours, ref = best_cpu_times((skeletonize, sk_skeletonize), mask, args.repeats)
        worst = min(worst, ref / ours)
        print(f"| {name} | {mask.mean():.1%} | {ours * 1e3:.2f} | {ref * 1e3:.1f} | {ref / ours:.1f}x |",
              flush=True)
    print(f"worst ratio {worst:.1f}x (bar 4x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
