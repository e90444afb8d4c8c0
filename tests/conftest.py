"""Shared fixtures: tiny hand-made data sets whose right split is known, and script runners."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The tests' models are tiny: one thread each is fastest, and several threads on a shared
# machine can slow a step down a hundredfold (spinning OpenMP workers).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)


def write_dataset(folder: Path, items: list[str], users: list[str]) -> Path:
    """Write items.tsv and users.tsv (one entry per line, given verbatim) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.tsv").write_text("".join(line + "\n" for line in items), encoding="utf-8")
    (folder / "users.tsv").write_text("".join(line + "\n" for line in users), encoding="utf-8")
    return folder


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """root_data_dir holding data set 'tiny': 8 items, 4 users (one too short), L = 3."""
    items = [f"i{k}\ttitle {k}\tabstract {k}" for k in range(1, 9)]       # i1..i8, file order
    users = [
        "u1\ti1 i2 i3 i4 i5 i6 i7",          # 7 items > L+3 = 6: cut to i2..i7
        "u2\ti3 i1 i3 i5 i6",                # repeat consumption of i3
        "u3\ti1 i2",                         # shorter than min_seq_len 5: dropped
        "u4\ti6 i5 i2 i1 i3",
    ]
    write_dataset(tmp_path / "tiny", items, users)
    return tmp_path


def run_in_process(folder: str, mode: str, *args: str, capsys=None):
    """Do what `python FOLDER/{mode}_id.py ARGS` does, inside this process (no torch import cost).

    Returns (exit code, stdout, stderr); a test script is its train script's params + main().
    """
    from morec.launch import main
    params = runpy.run_path(str(REPO / folder / "train_id.py"), run_name="params_only")["params"]
    code = 0
    try:
        main(params, mode, str(REPO / folder / f"{mode}_id.py"), list(args))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 600):
    """Run an experiment script like a user would, from another working directory."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd or "/",
                          capture_output=True, text=True, timeout=timeout, env=env)
