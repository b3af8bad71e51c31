"""Small version of benchmarks/turing_load.py: concurrent readers against a real uvicorn process.

8 readers x 20 answers on 64-px images, SQLite WAL, traffic to 127.0.0.1 only. Asserts
correctness (nothing lost, nothing duplicated, double posts land once), never speed.
"""
import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "turing_load", Path(__file__).resolve().parents[2] / "benchmarks" / "turing_load.py")
turing_load = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(turing_load)


@pytest.mark.slow
def test_concurrent_readers_lose_and_duplicate_nothing(tmp_path):
    res = turing_load.run_load(n_readers=8, n_answers=20, side=64, dup_every=5, workdir=tmp_path,
                               timeout=30.0, max_wall_s=120.0, verbose=False)
    assert res["errors"] == [] and res["hung_threads"] == 0, turing_load.format_result(res)
    assert res["answers_sent"] == res["answers_exported"] == 8 * 20
    assert res["lost"] == res["unexpected"] == res["duplicated"] == res["client_dup_sent"] == 0
    assert res["complete"]                                   # every reader: positions 0..19 exactly once
    assert res["dup_pairs_ok"] == 8 * 4 and res["dup_pairs_bad"] == 0  # positions 0, 5, 10, 15
    assert res["server_ms_min"] >= 0
