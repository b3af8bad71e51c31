"""GPU check of the classifier's CUDA path (AMP bf16 + channels_last), for the device machine.

    python benchmarks/classify_gpu_smoke.py [--backend torch|dali] [--compile [MODE]]

1. `augment_batch` on a CUDA tensor equals the CPU result (same draws; float32, atol 1e-4).
2. `train_classifier` (ResNet18, 64 px, 3 epochs, AMP bf16, channels_last) on phantom normal vs
   ERM images, then `predict` on the GPU and, from the saved checkpoint, on the CPU in float32:
   the two agree within 0.05 (bf16 rounding) and the trained model separates the classes.
Prints one line per check and exits 1 on a failure; without a CUDA GPU it says so and exits 0.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="torch", choices=["torch", "dali"])
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="train with TrainConfig(compile=True or MODE, e.g. reduce-overhead)")
    args = p.parse_args(argv)
    import numpy as np
    import torch
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 0
    from retina_fast.classify.metrics import auc_ci
    from retina_fast.classify.stage import make_phantom_pool
    from retina_fast.data.pool import read_pool
    from retina_fast.classify.train import (
        TrainConfig,
        augment_batch,
        load_classifier,
        predict,
        train_classifier,
    )

    ok = True
    x = torch.rand(8, 3, 64, 64)
    a = augment_batch(x, seed=3, epoch=1, step=2)
    b = augment_batch(x.cuda(), seed=3, epoch=1, step=2).cpu()
    err = float((a - b).abs().max())
    ok &= err < 1e-4
    print(f"augment_batch cuda vs cpu: max |diff| {err:.2e} {'OK' if err < 1e-4 else 'FAIL'}")

    with tempfile.TemporaryDirectory() as tmp:
        pool, _ = make_phantom_pool(os.path.join(tmp, "pool"), 30, 30, seed=0)
        items, _ = read_pool(pool)
        tr, va, te = items[0::3], items[1::3], items[2::3]
        cfg = TrainConfig(outdir=os.path.join(tmp, "run"), arch="resnet18", size=64, epochs=3, device="cuda",
                          backend=args.backend, workers=2, compile=args.compile)
        res = train_classifier(tr, va, cfg)
        p_gpu = predict(res.model, te, backend=args.backend)
        p_cpu = predict(load_classifier(res.checkpoint, "cpu"), te)
        y = np.array([it.label for it in te])
        diff = float(np.abs(p_gpu - p_cpu).max())
        auc = auc_ci(y, p_gpu)[0]
        print(f"train_classifier on cuda ({args.backend} loader{f', compile={args.compile}' if args.compile else ''}): "
              f"{res.history[-1]['images_per_s']:.0f} img/s, "
              f"best epoch {res.best_epoch + 1}, test AUC {auc:.3f}")
        print(f"predict cuda (bf16) vs cpu (fp32): max |diff| {diff:.3f} {'OK' if diff < 0.05 else 'FAIL'}")
        ok &= diff < 0.05
    print("ALL OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
