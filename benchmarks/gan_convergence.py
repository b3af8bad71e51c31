"""Does our StyleGAN2-ADA learn fundus structure on a CPU? The realism curve of the 64 preset.

Writes phantom frames (`retina_fast.data.phantom.make_fundus`, PNG, `--frame` H x W), prepares them with
`retina_fast.data.prepare.prepare` to the preset's resolution, trains the preset on the CPU for a
wall-clock budget (`--minutes`; `TrainConfig.max_minutes`) with the realism audit
(`retina_fast.audit.realism`) at every tick, then audits `--final-images` generated images against as
many training images. Into `--out`:

- ``frames/``, ``prepared/`` (dataset + manifest), ``run/`` (the training run folder);
- ``curve.csv``, ``curve.png``: share passing prepare's checks, vessel-fraction and SNR Cohen's d per kimg;
- ``grid_start.png``, ``grid_middle.png``, ``grid_end.png``: sample grids (fixed seeds);
- ``final-audit/``: the realism report (Markdown, CSVs, histograms) of the final generator.

It prints the curve and the final numbers against the target: at least 80 % of generated images pass
the FOV and disc checks, and the vessel-fraction Cohen's d against the training set is below 0.8.

    python benchmarks/gan_convergence.py --out gan-convergence --images 1000 --minutes 45
    python benchmarks/gan_convergence.py --out /tmp/gc --images 16 --minutes 0.5 --tick 0.02  # smoke run
"""
import argparse
import csv
import multiprocessing as mp
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TARGET_PASS = 0.8
TARGET_D = 0.8


def _write_frame(job):
    seed, path, frame = job
    from retina_fast.data.dataset import write_png
    from retina_fast.data.phantom import make_fundus

    if not os.path.exists(path):
        write_png(path, make_fundus(seed, size=frame)[0])
    return path


def write_frames(folder, n, frame, workers):
    """Phantom frames seed 0..n-1 as PNGs in `folder` (existing ones are kept: a rerun resumes)."""
    os.makedirs(folder, exist_ok=True)
    jobs = [(s, os.path.join(folder, f"phantom{s:05d}.png"), frame) for s in range(n)]
    with mp.get_context("spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_frame, jobs, chunksize=8):
            pass
    return folder


def _read_curve(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r.get("realism_pass", "") != ""]


def _parse_frame(text):
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gan-convergence", help="output folder (default gan-convergence)")
    p.add_argument("--images", type=int, default=1000, help="phantoms to prepare (default 1000)")
    p.add_argument("--frame", type=_parse_frame, default=(512, 680), help="phantom frame H x W (default 512x680)")
    p.add_argument("--preset", default="64", help="StyleGAN2 preset (default 64; its resolution is the dataset's)")
    p.add_argument("--minutes", type=float, default=45.0, help="training wall-clock budget (default 45)")
    p.add_argument("--tick", type=float, default=2.0, help="kimg per tick = per realism point (default 2)")
    p.add_argument("--realism-images", type=int, default=64, help="images per realism point (default 64)")
    p.add_argument("--final-images", type=int, default=200, help="images in the final audit (default 200)")
    p.add_argument("--workers", type=int, default=2, help="processes for frames and prepare (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for training (default 2)")
    args = p.parse_args(argv)
    if args.images < 2 or args.minutes <= 0 or args.tick <= 0:
        p.error("--images must be >= 2, --minutes and --tick > 0")

    import torch

    from retina_fast.audit.realism import RealismMonitor, realism_report
    from retina_fast.data.prepare import prepare
    from retina_fast.gan.networks import PRESETS
    from retina_fast.gan.training import TrainConfig, train

    if args.preset not in PRESETS:
        p.error(f"--preset must be one of {list(PRESETS)}")
    resolution = PRESETS[args.preset]["resolution"]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    frames = write_frames(os.path.join(out, "frames"), args.images, args.frame, args.workers)
    t1 = time.time()
    prep = prepare(frames, os.path.join(out, "prepared"), size=resolution, workers=args.workers, progress=False)
    t2 = time.time()
    print(f"{args.images} phantom frames {args.frame[0]}x{args.frame[1]} in {t1 - t0:.0f} s; prepare to "
          f"{resolution} px in {t2 - t1:.0f} s: {prep.accepted} accepted, excluded {dict(prep.excluded)}")

    torch.set_num_threads(args.threads)
    run = os.path.join(out, "run")
    if os.path.isdir(run):
        shutil.rmtree(run)  # a fresh run: the curve is one budget's
    cfg = TrainConfig(data=prep.dataset, outdir=run, preset=args.preset, kimg=1e6, max_minutes=args.minutes,
                      tick=args.tick, snap=0, image_snap=1, fid_every=0, realism_every=1,
                      realism_images=args.realism_images, workers=1, device="cpu", progress=False,
                      tensorboard=False)
    res = train(cfg)
    t3 = time.time()
    print(f"trained {res.cur_nimg / 1000:.2f} kimg in {(t3 - t2) / 60:.1f} min")

    shutil.copyfile(res.fid_csv, os.path.join(out, "curve.csv"))
    shutil.copyfile(res.fid_png, os.path.join(out, "curve.png"))
    grids = res.grids
    for name, g in (("start", grids[0]), ("middle", grids[len(grids) // 2]), ("end", grids[-1])):
        shutil.copyfile(g, os.path.join(out, f"grid_{name}.png"))

    print("\nrealism curve (generated vs training images, checks at the audit's working size):")
    print("| kimg | share passing | vessel-fraction d | SNR d |\n|---:|---:|---:|---:|")
    for r in _read_curve(res.fid_csv):  # an empty d: no generated image could be measured yet
        print(f"| {float(r['kimg']):.2f} | " + " | ".join(
            f"{float(r[c]):.2f}" if r[c] else "n/a" for c in ("realism_pass", "realism_vessel_d", "realism_snr_d"))
            + " |")

    from retina_fast.gan.networks import Generator

    G = Generator.from_checkpoint(res.last_snapshot).eval()
    monitor = RealismMonitor(prep.dataset, resolution, num_images=max(2, args.final_images))
    fake = monitor.generated_images(G)
    rep = realism_report(monitor.real(), _measure(fake), os.path.join(out, "final-audit"),
                         groups=("training", "generated"))
    print("\n" + rep.table)
    h = rep.headline
    ok_pass, ok_d = h["realism_pass"] >= TARGET_PASS, abs(h["realism_vessel_d"]) < TARGET_D
    print(f"final ({len(fake)} generated vs {len(monitor.real())} training images, {res.cur_nimg / 1000:.2f} kimg, "
          f"{(t3 - t2) / 60:.1f} min):")
    print(f"  share passing the checks: {h['realism_pass']:.2f} (target >= {TARGET_PASS}) "
          f"{'MET' if ok_pass else 'NOT MET'}; reasons of the rest: {dict(rep.reasons_synthetic)}")
    print(f"  vessel-fraction Cohen's d: {h['realism_vessel_d']:.2f} (target |d| < {TARGET_D}) "
          f"{'MET' if ok_d else 'NOT MET'}; SNR d {h['realism_snr_d']:.2f}")
    print(f"outputs in {out} (curve.csv/png, grid_start/middle/end.png, final-audit/)")
    return 0


def _measure(images):
    from retina_fast.audit.realism import measure_realism

    return measure_realism(list(images))


if __name__ == "__main__":
    sys.exit(main())
