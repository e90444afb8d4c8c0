"""The training runtime stays apart from the dataset tooling: importing morec.train loads no
morec.tools module (LMDB builder, legacy converter, converters, cards, posters, references)."""
import ast
import subprocess
import sys

from conftest import REPO


def test_training_imports_no_tooling():
    code = ("import sys, morec.train, morec.features, morec.data.images\n"
            "print(sorted(name for name in sys.modules if name.startswith('morec.tools')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_runtime_module_imports_tooling_at_the_top():
    runtime = [p for p in (REPO / "morec").rglob("*.py") if "tools" not in p.relative_to(REPO / "morec").parts]
    offenders = [f"{path.relative_to(REPO)}:{node.lineno}" for path in runtime
                 for node in ast.parse(path.read_text()).body
                 if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("morec.tools")
                 or isinstance(node, ast.Import) and any(a.name.startswith("morec.tools") for a in node.names)]
    assert runtime and offenders == []
