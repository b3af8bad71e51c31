"""Ingest throughput and optic-disc accuracy tables.

    .venv/bin/python benchmarks/ingest_throughput.py [--n 40] [--workers 2] [--disc 200] [--profile]

1. End-to-end `prepare` on a phantom cohort of JPEG-encapsulated 1536 x 2048 DICOMs -> 1024 PNG
   (the cohort is rendered once and cached under .cache/bench_ingest_<n>/): images/s, wall clock, for
   the BOX (default) and LANCZOS resize, in the same run.
2. Per-stage time per image, single process (CPU time of this process, so other load on a shared
   machine inflates it less than wall time): decode, working copy, checks, FOV, crop + resize, disc,
   PNG encode (ours vs Pillow's compress_level=1).
3. With --profile: cProfile of one single-worker `prepare`, top functions by own time.
4. With --disc N: disc-centre accuracy of the classical detector on N phantoms at 384 x 512
   (fraction within 0.25 disc radius; the bar is >= 95 %) and on N/4 at 1536 x 2048.
"""
import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from retina_fast.data import prepare
from retina_fast.data.cohort import make_cohort
from retina_fast.data.dataset import encode_png
from retina_fast.data.dicom import read_dicom_pil
from retina_fast.data.disc import detect_disc
from retina_fast.data.fov import (
    crop_to_fov_pil,
    find_fov,
    fov_from_working_copy,
    retina_mask,
    working_copy,
)
from retina_fast.data.phantom import make_fundus
from retina_fast.data.prepare import exposure_reason


def cohort(n):
    path = os.path.join(ROOT, ".cache", f"bench_ingest_{n}")
    if not os.path.exists(os.path.join(path, "cohort_truth.csv")):
        print(f"rendering {n} phantom DICOMs (1536 x 2048, JPEG) into {path} ...", file=sys.stderr, flush=True)
        make_cohort(path, n, seed=123, bad=False, second_visit_fraction=0.0)
    return path


def _cpu_seconds():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def end_to_end(src, workers, resample):
    """(images, wall s, CPU s of this process and its reaped workers) of one `prepare` run."""
    out = tempfile.mkdtemp(prefix="bench_ingest_")
    try:
        c, t = _cpu_seconds(), time.perf_counter()
        res = prepare(src, out, workers=workers, resample=resample, salt="bench", progress=False)
        wall, cpu = time.perf_counter() - t, _cpu_seconds() - c
    finally:
        shutil.rmtree(out)
    return res.accepted, wall, cpu


def stages(src, resample="box"):
    files = sorted(os.path.join(src, f) for f in os.listdir(src) if f.endswith(".dcm"))
    acc = {}

    def tick(name, t0):
        t = time.process_time()
        acc[name] = acc.get(name, 0.0) + t - t0
        return t

    for f in files:
        t = time.process_time()
        img, _ = read_dicom_pil(f)
        t = tick("decode (pydicom header + Pillow JPEG)", t)
        small, factor = working_copy(img)
        t = tick("working copy (box /4)", t)
        mask = retina_mask(small)
        exposure_reason(small, mask[0])
        t = tick("retina mask + exposure checks", t)
        fov = fov_from_working_copy(small, factor, (img.size[1], img.size[0]), mask)
        t = tick("FOV circle fit", t)
        square, g = crop_to_fov_pil(img, fov, 1024, resample)
        t = tick(f"crop + resize ({resample})", t)
        detect_disc(square, g.output_fov(fov))
        t = tick("optic disc", t)
        encode_png(np.asarray(square), 1)
        t = tick("PNG encode (ours, level 1)", t)
        buf = io.BytesIO()
        square.save(buf, format="PNG", compress_level=1)
        t = tick("[not used] PNG encode (Pillow, level 1)", t)
    return {k: 1000 * v / len(files) for k, v in acc.items()}


def disc_accuracy(n, size):
    errs, t = [], time.perf_counter()
    for seed in range(n):
        image, truth = make_fundus(seed, size=size)
        d = detect_disc(image, find_fov(image))
        errs.append(np.hypot(d.center[0] - truth.disc_center[0], d.center[1] - truth.disc_center[1])
                    / truth.disc_radius)
    errs = np.array(errs)
    return (errs < 0.25).mean(), np.median(errs), errs.max(), time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40, help="cohort size (1536 x 2048 JPEG DICOMs)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--disc", type=int, default=0, help="phantoms for the disc accuracy table (0: skip)")
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    src = cohort(a.n)
    load = os.getloadavg()[0]
    print(f"# {os.cpu_count()} cores, load average {load:.1f} before the run (other jobs share the machine)")
    # warm-up (numba-free path, but page cache, imports)
    end_to_end(src, a.workers, "box")

    print(f"\n## End to end: {a.n} JPEG DICOMs 1536 x 2048 -> 1024 PNG, {a.workers} workers\n")
    print("CPU s counts this process and its workers; 'if idle' = images / (CPU s / cores used), the rate\n"
          "the run would have had with the cores to itself (a shared machine inflates wall time, not CPU).\n")
    print("| resize | images | wall s | images/s (wall) | CPU s | images/s if idle |\n|---|---:|---:|---:|---:|---:|")
    cores = min(a.workers, os.cpu_count())
    for resample in ("box", "lanczos"):
        n, wall, cpu = end_to_end(src, a.workers, resample)
        print(f"| {resample} | {n} | {wall:.2f} | {n / wall:.1f} | {cpu:.2f} | {n / (cpu / cores):.1f} |",
              flush=True)

    print("\n## Per stage, one process, CPU ms per image\n")
    box, lan = stages(src, "box"), stages(src, "lanczos")
    print("| stage | box | lanczos |\n|---|---:|---:|")
    keys = [k for k in box if not k.startswith("crop")]
    for k in keys[:4]:
        print(f"| {k} | {box[k]:.1f} | {lan[k]:.1f} |")
    print(f"| crop + resize | {box['crop + resize (box)']:.1f} | {lan['crop + resize (lanczos)']:.1f} |")
    for k in keys[4:]:
        print(f"| {k} | {box[k]:.1f} | {lan[k]:.1f} |")
    used = [k for k in box if not k.startswith("[")]
    tb = sum(box[k] for k in used)
    tl = sum(lan[k.replace("(box)", "(lanczos)")] for k in used)
    print(f"| **total** | **{tb:.1f}** | **{tl:.1f}** |")
    print(f"\n(per core: {1000 / tb:.1f} images/s with box, {1000 / tl:.1f} with lanczos)")

    if a.profile:
        out = tempfile.mkdtemp(prefix="bench_ingest_prof_")
        prof = cProfile.Profile()
        prof.enable()
        prepare(src, out, workers=1, salt="bench", progress=False)
        prof.disable()
        shutil.rmtree(out)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        print("\n## cProfile, workers=1, top 15 by own time\n\n```")
        print("\n".join(s.getvalue().splitlines()[4:30]))
        print("```")

    if a.disc:
        print("\n## Optic disc, classical detector: centre error / true disc radius\n")
        print("| phantoms | size | within 0.25 r | median | max | s |\n|---:|---|---:|---:|---:|---:|")
        for n, size in ((a.disc, (384, 512)), (max(1, a.disc // 4), (1536, 2048))):
            frac, med, mx, sec = disc_accuracy(n, size)
            print(f"| {n} | {size[0]} x {size[1]} | {100 * frac:.1f} % | {med:.3f} | {mx:.3f} | {sec:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
