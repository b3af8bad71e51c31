"""`retina-fast demo`: every stage built so far, end to end, on data generated here.

1. ops: native-vs-reference self-check and timing table (the StyleGAN kernels);
2. data: a phantom DICOM cohort (bad files included) -> `prepare` -> accepted/excluded counts;
3. gan: the tiny StyleGAN2-ADA preset trained briefly on the prepared images (sample grid, FID
   curve), then fine-tuned on their ERM images (the paper's transfer learning, lr 1e-4);
4. vessels: vessel amount and zone-B SNR of the prepared images, normal vs ERM phantoms compared
   with the same table the real-vs-synthetic study uses;
5. turing: a simulated reader panel (the paper's 12/14/14 readers) judging the prepared images
   against stand-in "synthetic" phantoms, analysed like the paper (Tables 2-3, Figure 4);
6. classify: a tiny ERM-vs-normal imbalance study (real only, + "synthetic" ERM, oversampling,
   class weights) with its Table-4-shaped table, ROC plot and Grad-CAM overlays.

The tiny generator of a short CPU run is far from realistic, so the vessel, Turing and classifier
stages use phantoms rendered at the output size as their "synthetic" arm; with a trained
`paper1024` checkpoint the same functions take generated images.
"""
import os
import sys

from tqdm import tqdm


def ops_stage(device="auto", quick=False, repeats=2):
    """Print the op self-check and native-vs-reference table; return the names of failed checks."""
    import torch

    from .ops import NATIVE_AVAILABLE, bench, has_cuda_kernels
    from .ops.selfcheck import run_selfcheck

    print(f"## 1. Ops: native extension {'built' if NATIVE_AVAILABLE else 'MISSING'}"
          f"{' with CUDA kernels' if has_cuda_kernels() else ' (CPU kernels)'}\n")
    print("Self-check (native vs reference, values and gradients, float64)\n")
    rows = run_selfcheck()
    print("| check | max abs error | ok |\n|---|---:|---|")
    for name, err, ok in rows:
        print(f"| {name} | {err:.2e} | {'yes' if ok else 'NO'} |")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = bench.paper_cases(device=device, scale=4 if quick else 1)
    print(f"\nNative vs reference timings ({bench.environment_line(device)}; best of {repeats})\n")
    with tqdm(total=len(cases) * 2, desc="benchmark", unit="run", file=sys.stderr) as bar:
        table = bench.run_table(cases, device=device, repeats=repeats, progress=lambda r: bar.update())
    print(bench.format_table(table))
    return [r[0] for r in rows if not r[2]]


def data_stage(out, n_patients=12, frame_size=(1536, 2048), size=1024, seed=0, workers=None):
    """Write a phantom DICOM cohort under `out`/cohort, prepare it into `out`/prepared; return the result."""
    from .data import REASONS, prepare
    from .data.cohort import make_cohort
    from .data.reasons import DESCRIPTIONS

    cohort = os.path.join(out, "cohort")
    print(f"\n## 2. Data: phantom cohort of {n_patients} patients at {frame_size[0]} x {frame_size[1]} "
          f"(JPEG DICOM, identifiers planted, bad files included) -> prepare at {size} x {size}\n")
    records = make_cohort(cohort, n_patients, seed=seed, size=frame_size, workers=workers)
    res = prepare(cohort, os.path.join(out, "prepared"), size=size, workers=workers,
                  labels=os.path.join(cohort, "cohort_truth.csv"))
    expected = {}
    for r in records:
        expected[r["expected"]] = expected.get(r["expected"], 0) + 1
    print("| outcome | files | expected by the cohort's truth |\n|---|---:|---:|")
    print(f"| accepted | {res.accepted} | {expected.get('accepted', 0)} |")
    for reason in REASONS:
        if res.excluded.get(reason) or expected.get(reason):
            print(f"| excluded: {reason} ({DESCRIPTIONS[reason]}) | {res.excluded.get(reason, 0)} | "
                  f"{expected.get(reason, 0)} |")
    print(f"\ndataset: {res.dataset}\nmanifest: {res.manifest}")
    return res


