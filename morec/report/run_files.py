"""A tested run folder, read and checked: Run holds its config.json (over today's defaults) and
test_metrics.json; load_runs finds the runs under some folders and refuses a run whose files do
not agree (value types; its test against its current checkpoint_best.pt and test_ranks.npz, the
digests of morec/run_identity.py). per_user gives a run's per-user HR@10 / NDCG@10 from its
test_ranks.npz, run_cost its training cost from metrics.jsonl (morec/cost.py). What the table
does with them: scripts/results_table.py's docstring."""
from __future__ import annotations

import json
import math
import os
import sys
import zipfile
import zlib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from morec.config import Config
from morec.errors import InputError
from morec.evaluate import per_user_metrics
from morec.run_identity import CHECKPOINT_KEY, RANKS_CHECKPOINT, RANKS_KEY, checkpoint_check, ranks_digest

METRICS = ("HR@10", "NDCG@10")
DEFAULT_SETTING = {"world_size": 1, "precision": "fp32"}


@dataclass
class Run:
    dir: Path
    config: dict          # config.json over today's defaults, "setting" filled, "ties" of the test
    test: dict            # test_metrics.json
    data: dict | None = None        # sha256 of the data files it read {"users", "items"[, "image_keys"]}; None: not recorded
    checkpoint: str | None = None   # sha256 of its checkpoint_best.pt now (None: no such file)
    unchecked: str = ""             # why its test results could not be checked against its files ("" = checked)

    @property
    def label(self) -> str:
        return self.dir.name


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} cannot be read as JSON ({err}); delete the run folder or re-run "
                         "its test script") from None


def config_files(folder: Path) -> list[Path]:
    """The config.json of `folder` when it is a run folder, else every config.json under it,
    following links to folders (a folder of links to run folders is a common way to gather runs);
    a folder reached again through a link is not entered twice, so a link loop ends, but its own
    config.json is kept for once_each to report."""
    if (folder / "config.json").is_file():
        return [folder / "config.json"]
    found, entered = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        if "config.json" in files:
            found.append(Path(root) / "config.json")
        real = os.path.realpath(root)
        if real in entered:
            dirs[:] = []
        entered.add(real)
    return found


