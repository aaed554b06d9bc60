"""The literature's Set5 bicubic baselines (benchmarks/bicubic_set5.py), when Set5 is present."""

import importlib.util
import os

import pytest

SET5 = os.environ.get("PNEN_SET5", "/work/shared/datasets/Set5")
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bicubic_set5.py")


@pytest.mark.skipif(not os.path.isdir(SET5),
                    reason=f"Set5 not found at {SET5} (set PNEN_SET5 to its folder to run)")
def test_bicubic_set5_within_003_db_of_the_literature(capsys):
    spec = importlib.util.spec_from_file_location("bicubic_set5", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    assert benchmark.main([SET5]) == 0, capsys.readouterr().out
