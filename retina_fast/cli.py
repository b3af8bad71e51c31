"""`retina-fast <stage> ...`: the command line. Thin: parses arguments, calls the stage's function."""
import argparse
import importlib
import os
import sys

from .cli_types import positive_int

# Each stage owns its sub-commands: the module exposes `register(subparsers)`.
STAGE_CLIS = ("retina_fast.data.cli", "retina_fast.gan.cli", "retina_fast.metrics.cli", "retina_fast.vessels.cli",
              "retina_fast.classify.cli", "retina_fast.turing.cli", "retina_fast.audit.cli")


STAGES = ("ops", "data", "gan", "vessels", "turing", "classify")


def _demo(args):
    from .demo import run_demo
    return run_demo(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="retina-fast", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    demo = sub.add_parser("demo", help="every stage end to end on generated data "
                                       "(ops, data, gan, vessels, turing, classify)")
    demo.add_argument("--quick", action="store_true",
                      help="benchmark shapes at 1/4 resolution, phantom frames at 768 x 1024 -> 512")
    demo.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                      help="stages to run (default: all)")
    demo.add_argument("--out", default="demo-output", help="folder for the cohort, dataset and CSVs")
    demo.add_argument("--patients", type=positive_int, default=12, help="phantom patients in the cohort (default 12)")
    demo.add_argument("--repeats", type=positive_int, default=2, help="timed repeats per case (best is kept)")
    demo.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    demo.set_defaults(func=_demo)
    for name in STAGE_CLIS:
        importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        # Bad input (a missing file, a bad argument value) is reported in one line naming it, as
        # argparse does for a bad flag; RETINA_FAST_TRACEBACK=1 shows where it was raised.
        if os.environ.get("RETINA_FAST_TRACEBACK"):
            raise
        parser.exit(2, f"retina-fast {args.stage}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
