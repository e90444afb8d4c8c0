"""The fault cases, each a test: the cases live once, in scripts/fault_drill.py, which also
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


def test_drill_table_keeps_one_row_per_case_and_fails_on_any_failure(capsys):
    rows = [("good", "ok", "fine", True),
            ("broken", "exit 2", "drill error RuntimeError: a | b\n\tsize mismatch\n", False)]
    assert fault_drill.print_table(rows) is False
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| good | ok | fine | yes |"
    assert lines[3] == "| broken | exit 2 | drill error RuntimeError: a / b size mismatch | NO |"
    assert lines[4] == "1 passed, 1 failed: broken"
    assert fault_drill.print_table(rows[:1]) is True


def test_drill_exits_nonzero_when_a_case_fails_or_raises(monkeypatch, capsys):
    def exits(_root):
        raise SystemExit(3)                      # a case that ends the process must not end the drill
    monkeypatch.setattr(fault_drill, "CASES", [
        fault_drill.Case("passes", "-", lambda root: fault_drill.Outcome("ok", True)),
        fault_drill.Case("exits", "-", exits)])
    monkeypatch.setattr(sys, "argv", ["fault_drill.py"])
    with pytest.raises(SystemExit) as stop:
        fault_drill.main_cli()
    out = capsys.readouterr().out
    assert stop.value.code == 1 and "| exits | - | drill error SystemExit: 3 | NO |" in out
    assert "1 passed, 1 failed: exits" in out