def find_run_dirs(folders: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """(tested run folders, trained-but-untested run folders) under `folders`, sorted."""
    tested, untested = set(), set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give experiment folders, runs folders or run folders")
        for config in config_files(folder):
            run = config.parent
            if (run / "test_metrics.json").is_file():
                tested.add(run)
            elif (run / "metrics.jsonl").is_file() or (run / "checkpoint_best.pt").is_file():
                untested.add(run)
    return sorted(tested), sorted(untested)


def load_run(run_dir: Path) -> Run:
    defaults = {f.name: f.default for f in fields(Config)}
    saved = read_json(run_dir / "config.json")
    test = read_json(run_dir / "test_metrics.json")
    if not isinstance(saved, dict) or not isinstance(test, dict) or not isinstance(test.get("test"), dict):
        raise InputError(f"{run_dir}: config.json or test_metrics.json is not a run's file "
                         "(expected objects, test_metrics.json with a 'test' entry)")
    missing = [m for m in METRICS if m not in test["test"]]
    if missing:
        raise InputError(f"{run_dir / 'test_metrics.json'} lacks {', '.join(missing)}; re-run the test script")
    check_config_types(run_dir / "config.json", saved)
    check_test_types(run_dir / "test_metrics.json", test)
    data = data_files(saved.pop("data_identity", None))   # digests of the data read (morec.data.identity), not a setting
    source = saved.pop("init_source", None)   # --init_from: the source run, named apart from its seed
    if isinstance(source, dict) and saved.get("init_from"):
        saved["init_from"] = f"{source.get('dataset')} run {source.get('values_sha1')}"
    config = {**defaults, **saved, "setting": {**DEFAULT_SETTING, **(saved.get("setting") or {})},
              "ties": test.get("ties", "optimistic")}
    run = Run(run_dir, config, test, data)
    check_test_files(run)
    return run


# What a table checks of each run (principle: a number in a table is the number of the files it
# claims): value types, its test against its current checkpoint and test_ranks.npz
# (morec.run_identity), and across runs (grouping.check_runs) that each trained run counts once
# and that runs of one data set name read the same data.

def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_error(path: Path, key: str, value, expected: str, fix: str) -> InputError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return InputError(f"{path}: {key} holds {shown} (a {type(value).__name__}), not {expected}; {fix}")


def check_config_types(path: Path, saved: dict) -> None:
    """Each known value of config.json has its Config type (an int where a float is expected is fine)."""
    fix = "restore the file or retrain the run"
    for field in fields(Config):
        if field.name not in saved or field.default is MISSING or field.default is None:
            continue
        value, expected = saved[field.name], type(field.default)
        fits = is_number(value) if expected is float else \
            isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if not fits:
            article = {int: "an int", float: "a number"}.get(expected, f"a {expected.__name__}")
            raise type_error(path, field.name, value, article, fix)
    setting = saved.get("setting")
    if setting is not None and not (isinstance(setting, dict) and isinstance(setting.get("world_size", 1), int)
                                    and isinstance(setting.get("precision", ""), str)):
        raise type_error(path, "setting", setting, "an object {world_size: int, precision: str}", fix)
    identity = saved.get("data_identity")
    if identity is not None and not (isinstance(identity, dict) and all(
            isinstance(identity.get(k), dict) and isinstance(identity[k].get("sha256"), str) for k in ("users", "items"))):
        raise type_error(path, "data_identity", identity, "the data digests a run records (morec.data.identity)", fix)


def check_test_types(path: Path, test: dict) -> None:
    """The values of test_metrics.json a table reads have their types (metrics: shares in [0, 1])."""
    fix = "re-run the run's test script"
    for m in METRICS:
        value = test["test"][m]
        if not (is_number(value) and 0.0 <= value <= 1.0):
            raise type_error(path, f"test.{m}", value, "a share in [0, 1]", fix)
    for key in ("num_users", "num_items", "best_epoch", "repeat_count"):
        if key in test and not (isinstance(test[key], int) and not isinstance(test[key], bool)):
            raise type_error(path, key, test[key], "an int", fix)
    for key in ("ties", RANKS_KEY):
        if key in test and not isinstance(test[key], str):
            raise type_error(path, key, test[key], "a str", fix)
    if test.get("per_user") is not None and not isinstance(test["per_user"], str):
        raise type_error(path, "per_user", test["per_user"], "a file name", fix)
    record = test.get(CHECKPOINT_KEY)
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                                   and isinstance(record.get("bytes"), int) and isinstance(record.get("file", ""), str)):
        raise type_error(path, CHECKPOINT_KEY, record, "an object {file, bytes, sha256}", fix)
    cold = test.get("cold_start")
    if cold is None:
        return
    if not (isinstance(cold, dict) and isinstance(cold.get("metrics") or {}, dict)):
        raise type_error(path, "cold_start", cold, "an object with metrics", fix)
    for key in ("below", "users"):
        if not isinstance(cold.get(key), int) or isinstance(cold.get(key), bool):
            raise type_error(path, f"cold_start.{key}", cold.get(key), "an int", fix)
    for m, value in (cold.get("metrics") or {}).items():
        if m in METRICS and not (is_number(value) and 0.0 <= value <= 1.0):
            raise type_error(path, f"cold_start.metrics.{m}", value, "a share in [0, 1]", fix)


def data_files(identity: dict | None) -> dict | None:
    """The sha256 of the data files a run read (its users and items files, the image LMDB's key
    set), from config.json's data_identity; None for a run made before that record."""
    if not identity:
        return None
    return {k: identity[k]["sha256"] for k in ("users", "items", "image_keys") if isinstance(identity.get(k), dict)}


