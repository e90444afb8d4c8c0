"""From an experiment script to runs: merge the script's values with command-line overrides,
expand lists into a grid (one run per combination), and train or test each run.

    # common.py: the folder's shared block
    common = dict(dataset="ml-100k", max_seq_len=20, lr=[1e-3, 1e-4], ...)
    # train_id.py                                            # test_id.py
    params = dict(shared_block(__file__), item_tower="id")   from train_id import params
    main(params, "train", __file__)                          main(params, "test", __file__)

Every train script of an experiment folder starts from the folder's shared block (data, L, sizes,
learning rates, patience, epochs, seed) and adds only what it compares (item tower, encoder,
fusion), so the two sides of a comparison run with the same values (tests/test_shared_blocks.py).

Runs are written to ``<script folder>/runs/<label>/``. The label is derived from the values
(`morec.config.run_label`) unless ``--label NAME`` is given, so train and test scripts given the
same values (or the same --label) find the same folder. Bad input ends with one line on stderr
and exit code 2.
"""
from __future__ import annotations

import itertools
import os
import re
import runpy
import sys
from pathlib import Path

from morec.distributed import check_world, finish_world, leave_world
from morec.config import make_config, parse_overrides, run_label, run_setting
from morec.errors import InputError, Preempted
from morec.train import test, train


def shared_block(script_file: str) -> dict:
    """The values every script of an experiment folder shares: the `common` dict of the
    common.py next to `script_file`, as a new dict.

    The file is run by its path, not imported: tests and tools load the scripts of several folders
    into one process, where an `import common` would be cached in sys.modules under one name and
    hand the first folder's block to every other folder (and could pick up any other module named
    common on sys.path)."""
    path = Path(script_file).resolve().parent / "common.py"
    if not path.is_file():
        raise InputError(f"{path} not found: every experiment folder holds its shared values there")
    block = runpy.run_path(str(path), run_name="common").get("common")
    if not isinstance(block, dict):
        raise InputError(f"{path} defines no `common = dict(...)` block")
    return dict(block)


def expand_grid(values: dict) -> list[dict]:
    """{'lr': [1, 2], 'd': 3} -> [{'lr': 1, 'd': 3}, {'lr': 2, 'd': 3}] (order of the dict)."""
    keys = list(values)
    choices = [v if isinstance(v, list) else [v] for v in values.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def value_sources(err: InputError, params: dict, argv: list[str], script_file: str) -> str:
    """Where the refused values that the command line did not give come from (the script's block
    or its folder's common.py), so that the user learns which flag to override: '' if none."""
    given = parse_overrides(argv)
    named = dict.fromkeys(re.findall(r"--([a-z][a-z0-9_]*)", str(err)))
    from_script = [name for name in named if name in params and name not in given]
    if not from_script:
        return ""
    try:
        common = shared_block(script_file)
    except InputError:
        common = {}
    script = Path(script_file).name
    where = [f"--{name} {params[name]} from "
             + (f"{Path(script_file).parent.name}/common.py" if name in common and common[name] == params[name]
                else script) for name in from_script]
    return f" [not on the command line: {', '.join(where)}; an override on the command line wins]"


def run_dirs(params: dict, script_file: str, argv: list[str]) -> list[tuple]:
    """(Config, run folder) for every grid point of the script's values plus overrides."""
    values = {**params, **parse_overrides(argv)}
    empty = [key for key, value in values.items() if value == []]
    if empty:
        raise InputError(f"the grid of {', '.join(empty)} is an empty list: give at least one value")
    try:
        configs = [make_config(point) for point in expand_grid(values)]   # every point valid before any run
    except InputError as err:
        raise InputError(f"{err}{value_sources(err, params, argv, script_file)}") from None
    runs = []
    for index, cfg in enumerate(configs):
        runs_root = Path(cfg.runs_dir) if cfg.runs_dir else Path(script_file).resolve().parent / "runs"
        label = cfg.label or run_label(cfg)
        if cfg.label and len(configs) > 1:
            label = f"{cfg.label}-{index}"
        if "/" in label or label in ("", ".", ".."):
            given = "--label" if cfg.label else "the label derived from the values,"
            raise InputError(f"{given} {label!r} must be a plain folder name")
        runs.append((cfg, runs_root / label))
    check_distinct_folders(runs)
    return runs


def check_distinct_folders(runs: list[tuple]) -> None:
    """Two grid points with the same run folder would write into each other's files."""
    seen: dict[Path, int] = {}
    for index, (_, run_dir) in enumerate(runs):
        if run_dir in seen:
            raise InputError(f"grid points {seen[run_dir] + 1} and {index + 1} are the same run ({run_dir}); "
                             "remove the repeated value from the grid")
        seen[run_dir] = index


def torchrun_command(runs: list[tuple], script_file: str, argv: list[str]) -> list[str] | None:
    """The torchrun command that restarts this script on nproc_per_node x nnodes processes, or
    None when one process is asked for or this process is already one of torchrun's."""
    cfg = runs[0][0]
    if cfg.nproc_per_node * cfg.nnodes == 1 or "LOCAL_RANK" in os.environ:
        return None
    if any((c.nproc_per_node, c.nnodes, c.rdzv_endpoint) != (cfg.nproc_per_node, cfg.nnodes, cfg.rdzv_endpoint)
           for c, _ in runs):
        raise InputError("nproc_per_node / nnodes / rdzv_endpoint cannot vary within one grid")
    rendezvous = ["--standalone"]
    if cfg.nnodes > 1:
        if not cfg.rdzv_endpoint:
            raise InputError("nnodes > 1 needs --rdzv_endpoint HOST:PORT (the same on every node)")
        rendezvous = ["--rdzv_backend", "c10d", "--rdzv_endpoint", cfg.rdzv_endpoint,
                      "--rdzv_id", os.environ.get("SLURM_JOB_ID", "morec")]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.nproc_per_node),
            "--nnodes", str(cfg.nnodes), *rendezvous, str(Path(script_file).resolve()), *argv]


def main(params: dict, mode: str, script_file: str, argv: list[str] | None = None) -> list[dict]:
    """Entry point of every train_*/test_* script. mode: 'train' or 'test'."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        runs = run_dirs(params, script_file, argv)
        command = torchrun_command(runs, script_file, argv)
        if command:                  # not yet under torchrun: become torchrun (signals then reach it)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(command[0], command)
        for cfg, _ in runs:          # a bare torchrun launch: its ranks must be what the values say
            check_world(run_setting(cfg)["world_size"], cfg.inbatch_chunk)
        results = []
        for cfg, run_dir in runs:
            results.append(train(cfg, run_dir) if mode == "train" else test(cfg, run_dir))
        finish_world()               # under torchrun: every rank done before any tears down
        return results
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Preempted as stop:
        print(str(stop), file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        print("interrupted; continue with the same command and --resume", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        leave_world()
