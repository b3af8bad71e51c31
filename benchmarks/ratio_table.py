"""Print the native-vs-reference ratio table on the 1024 x 1024 generator's shapes.

    .venv/bin/python benchmarks/ratio_table.py [--device cuda] [--dtype float16] [--repeats 3] [--quick]

Native and reference run interleaved in one process (see retina_fast.ops.bench); the best time of
each is reported. On CPU, torch's THP_MEM_ALLOC_ENABLE changes the reference's numbers a lot (its
multi-GB temporaries fault 4 KiB pages); the header line says which way this run was made.
"""
import argparse
import sys

import torch

from retina_fast.ops import bench


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "float64"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="shapes at 1/4 resolution")
    p.add_argument("--only", default="", help="substring filter on the op name")
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    cases = [c for c in bench.paper_cases(a.device, dtype, scale=4 if a.quick else 1) if a.only in c.name]
    print(f"# {bench.environment_line(a.device)}; best of {a.repeats} after {a.warmup} warm-up", flush=True)
    rows = bench.run_table(cases, device=a.device, dtype=dtype, repeats=a.repeats, warmup=a.warmup,
                           progress=lambda r: print(f"  {r['op']} {r['mode']}: {r['speedup']:.2f}x",
                                                    file=sys.stderr, flush=True))
    print(bench.format_table(rows))


if __name__ == "__main__":
    main()
