"""Demo stage of `retina-fast demo`: the native ops' self-check and native-vs-reference timings."""
import sys

__all__ = ["demo_stage"]


def demo_stage(device="auto", quick=False, repeats=2):
    """Print the op self-check and native-vs-reference table; return the names of failed checks."""
    from tqdm import tqdm

    from retina_fast.device import resolve_device

    from . import NATIVE_AVAILABLE, bench, has_cuda_kernels
    from .selfcheck import run_selfcheck

    print(f"## 1. Ops: native extension {'built' if NATIVE_AVAILABLE else 'MISSING'}"
          f"{' with CUDA kernels' if has_cuda_kernels() else ' (CPU kernels)'}\n")
    print("Self-check (native vs reference, values and gradients, float64)\n")
    rows = run_selfcheck()
    print("| check | max abs error | ok |\n|---|---:|---|")
    for name, err, ok in rows:
        print(f"| {name} | {err:.2e} | {'yes' if ok else 'NO'} |")
    device = resolve_device(device)
    cases = bench.paper_cases(device=device, scale=4 if quick else 1)
    print(f"\nNative vs reference timings ({bench.environment_line(device)}; best of {repeats})\n")
    with tqdm(total=len(cases) * 2, desc="benchmark", unit="run", file=sys.stderr) as bar:
        table = bench.run_table(cases, device=device, repeats=repeats, progress=lambda r: bar.update())
    print(bench.format_table(table))
    return [r[0] for r in rows if not r[2]]
