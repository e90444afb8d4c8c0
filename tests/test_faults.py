"""Issue 7's fault cases, each a test: the cases live once, in scripts/fault_drill.py, which also
prints them as a table. Kill/resume cases compare with an uninterrupted run, bit for bit."""
import importlib.util
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("fault_drill", REPO / "scripts" / "fault_drill.py")
fault_drill = importlib.util.module_from_spec(spec)
sys.modules["fault_drill"] = fault_drill          # dataclasses look their module up there
spec.loader.exec_module(fault_drill)


@pytest.mark.parametrize("case", fault_drill.CASES, ids=lambda case: case.name)
def test_fault_case(case, tmp_path):
    outcome = case.run(tmp_path)
    assert outcome.passed, f"{case.name}: expected {case.expected}; observed {outcome.observed}"
