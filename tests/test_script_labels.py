"""Every experiment script keeps its run labels, so run folders trained before a change of the
scripts' layout are found, resumed and tested as before.

tests/data/script_labels.json was written from the scripts as they were before they shared one
block per experiment folder; regenerate it only when a label is meant to change.
"""
import json
import runpy

import pytest

from conftest import REPO
from morec.launch import run_dirs

EXPECTED = json.loads((REPO / "tests" / "data" / "script_labels.json").read_text())


def experiment_scripts() -> list[str]:
    found = []
    for script in REPO.glob("**/train_*.py"):
        rel = script.relative_to(REPO)
        if rel.parts[0] not in ("scripts", "tests") and "runs" not in rel.parts:
            found.append(str(rel))
    return sorted(found)


def test_the_label_list_names_every_experiment_script():
    assert experiment_scripts() == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_run_labels_are_unchanged(script):
    params = runpy.run_path(str(REPO / script), run_name="params_only")["params"]
    labels = [run_dir.name for _, run_dir in run_dirs(params, str(REPO / script), [])]
    assert labels == EXPECTED[script]
