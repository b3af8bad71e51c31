"""Demo stage of `retina-fast demo`: a phantom DICOM cohort through `prepare`."""
import os

__all__ = ["demo_stage"]


def demo_stage(out, n_patients=12, frame_size=(1536, 2048), size=1024, seed=0, workers=None):
    """Write a phantom DICOM cohort under `out`/cohort, prepare it into `out`/prepared; return the result.

    Prints the accepted/excluded counts beside the counts the cohort's truth expects.
    """
    from .cohort import make_cohort
    from .prepare import prepare
    from .reasons import DESCRIPTIONS, REASONS

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