def check_test_files(run: Run) -> None:
    """Refuse a run whose checkpoint_best.pt changed after its test, or whose test_ranks.npz is not
    the file that test wrote (unreadable, truncated, another run's); note what cannot be checked."""
    run.checkpoint, change = checkpoint_check(run.dir, run.test)
    if change:
        raise InputError(f"{change}; its test_metrics.json is of the old checkpoint: re-run the run's test "
                         f"script (test_*.py --label {run.dir.name}), or restore the checkpoint")
    if change is None:
        run.unchecked = ("tested before test_metrics.json recorded the checkpoint: their test cannot be checked "
                         "against checkpoint_best.pt (re-run their test script to record it)"
                         if CHECKPOINT_KEY not in run.test else
                         "without checkpoint_best.pt (deleted?): their test cannot be checked against the checkpoint "
                         "it evaluated")
    per_user_cached(run)                                         # read and check it now, used or not


def load_runs(folders: list[str | Path], quiet: bool = False) -> list[Run]:
    """Every tested run under `folders`, each folder once (a link or a folder given twice counts
    once); the untested ones, the folders reached twice and the runs whose test cannot be checked
    against their files are listed on stderr unless quiet."""
    tested, untested = find_run_dirs(folders)
    tested, twice = once_each(tested)
    runs = [load_run(d) for d in tested]
    if not quiet:
        notes = [(f"left out {len(untested)} run(s) without test_metrics.json (run their test script)", untested),
                 (f"counted once: {len(twice)} run folder(s) reached twice (a link, or a folder given twice)",
                  [f"{again} is {first}" for again, first in twice])]
        reasons = sorted({r.unchecked for r in runs if r.unchecked})
        for why in reasons:
            unchecked = [r.dir for r in runs if r.unchecked == why]
            notes.append((f"warning: {len(unchecked)} run(s) {why}", unchecked))
        for text, items in notes:
            if items:
                print(f"{text}: " + ", ".join(map(str, items[:5])) + (" ..." if len(items) > 5 else ""), file=sys.stderr)
    return runs