def vessels_stage(out, dataset, size=1024, workers=2):
    """Measure the prepared images and compare the normal and ERM groups; return the comparisons."""
    from .data.dataset import list_images
    from .vessels import compare, comparison_table, measure_folder

    print("\n## 4. Vessels: Hessian segmentation, vessel amount and zone-B SNR of the prepared images\n")
    rows = measure_folder(dataset, os.path.join(out, "vessel_metrics.csv"), workers=workers)
    labels = dict(list_images(dataset))
    groups = {0: [], 1: []}
    for row in rows:
        if not row["reason"] and labels.get(row["image"]) in groups:
            groups[labels[row["image"]]].append(row)
    bad = [r for r in rows if r["reason"]]
    print(f"{len(rows)} images measured ({len(bad)} with a reason), normal {len(groups[0])}, "
          f"ERM {len(groups[1])}; per-image CSV: {os.path.join(out, 'vessel_metrics.csv')}\n")
    results = []
    for col, title, image_size in (("vessel_pixels", "vessel amount (px)", size * size), ("snr", "zone-B SNR", None)):
        a = [r[col] for r in groups[0]]
        b = [r[col] for r in groups[1]]
        try:
            results.append(compare(a, b, name=title, image_size=image_size))
        except ValueError as e:
            print(f"{title}: not compared ({e})")
    if results:
        print("Normal vs ERM phantoms, in the table of the real-vs-synthetic study "
              "(`retina-fast vessels compare`):\n")
        print(comparison_table(results, groups=("normal", "ERM")))
    return results


def turing_stage(out, dataset, size=1024, seed=0):
    """Simulate the reader panel on the prepared images vs stand-in phantoms; print the analysis."""
    import numpy as np
    from PIL import Image

    from .data.dataset import list_images
    from .data.phantom import make_fundus
    from .turing.simulate import demo_tables

    print("\n## 5. Image Turing test: reader panel SIMULATED with planted group effects\n")
    real = [os.path.join(dataset, name) for name, _ in list_images(dataset)]
    # Until the generator exists, the "synthetic" arm is phantoms rendered directly at the output size.
    standin = os.path.join(out, "synthetic_standin")
    os.makedirs(standin, exist_ok=True)
    synthetic = []
    for i in range(len(real)):
        path = os.path.join(standin, f"synthetic{i:04d}.png")
        if not os.path.exists(path):
            image, _ = make_fundus(seed + 10_000 + i, size=(size, size), disease="erm" if i % 3 == 0 else None)
            Image.fromarray(np.asarray(image)).save(path + ".tmp.png")
            os.replace(path + ".tmp.png", path)
        synthetic.append(path)
    return demo_tables(real, synthetic, out_dir=os.path.join(out, "turing"), seed=seed)


def gan_stage(out, dataset, quick=False, device="auto"):
    """Train the tiny preset on the prepared images, then fine-tune on their ERM images."""
    from .gan.stage import demo_stage

    print("\n## 3. StyleGAN2-ADA: tiny preset on the prepared phantoms, then ERM transfer learning\n")
    return demo_stage(out, dataset, None, quick=quick, device=device)


def classify_stage(out, prepared, quick=False, device="auto"):
    """The tiny imbalance study: its table, ROC and metric-vs-ratio plots, Grad-CAM overlays."""
    from .classify.stage import demo_stage

    print("\n## 6. Utility: ERM-vs-normal classifiers under class imbalance (phantoms)\n")
    return demo_stage(out, prepared, quick=quick, device=device)


def run_demo(args):
    """Run the stages the arguments ask for; return the process exit code."""
    failed = []
    if "ops" in args.stages:
        failed = ops_stage(args.device, args.quick, args.repeats)
    if {"data", "gan", "vessels", "turing", "classify"} & set(args.stages):
        out = os.path.abspath(args.out)
        os.makedirs(out, exist_ok=True)
        frame, size = ((768, 1024), 512) if args.quick else ((1536, 2048), 1024)
        res = data_stage(out, n_patients=args.patients, frame_size=frame, size=size)
        if "gan" in args.stages:
            gan_stage(out, res.dataset, quick=args.quick, device=args.device)
        if "vessels" in args.stages:
            vessels_stage(out, res.dataset, size=size)
        if "turing" in args.stages:
            turing_stage(out, res.dataset, size=size)
        if "classify" in args.stages:
            classify_stage(out, os.path.dirname(res.dataset), quick=args.quick, device=args.device)
    if failed:
        print(f"\nSELF-CHECK FAILED: {failed}")
        return 1
    return 0
