"""`retina-fast <stage> ...`: the command line. Thin: parses arguments, calls the stage's function."""
import argparse
import sys


def _demo(args):
    import torch
    from tqdm import tqdm

    from .ops import NATIVE_AVAILABLE, bench, has_cuda_kernels
    from .ops.selfcheck import run_selfcheck

    print(f"retina_fast demo: native extension {'built' if NATIVE_AVAILABLE else 'MISSING'}"
          f"{' with CUDA kernels' if has_cuda_kernels() else ' (CPU kernels)'}")
    print("\n## Op self-check (native vs reference, values and gradients, float64)\n")
    rows = run_selfcheck()
    print("| check | max abs error | ok |\n|---|---:|---|")
    for name, err, ok in rows:
        print(f"| {name} | {err:.2e} | {'yes' if ok else 'NO'} |")
    failed = [r for r in rows if not r[2]]

    device = "cuda" if (args.device == "auto" and torch.cuda.is_available()) else (
        "cpu" if args.device == "auto" else args.device)
    cases = bench.paper_cases(device=device, scale=4 if args.quick else 1)
    print(f"\n## Native vs reference timings ({bench.environment_line(device)}; best of {args.repeats})\n")
    with tqdm(total=len(cases) * 2, desc="benchmark", unit="run", file=sys.stderr) as bar:
        table = bench.run_table(cases, device=device, repeats=args.repeats, progress=lambda r: bar.update())
    print(bench.format_table(table))
    if failed:
        print(f"\nSELF-CHECK FAILED: {[r[0] for r in failed]}")
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="retina-fast", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    demo = sub.add_parser("demo", help="op self-check and the native-vs-reference benchmark table")
    demo.add_argument("--quick", action="store_true", help="benchmark shapes at 1/4 resolution")
    demo.add_argument("--repeats", type=int, default=2, help="timed repeats per case (best is kept)")
    demo.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