def once_each(run_dirs: list[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """(the folders, each real folder once, named by its real path where given; [(folder left out,
    the same folder kept)]), in the order of `run_dirs`."""
    kept, twice = {}, []
    for run_dir in run_dirs:
        real = run_dir.resolve()
        if real not in kept:
            kept[real] = run_dir
        elif run_dir == real:                        # the real path rather than a link's
            twice.append((kept[real], run_dir))
            kept[real] = run_dir
        else:
            twice.append((run_dir, kept[real]))
    return list(kept.values()), twice


def per_user(run: Run) -> pd.DataFrame | None:
    """The run's per-user test HR@10 and NDCG@10 in percent, indexed by user name (None when the
    run was tested before test_ranks.npz existed). Refuses a file that does not match the run's
    test_metrics.json: unreadable or truncated, of another test or run (the digests its test recorded,
    morec.run_identity; for older tests the metrics it must reproduce)."""
    name = run.test.get("per_user")
    if not name:
        return None
    path = run.dir / name
    try:
        saved = np.load(path, allow_pickle=False)
        if not isinstance(saved, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not the test's .npz archive")
        with saved:
            h, t, users = saved["h"], saved["t"], saved["user"]
            repeat = saved["repeat"] if "repeat" in saved.files else np.zeros(len(h), dtype=bool)
            tested = str(saved[RANKS_CHECKPOINT]) if RANKS_CHECKPOINT in saved.files else None
    except (OSError, ValueError, KeyError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        why = "not an .npz archive: refused unread" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
        raise InputError(f"{path} cannot be read ({why}); re-run the run's test script") from None
    fix = "re-run the run's test script"
    if not all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in (h, t)) or users.ndim != 1:
        raise InputError(f"{path} does not hold the test's per-user arrays (h, t integer, user names); {fix}")
    record = run.test.get(CHECKPOINT_KEY)
    if RANKS_KEY in run.test and ranks_digest(h, t, users, repeat) != run.test[RANKS_KEY]:
        raise InputError(f"{path} is not the file its test wrote (its arrays differ from the digest "
                         f"{run.dir / 'test_metrics.json'} records: another run's file, or changed since); {fix}")
    if isinstance(record, dict) and tested is not None and tested != record.get("sha256"):
        raise InputError(f"{path} was written by the test of another checkpoint (sha256 {tested[:12]}) than the one "
                         f"{run.dir / 'test_metrics.json'} records ({str(record.get('sha256'))[:12]}); {fix}")
    if len(h) != run.test.get("num_users", len(h)) or not (len(h) == len(t) == len(users)) or (h < 0).any() or (t < 0).any():
        raise InputError(f"{path} does not hold one (h, t) pair per test user of {run.dir / 'test_metrics.json'}; "
                         "re-run the run's test script")
    if run.config.get("repeat_targets") == "skip":          # SPEC "Evaluation": those users are not in the metric
        h, t, users = h[~repeat], t[~repeat], users[~repeat]
    values = per_user_metrics(np.stack([h, t], 1), ks=(10,), ties=run.config["ties"])
    frame = pd.DataFrame({m: 100.0 * values[m].numpy() for m in METRICS}, index=pd.Index(users, name="user"))
    means = frame.mean() / 100.0
    if any(abs(means[m] - run.test["test"][m]) > 1e-9 for m in METRICS):
        raise InputError(f"{path} does not reproduce the metrics of {run.dir / 'test_metrics.json'} "
                         "(a file of another test?); re-run the run's test script")
    return frame


_PER_USER_CACHE: dict = {}


def per_user_cached(run: Run) -> pd.DataFrame | None:
    """per_user(run), read once per file version (the tables read each run for several tests)."""
    name = run.test.get("per_user")
    stamp = (run.dir / name).stat().st_mtime_ns if name and (run.dir / name).is_file() else None
    key = (str(run.dir), stamp, run.config.get("ties"), json.dumps(run.test.get("test"), sort_keys=True))
    if key not in _PER_USER_CACHE:
        if len(_PER_USER_CACHE) > 256:
            _PER_USER_CACHE.clear()
        _PER_USER_CACHE[key] = per_user(run)
    return _PER_USER_CACHE[key]


def read_history(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl records, one per epoch ([] when there is no such file)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path}, line {number}: not JSON; the file is damaged") from None
            record = records[-1]
            if not isinstance(record, dict):
                raise InputError(f"{path}, line {number}: not a JSON object; the file is damaged")
            bad = [k for k in ("epoch", "train_seconds", "train_cpu_seconds", "peak_memory_mb", "trainable_parameters")
                   if k in record and not is_number(record[k])]
            if bad:
                raise InputError(f"{path}, line {number}: {bad[0]} is not a number; the file is damaged")
    return records


def sum_to_best(epochs: list[dict | None], key: str) -> float:
    """The sum of `key` over the epochs' records; NaN unless every record is there and holds it."""
    return sum(r[key] for r in epochs) if all(r is not None and key in r for r in epochs) else math.nan


def run_cost(run: Run) -> dict:
    """{"train_seconds_to_best": sum of train_seconds over epochs 1 .. best epoch,
    "train_cpu_seconds_to_best": the same sum of train_cpu_seconds,
    "peak_memory_mb": the largest epoch peak, "peak_memory_kind", "trainable_parameters": the largest
    count recorded}; NaN / "" where metrics.jsonl lacks them (runs from before cost accounting, or a
    history that misses an epoch)."""
    history = {r.get("epoch"): r for r in read_history(run.dir)}
    best = run.test.get("best_epoch")
    epochs = [history.get(e) for e in range(1, best + 1)] if isinstance(best, int) else [None]
    peaks = [r for r in history.values() if "peak_memory_mb" in r]
    return {"train_seconds_to_best": sum_to_best(epochs, "train_seconds"),
            "train_cpu_seconds_to_best": sum_to_best(epochs, "train_cpu_seconds"),
            "peak_memory_mb": max((r["peak_memory_mb"] for r in peaks), default=math.nan),
            "peak_memory_kind": "/".join(sorted({r.get("peak_memory_kind", "?") for r in peaks})),
            "trainable_parameters": max((r["trainable_parameters"] for r in history.values()
                                         if "trainable_parameters" in r), default=math.nan)}
