"""Exact k-NN of the privacy audit (`retina_fast.audit.knn.exact_knn`): faiss-cpu vs chunked torch.

    .venv/bin/python benchmarks/privacy_knn.py                      # 10,000 x 100,000, 2048-D, k 5
    .venv/bin/python benchmarks/privacy_knn.py --queries 1000 --reference 20000   # reduced size

Random float32 features (the FID Inception's 2048 dimensions). Prints one row per backend: seconds,
and, when run below the full size, the seconds extrapolated to 10,000 x 100,000 (the work is
queries x reference x dimensions: linear in each). Also checks that both backends return the same
neighbours.
"""
import argparse
import os
import time

import numpy as np
import torch

from retina_fast.audit.knn import exact_knn, faiss_available

FULL = (10_000, 100_000)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=FULL[0])
    ap.add_argument("--reference", type=int, default=FULL[1])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    r = rng.standard_normal((args.reference, args.dim), dtype=np.float32)
    scale = FULL[0] * FULL[1] / (args.queries * args.reference)
    print(f"exact k-NN, k {args.k}: {args.queries} queries x {args.reference} reference x {args.dim}-D float32; "
          f"{os.cpu_count()} CPUs, torch {torch.get_num_threads()} threads\n")
    print("| backend | seconds | extrapolated to 10,000 x 100,000 (s) |\n|---|---:|---:|")
    results = {}
    for backend in (["faiss"] if faiss_available() else []) + ["torch"]:
        t = time.perf_counter()
        results[backend] = exact_knn(q, r, args.k, backend=backend)
        s = time.perf_counter() - t
        ext = "(measured at full size)" if scale == 1 else f"{s * scale:.0f} (x{scale:g}, EXTRAPOLATED)"
        print(f"| {backend} | {s:.2f} | {ext} |")
    if len(results) == 2:
        same = np.array_equal(results["faiss"][1], results["torch"][1])
        print(f"\nfaiss and torch neighbours identical: {same}")


if __name__ == "__main__":
    main()
