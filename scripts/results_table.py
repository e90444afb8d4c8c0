"""Results tables like the paper's: every finished run under the given folders, grouped by data set
x setting x model x loss x item tower x training mode, HR@10 / NDCG@10 in percent as mean ± sample
standard deviation over the seeds, the relative improvement over the matching IDRec row, and the
difference to that row tested over the seeds (the run is the unit; per-user test apart).

    python scripts/results_table.py inbatch_sasrec_e2e_text bce_text [--out docs/results]
    python scripts/results_table.py runs/studies/ml-100k --out table      # table.md + table.csv
    python scripts/results_table.py runs/studies/ml-100k --user_groups dataset/ml-100k/user_groups.tsv:gender
    python scripts/results_table.py --aa_check RUNS_DIR                   # A/A check of one system's seeds

A folder may be a run folder (it holds config.json), an experiment folder, or anything above them:
every `config.json` below it whose folder also holds `test_metrics.json` (written by a test_*.py
script) is one run; runs that were trained but not tested are listed on stderr and left out.
Checks (a number in the table is the number of the files it claims): each run's test must be of its
current checkpoint_best.pt and its test_ranks.npz the file that test wrote (the digests the test
records, morec/run_identity.py; the file is read for every run); a trained run counts once (a link
or a folder given twice is counted once, a copied folder or two runs of one row with one seed are
refused); runs of one data set name must have read the same data files (config.json's data
identity); a value of the wrong type is refused naming the file and key. Runs tested before these
records, or whose checkpoint was deleted, cannot be checked: they are kept and named on stderr.

Grouping: runs whose resolved configs (config.json, missing keys filled with today's defaults so
older runs still load) are equal except for `seed` and run-control values form one row; patience,
epoch cap and the run's "setting" (world size and precision; missing: one process, fp32) stay in
the key, and so does the tie rule of its test metrics (a test_metrics.json without "ties" predates
SPEC's tie rule: "optimistic"). The row shows the mean over its runs and, with two or more seeds,
the sample standard deviation (n - 1).
Improvement over IDRec = (row mean - IDRec mean) / IDRec mean, in percent, against the ID-tower
row that shares every value of the grouping key but the item tower (data set, setting, patience,
epoch cap, tie rule, loss, sequence lengths, batch size, ...; the tower's own fields, its head
depth, a transfer initialisation and the per-tower lr / l2_weight may differ: ITEM_TOWER_KEYS,
TUNED_PER_TOWER). A MoRec row without such an ID row gets no Δ, and the note says which values
differ from the nearest ID row. Among several, the one sharing the most other values (then the
higher HR@10).
Significance (docs/significance.md). The run (seed) is the unit of the default test:
the two rows are compared over their seeds, HR@10 / NDCG@10 per user from test_ranks.npz:
- Δ = difference of the means over seeds (percentage points); 95% interval of a two-level
  bootstrap (seeds resampled, then users within each resampled seed; Saravanan et al. 2020);
  p of a paired t test over the per-seed means when the rows share >= 2 seeds
  (scipy.stats.ttest_rel), else Welch's t test over the seed means (scipy.stats.ttest_ind,
  equal_var=False); "*" = p < 0.05. The t test rather than an exact sign flip over seeds, which
  cannot go below 2 / 2^S (0.25 with 3 seeds); see the significance section below for sources.
- per-user (these trained models), a separate column, never starred: each user's difference
  averaged over the shared seeds, users resampled as clusters (bootstrap; sign flip, one sign per
  user across its seeds; --resamples, default 2000; shown as p < 1/(R+1) at its resolution). It
  holds the runs fixed: "these models rank these users differently", not "A beats B".
- a single-seed row, runs without test_ranks.npz, or rows that share no seeds get a message in
  the "test" column (Welch is used for the latter), never a silent star.
A/A check: --aa_check RUNS_DIR (the runs of one system, >= 6 seeds) tests every split of its seeds
into two disjoint halves with the default test; the last line is the share with p < 0.05.
User groups: --user_groups FILE:COLUMN (e.g. dataset/ml-100k/user_groups.tsv:gender) adds a table
of HR@10 / NDCG@10 per group and the gap between groups, each with the seed-level interval, and
Δ vs IDRec per group.
Columns: setting = regular or warm-K (`warm_min_count`); item tower = ID or the encoder folder;
mode = E2E (end to end), TS (two-stage, frozen features) with its DNN depth, +ID add/cat (fusion);
cold-start = HR@10 on the test users whose target had < k train interactions (test_*.py's view);
users / items = the data after filtering (warm settings keep fewer).
Cost (shown when the runs' metrics.jsonl record it; morec/cost.py): train seconds to the
best epoch = the sum of `train_seconds` over epochs 1 .. best epoch (the training that produced the
tested checkpoint; evaluation not included), and the run's peak memory = the largest
`peak_memory_mb` of its epochs (MiB; "rss" = max RSS of the process on CPU, "alloc" = max
allocated on CUDA); both the mean over the row's runs. Runs from before cost accounting get "-".
Where every run of a row records `train_cpu_seconds` (this process's CPU time over the same
training steps, all threads; morec.cost.TrainClock), the cell adds their sum to the best epoch as
"(CPU N s)": with N threads it can exceed the wall seconds, and a paused or core-starved run
shows wall seconds well above its CPU seconds (CSV: `train_cpu_seconds_to_best`; TPME stays on
the wall seconds).
Where the runs record their trainable parameters (`trainable_parameters` of metrics.jsonl, the
largest over the epochs), the cost cell shows them too, and a TPME column (IISAN, Fu et al., SIGIR
2024; morec.cost.tpme) = (T / T_ref + P / P_ref + M / M_ref) / 3, equal weights, on T = train seconds
to best, P = trainable parameters and M = peak memory, against one reference row per data set and
setting: its full fine-tuning row (a text / vision tower trained end to end, no frozen blocks, no
PEFT; the one with the most trainable parameters if several), else the row with the most trainable
parameters. Lower is better, 1 for the reference; "-" for a row lacking a value, or whose memory
kind (rss / alloc) differs from the reference's.
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
import math
import zipfile
import zlib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from morec.config import RUN_CONTROL, UNUSED_BY_TOWER, Config
from morec.cost import tpme
from morec.errors import InputError, run_cli
from morec.evaluate import per_user_metrics
from morec.run_identity import CHECKPOINT_KEY, RANKS_CHECKPOINT, RANKS_KEY, checkpoint_check, ranks_digest

METRICS = ("HR@10", "NDCG@10")
# Keys shown in their own columns (or meaningless across runs): not listed under "other".
SHOWN = {"dataset", "warm_min_count", "model", "loss", "item_tower", "bert_model_load", "cv_model_load",
         "two_stage", "fusion", "dnn_layers", "mo_dnn_layers", "seed", "ts_layers"}
# Run-control values that still change what a run reports: kept in the grouping key.
GROUPED_RUN_CONTROL = {"patience", "epoch"}
DEFAULT_SETTING = {"world_size": 1, "precision": "fp32"}
# Item towers and the config key naming their encoder (vision keys are read when present).
ENCODER_KEYS = {"text": "bert_model_load", "vision": "cv_model_load", "image": "cv_model_load"}
CONFIDENCE = 0.95
RESAMPLES = 2000                      # bootstrap and sign-flip resamples per comparison (--resamples)


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


# ----------------------------------------------------------------------------- reading

def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} cannot be read as JSON ({err}); delete the run folder or re-run "
                         "its test script") from None


def find_run_dirs(folders: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """(tested run folders, trained-but-untested run folders) under `folders`, sorted."""
    tested, untested = set(), set()
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give experiment folders, runs folders or run folders")
        configs = [folder / "config.json"] if (folder / "config.json").is_file() else folder.rglob("config.json")
        for config in configs:
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
# (morec.run_identity), and across runs (check_runs) that each trained run counts once and that
# runs of one data set name read the same data.

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


# ----------------------------------------------------------------------------- grouping

def group_key(config: dict) -> str:
    """Everything that defines what a run reports, except its seed (module docstring)."""
    ignored = (RUN_CONTROL - GROUPED_RUN_CONTROL) | {"seed"}
    values = {k: v for k, v in config.items() if k not in ignored}
    values["setting"] = {**DEFAULT_SETTING, **(config.get("setting") or {})}
    return json.dumps(values, sort_keys=True, default=str)


def is_id(config: dict) -> bool:
    return config.get("item_tower", "id") == "id"


def tower_name(config: dict) -> str:
    tower = config.get("item_tower", "id")
    if tower == "id":
        return "ID"
    if tower == "text+vision":
        return f"text+vision: {config.get('bert_model_load')} + {config.get('cv_model_load')}"
    key = ENCODER_KEYS.get(tower)
    return f"{tower}: {config[key]}" if key and config.get(key) else tower


def mode_name(config: dict) -> str:
    cached = config.get("mm_cached_branch") or "none"
    one_cached = config.get("item_tower") == "text+vision" and cached != "none" and not config.get("two_stage")
    if one_cached:                                                  # one branch cached, the other end to end
        mode = f"{'vision' if cached == 'text' else 'text'} E2E, {cached} TS"
    else:
        mode = "TS" if config.get("two_stage") else "E2E"
    mixes_text = config.get("two_stage") or (one_cached and cached == "text")
    if mixes_text and config.get("ts_layers", "last") == "all":
        mode += " layers=all"                                       # the scalar mix of every layer
    if config.get("fusion", "none") not in ("none", ""):
        mode += f" +ID {config['fusion']}"
        if config.get("two_stage") and config.get("mo_dnn_layers"):
            mode += f" mo_dnn={config['mo_dnn_layers']}"
    if config.get("two_stage") or one_cached or config.get("model") == "dssm":
        mode += f" dnn={config.get('dnn_layers', 0)}"
    return mode


def setting_name(config: dict) -> str:
    warm = config.get("warm_min_count", 0)
    return f"warm-{warm}" if warm else "regular"


def config_sort_key(c: dict):
    """Data set, setting, model, loss, IDRec first, tower, E2E before TS, DNN depth."""
    return (c.get("dataset", ""), c.get("warm_min_count", 0), c.get("model", ""), c.get("loss", ""),
            not is_id(c), tower_name(c), bool(c.get("two_stage")), c.get("ts_layers", "last") == "all",
            c.get("fusion", "none"),
            c.get("dnn_layers", 0), group_key(c))


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


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per run: its group key, seed, label, test metrics, cold-start view (percent) and cost."""
    records = []
    for run in runs:
        cold = run.test.get("cold_start") or {}
        cold_metrics = cold.get("metrics") or {}
        records.append({"key": group_key(run.config), "seed": run.config.get("seed"), "label": run.label, **run_cost(run),
                        "run": run, "hr10": 100.0 * run.test["test"]["HR@10"],
                        "ndcg10": 100.0 * run.test["test"]["NDCG@10"],
                        "cold_hr10": 100.0 * cold_metrics["HR@10"] if "HR@10" in cold_metrics else math.nan,
                        "cold_ndcg10": 100.0 * cold_metrics["NDCG@10"] if "NDCG@10" in cold_metrics else math.nan})
    return pd.DataFrame.from_records(records).sort_values(["key", "seed", "label"], kind="stable")


def grouped(runs: list[Run], check: bool = True) -> list[pd.DataFrame]:
    """The runs of each row (a frame per group, seeds in order), rows in table order; `check`: each
    run counted once and each data set name of one data (check_runs: refused otherwise)."""
    groups = [frame for _, frame in runs_frame(runs).groupby("key", sort=False)]
    if check:
        check_runs(runs)
    return sorted(groups, key=lambda g: config_sort_key(g["run"].iloc[0].config))


def check_runs(runs: list[Run]) -> None:
    """Each trained run counts once (no two folders with the same checkpoint_best.pt, no two runs of
    one row with the same seed), and runs of one data set name read the same data files."""
    first: dict = {}
    for run in runs:
        for kind, key in (("checkpoint", run.checkpoint), ("seed", (group_key(run.config), str(run.config.get("seed"))))):
            other = first.setdefault((kind, key), run) if key is not None else run
            if other is not run and kind == "checkpoint":
                raise InputError(f"{other.dir} and {run.dir} hold the same trained run (checkpoint_best.pt sha256 "
                                 f"{key[:12]}): a copied folder counts once; leave one of them out of the table's folders")
            if other is not run:
                raise InputError(f"{other.dir} and {run.dir} are two runs of one row with the same seed "
                                 f"{run.config.get('seed')} (a copied folder, or one run trained twice under two "
                                 "labels): a row holds one run per seed; leave one of them out of the table's folders")
    for run in runs:
        other = first.setdefault(("data", run.config.get("dataset")), run) if run.data else run
        differ = [k for k in ("users", "items", "image_keys") if k in run.data and k in other.data
                  and run.data[k] != other.data[k]] if other is not run else []
        if differ:
            what = "; ".join(f"{k} sha256 {other.data[k][:12]} vs {run.data[k][:12]}" for k in differ)
            raise InputError(f"{other.dir} and {run.dir} were trained on different data under one data set name "
                             f"{run.config.get('dataset')!r} ({what}): a row or its IDRec baseline would mix them; "
                             "give the other data its own data set name (folder), or tabulate them apart")


def other_values(configs: list[dict]) -> list[str]:
    """For each row's config, the values (not shown in their own columns) that differ between rows."""
    keys = sorted({k for c in configs for k in c} - SHOWN - (RUN_CONTROL - GROUPED_RUN_CONTROL))
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [" ".join(f"{k}={c.get(k)}" for k in varying if k not in UNUSED_BY_TOWER.get(c.get("item_tower", "id"), set()))
            for c in configs]


# Values that may differ between a MoRec row and its IDRec baseline: the item tower itself (the
# fields only a modality tower reads, its head depth, the transfer initialisation it starts from)
# and the optimiser values the paper tunes per tower (the studies' --id.lr / --mo.lr). Every other
# value of the grouping key (data set, setting, patience, epoch cap, tie rule, loss, sequence
# lengths, batch size, ...) must be equal, else the row gets no Δ (matched baseline rows).
ITEM_TOWER_KEYS = {"item_tower", "dnn_layers", "init_from", "freeze_user_encoder"} | UNUSED_BY_TOWER["id"]
TUNED_PER_TOWER = {"lr", "l2_weight"}


def baseline_keys(config: dict) -> list[str]:
    """The keys an IDRec baseline of `config` must share (see ITEM_TOWER_KEYS)."""
    key = json.loads(group_key(config))
    return sorted(k for k in key if k not in ITEM_TOWER_KEYS | TUNED_PER_TOWER)


def baseline_mismatch(config: dict, base: dict) -> list[str]:
    """'key=value (IDRec: value)' for each baseline key on which the two configs differ."""
    mine, theirs = json.loads(group_key(config)), json.loads(group_key(base))
    return [f"{k}={mine.get(k)} (IDRec: {theirs.get(k)})" for k in baseline_keys(config) if mine.get(k) != theirs.get(k)]


def baseline_index(config: dict, configs: list[dict], hr10: list[float]) -> int | None:
    """Index of the IDRec row this row is compared with (None for ID rows or when none matches in
    every baseline key); among several, the one sharing the most other values (then higher HR@10)."""
    if is_id(config):
        return None
    candidates = [i for i, c in enumerate(configs) if is_id(c) and not baseline_mismatch(config, c)]
    if not candidates:
        return None

    def closeness(i: int):
        c = configs[i]
        shared = sum(c.get(k) == config.get(k) for k in config
                     if k not in RUN_CONTROL - GROUPED_RUN_CONTROL)
        return shared, hr10[i]
    return max(candidates, key=closeness)


def no_baseline_reason(config: dict, configs: list[dict]) -> str:
    """Why a MoRec row has no IDRec row to compare with ('' for ID rows and rows that have one)."""
    if is_id(config):
        return ""
    ids = [baseline_mismatch(config, c) for c in configs if is_id(c)]
    if not ids:
        return "no IDRec row among these runs"
    if any(not m for m in ids):
        return ""
    nearest = min(ids, key=len)
    return "no IDRec row with the same values but the item tower; nearest differs in " + ", ".join(nearest)


# ----------------------------------------------------------------------------- significance
#
# Default ("seed-level") test: the trained run is the unit. A table compares two
# systems, each trained with several seeds; the question "does A beat B on this data set" is
# answered against the run-to-run variation, which a test that pairs single users of fixed runs
# never sees (its null holds the trained models fixed; measured on 10 ml-100k IDRec seeds it
# starred 15% of A/A comparisons at alpha 0.05, docs/significance.md).
# - p: a t test over the per-seed means, paired (scipy.stats.ttest_rel: the seed-wise differences
#   of the run means) when both rows share >= 2 seeds, Welch (scipy.stats.ttest_ind,
#   equal_var=False) over the two rows' seed means when they do not. Its null contains the seed
#   variation; a run mean averages ~10^3 users, so the normal model of the t test is close. An
#   exact sign flip over seeds would need no such model but cannot go below 2 / 2^S (0.25 with 3
#   seeds, 0.0625 with 5): no power at the studies' seed counts. Dror et al. 2018, "The
#   Hitchhiker's Guide to Testing Statistical Significance in NLP" (ACL), for the choice of a
#   parametric test when its assumptions hold; Bouthillier et al. 2021, "Accounting for Variance
#   in Machine Learning Benchmarks" (MLSys), for comparing over several seeds (the run as sample).
# - interval: a 95% percentile interval of a two-level (hierarchical) bootstrap: resample the
#   seeds with replacement, then the users within each resampled seed (Saravanan, Berman and
#   Sober 2020, "Application of the hierarchical bootstrap to multi-level data in neuroscience",
#   NBDC). With few seeds it is narrower than the t interval (the seeds drawn are treated as the
#   population), so the star follows p, not the interval.
# Per-user ("these trained models rank these users differently") test, a separate column, never
# starred: each user's difference averaged over the seeds, users resampled as clusters (one sign
# per user across all its seeds; bootstrap of users); its null holds the trained runs fixed.

ALPHA = 0.05


def fmt_p(p: float, resamples: int | None = None) -> str:
    """'p=0.013'; a resampled p at or below 1/(R+1) (no resample as extreme) as 'p < 1/(R+1)'
    (the test's resolution), an analytic one below 10^-4 as 'p < 0.0001'."""
    if p is None or math.isnan(p):
        return "p=-"
    if resamples and p <= 1.0 / (resamples + 1) * (1 + 1e-9):
        return f"p < {1.0 / (resamples + 1):.2g}"
    if p < 1e-4:
        return "p < 0.0001"
    return f"p={p:.2g}"


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


@dataclass
class SeedArrays:
    """A row's per-user metrics: seeds (S,), users (U,), values {metric: (S, U) percent}."""
    seeds: list
    users: pd.Index
    values: dict
    runs: list


def seed_arrays(runs: list[Run]) -> SeedArrays | None:
    """The row's runs as (seed, user) arrays; None when a run has no per-user file. Refuses runs
    that tested other users (another data set or filter) or repeat a seed."""
    frames = [per_user_cached(r) for r in runs]
    if not runs or any(f is None for f in frames):
        return None
    seeds = [r.config.get("seed") for r in runs]
    if len(set(map(str, seeds))) < len(seeds):
        raise InputError(f"two runs of one row share a seed ({', '.join(str(r.dir) for r in runs)}); "
                         "a row holds one run per seed")
    for run, frame in zip(runs[1:], frames[1:]):
        if not frame.index.equals(frames[0].index):
            raise InputError(f"{run.dir} and {runs[0].dir} did not test the same users in the same order; "
                             "they cannot be one row (same data set and filters?)")
    return SeedArrays(seeds, frames[0].index, {m: np.stack([f[m].to_numpy() for f in frames]) for m in METRICS}, runs)


def seed_values(terms: list) -> np.ndarray:
    """(S,): per seed, sum of weight x mean over `users` of x[seed]; terms [(x (S, U), users, weight)]."""
    return sum(w * x[:, users].mean(axis=1) for x, users, w in terms)


def hierarchical_resamples(terms: list, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R,): the statistic of seed_values(terms).mean() under a two-level bootstrap: the S seeds
    resampled with replacement, then, within each resampled seed, the users of each term (a group
    stays a group: stratified) resampled with replacement."""
    n_seeds = terms[0][0].shape[0]
    out = np.empty(resamples)
    users_max = max(len(users) for _, users, _ in terms)
    batch = max(1, 2 ** 22 // max(n_seeds * users_max, 1))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        chosen = rng.integers(0, n_seeds, (size, n_seeds))                       # (B, S) resampled seeds
        total = np.zeros((size, n_seeds))
        for x, users, w in terms:
            picks = users[rng.integers(0, len(users), (size, n_seeds, len(users)))]   # (B, S, U_term)
            total += w * x[chosen[:, :, None], picks].mean(axis=2)
        out[start:start + size] = total.mean(axis=1)
    return out


def t_p_value(va: np.ndarray, vb: np.ndarray | None) -> float:
    """Two-sided p of the one-sample (paired differences) t test of va, or Welch's test of va vs
    vb; a zero-variance input gives p = 1 when the means are equal and 0 when they are not."""
    if vb is None:
        if np.ptp(va) <= 1e-12 * max(1.0, abs(va).max()):
            return 1.0 if abs(va.mean()) <= 1e-12 else 0.0
        return float(stats.ttest_1samp(va, 0.0).pvalue)
    if np.ptp(va) <= 1e-12 and np.ptp(vb) <= 1e-12:
        return 1.0 if abs(va.mean() - vb.mean()) <= 1e-12 else 0.0
    return float(stats.ttest_ind(va, vb, equal_var=False).pvalue)


def seed_level(a_terms: list, b_terms: list | None = None, resamples: int = RESAMPLES, seed: int = 0,
               interval: bool = True) -> dict:
    """The default test of a contrast: {"diff", "ci_low", "ci_high", "p"}. Paired (b_terms None):
    a_terms hold the seed-wise differences, p of the paired t test; unpaired: the contrast is
    seed mean of a_terms - of b_terms, p of Welch's test. interval False: no bootstrap (NaN)."""
    va = seed_values(a_terms)
    vb = None if b_terms is None else seed_values(b_terms)
    diff = float(va.mean() - (0.0 if vb is None else vb.mean()))
    low = high = math.nan
    if interval:
        rng = np.random.default_rng(seed)
        boot = hierarchical_resamples(a_terms, resamples, rng)
        if b_terms is not None:
            boot = boot - hierarchical_resamples(b_terms, resamples, rng)
        low, high = (float(v) for v in np.quantile(boot, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return {"diff": diff, "ci_low": low, "ci_high": high, "p": t_p_value(va, vb)}


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def bootstrap_interval(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval (percentile) of mean(a - b): pairs resampled with replacement.
    a, b (P,) paired values; a fixed seed makes the table reproducible."""
    batch = max(1, 2 ** 24 // max(len(a), 1))                 # resamples held at once: ~16M values
    ci = stats.bootstrap((a, b), mean_difference, paired=True, vectorized=True, n_resamples=resamples,
                         confidence_level=CONFIDENCE, method="percentile", batch=batch,
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def sign_flip_p(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                budget: float = 2e8) -> float:
    """Two-sided p-value of the paired sign-flip test of mean(a - b) = 0 (each pair's two values
    swapped at random under the null), statistic |sum(d)|. Identical pairs: p = 1.

    Pairs with equal values do not change the statistic under any flip, so only the others count.
    Exact (every sign vector) when 2^n <= resamples; else p = (1 + #{resamples as extreme}) /
    (R + 1), which cannot go below 1/(R+1) (fmt_p prints that as 'p < 1/(R+1)'). Above `budget`
    differences x resamples, the normal approximation of the same test: sum(d) has mean 0 and
    variance sum(d^2) over the flips (tests/test_results_table.py compares it with scipy)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tolerance = 1e-9 * max(observed, float(np.abs(d).sum()), 1e-300)
    if n <= 20 and 2 ** n <= resamples:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tolerance))
    if n * resamples > budget:
        return float(2 * stats.norm.sf(observed / math.sqrt(float(np.sum(d * d)))))
    rng = np.random.default_rng(seed)
    extreme, batch = 0, max(1, 2 ** 22 // n)
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        signs = rng.integers(0, 2, (size, n), dtype=np.int8) * 2 - 1
        extreme += int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (1 + extreme) / (resamples + 1)


def user_cluster_test(a: np.ndarray, b: np.ndarray, users: np.ndarray | None = None, resamples: int = RESAMPLES,
                      seed: int = 0, budget: float = 2e8, interval: bool = True) -> dict:
    """'These trained models rank these users differently': a (S_a, U), b (S_b, U); each user's
    mean over the seeds of a minus of b, users as clusters (one sign per user across all its seeds
    in the sign flip; users resampled in the bootstrap). Not a test of 'A beats B' (the runs are held fixed)."""
    users = np.arange(a.shape[1]) if users is None else users
    d = a[:, users].mean(axis=0) - b[:, users].mean(axis=0)
    zeros = np.zeros_like(d)
    low, high = bootstrap_interval(d, zeros, resamples, seed) if interval and np.ptp(d) > 0 else \
        (float(d.mean()), float(d.mean())) if interval else (math.nan, math.nan)
    return {"diff": float(d.mean()), "ci_low": low, "ci_high": high, "p": sign_flip_p(d, zeros, resamples, seed, budget)}


@dataclass
class Pairing:
    """How two rows are compared: paired on shared seeds, unpaired (Welch), or not at all (problem)."""
    a: SeedArrays | None
    b: SeedArrays | None
    paired: bool = False
    problem: str = ""
    note: str = ""

    @property
    def test_name(self) -> str:
        if self.problem:
            return self.problem
        if self.paired:
            return f"paired t, {len(self.a.seeds)} seeds x {len(self.a.users)} users" + (f" ({self.note})" if self.note else "")
        return (f"Welch, {len(self.a.seeds)} vs {len(self.b.seeds)} seeds x {len(self.a.users)} users "
                f"(unpaired: {self.note})")


def pairing(runs: list[Run], base: list[Run]) -> Pairing:
    """Pair the runs of a row with those of its base row (module docstring): the seeds both share
    (>= 2: paired t), else all seeds of each (each >= 2: Welch); a single-seed row or runs without
    per-user files get a problem message, never a silent result."""
    if len(runs) < 2 or len(base) < 2:
        one = runs if len(runs) < 2 else base
        return Pairing(None, None, problem=f"{len(one)} seed in {'this row' if one is runs else 'its base row'} "
                                           f"({', '.join(r.dir.name for r in one)}): no seed-level test (needs >= 2 seeds each)")
    a, b = seed_arrays(runs), seed_arrays(base)
    if a is None or b is None:
        return Pairing(None, None, problem="no per-user file (test_ranks.npz) in some runs: re-run their test script")
    if not a.users.equals(b.users):
        raise InputError(f"{runs[0].dir} and {base[0].dir} did not test the same users in the same order; "
                         "they cannot be compared user by user (same data set and filters?)")
    shared = [s for s in a.seeds if s in b.seeds]
    if len(shared) >= 2:
        left_out = sorted(set(map(str, a.seeds + b.seeds)) - set(map(str, shared)))
        ia, ib = [a.seeds.index(s) for s in shared], [b.seeds.index(s) for s in shared]
        pick = lambda x, idx: SeedArrays(shared, x.users, {m: v[idx] for m, v in x.values.items()},  # noqa: E731
                                         [x.runs[i] for i in idx])
        return Pairing(pick(a, ia), pick(b, ib), paired=True,
                       note=f"seeds {' '.join(left_out)} of one row only left out" if left_out else "")
    return Pairing(a, b, note=f"the rows share {len(shared)} seed{'s' if len(shared) != 1 else ''}; "
                              f"{' '.join(map(str, a.seeds))} vs {' '.join(map(str, b.seeds))}")


def compare(pair: Pairing, metric: str, users: np.ndarray | None = None, resamples: int = RESAMPLES,
            seed: int = 0) -> dict:
    """Seed-level difference (default test) and per-user cluster test of `metric` over `users`
    (all when None): {"diff", "ci_low", "ci_high", "p", "user_diff", "user_ci_low", "user_ci_high", "user_p"}."""
    nan = dict.fromkeys(("diff", "ci_low", "ci_high", "p", "user_diff", "user_ci_low", "user_ci_high", "user_p"), math.nan)
    if pair.problem or pair.a is None:
        return nan
    a, b = pair.a.values[metric], pair.b.values[metric]
    users = np.arange(a.shape[1]) if users is None else np.asarray(users)
    result = seed_level([(a - b, users, 1.0)], None, resamples, seed) if pair.paired else \
        seed_level([(a, users, 1.0)], [(b, users, 1.0)], resamples, seed)
    user = user_cluster_test(a, b, users, resamples, seed)
    return {**result, **{f"user_{k}": v for k, v in user.items()}}


def paired_columns(rows: pd.DataFrame, base: pd.DataFrame | None, resamples: int, reason: str = "") -> dict:
    """The row's columns against its IDRec row: the test used, then per metric the seed-level
    diff / CI / p and the per-user cluster test's diff / CI / p."""
    pair = pairing(list(rows["run"]), list(base["run"])) if base is not None else Pairing(None, None, problem=reason)
    out = {"test": pair.test_name if (base is not None or reason) else "",
           "compared_seeds": "" if pair.problem or pair.a is None else " ".join(map(str, pair.a.seeds)) + (
               "" if pair.paired else " vs " + " ".join(map(str, pair.b.seeds)))}
    for metric in METRICS:
        key = metric.split("@")[0].lower() + "10"
        out.update({f"{key}_{name}": value for name, value in compare(pair, metric, resamples=resamples).items()})
    return out


# ----------------------------------------------------------------------------- the table

def improvement(value: float, base: float) -> float:
    return math.nan if math.isnan(value) or math.isnan(base) or base == 0 else 100.0 * (value - base) / base


def table_rows(runs: list[Run], resamples: int = RESAMPLES) -> list[dict]:
    """One dict per group: the values of the markdown and CSV tables (metrics in percent)."""
    groups = grouped(runs)
    configs = [g["run"].iloc[0].config for g in groups]
    hr10 = [g["hr10"].mean() for g in groups]
    others = other_values(configs)
    rows = []
    for group, c, other in zip(groups, configs, others):
        first = group["run"].iloc[0].test
        row = {"dataset": c.get("dataset", ""), "setting": setting_name(c),
               "warm_min_count": c.get("warm_min_count", 0), "model": c.get("model", ""),
               "loss": c.get("loss", ""), "item_tower": tower_name(c), "mode": mode_name(c),
               "two_stage": bool(c.get("two_stage")), "fusion": c.get("fusion", "none"),
               "dnn_layers": c.get("dnn_layers", 0), "other": other,
               "seeds": " ".join(str(s) for s in group["seed"]), "n": len(group)}
        index = baseline_index(c, configs, hr10)
        base = groups[index] if index is not None else None
        for key in ("hr10", "ndcg10"):
            row[f"{key}_mean"], row[f"{key}_std"] = group[key].mean(), group[key].std(ddof=1)
            row[f"{key}_vs_id_pct"] = improvement(row[f"{key}_mean"], base[key].mean() if base is not None else math.nan)
        cold = [r.test["cold_start"] for r in group["run"] if r.test.get("cold_start")]
        row["cold_below"] = cold[0]["below"] if cold else ""
        row["cold_users"] = cold[0]["users"] if cold else ""
        for key in ("cold_hr10", "cold_ndcg10"):
            row[f"{key}_mean"], row[f"{key}_std"] = group[key].mean(), group[key].std(ddof=1)
        row["users"], row["items"] = first.get("num_users", ""), first.get("num_items", "")
        row.update(repeat_columns(c, group))
        row["best_epochs"] = " ".join(str(r.test.get("best_epoch", "")) for r in group["run"])
        row["runs"] = " ".join(group["label"])
        reason = no_baseline_reason(c, configs)
        row["baseline_runs"] = " ".join(base["label"]) if base is not None else ""
        row["no_baseline"] = reason
        row["resamples"] = resamples
        row.update(paired_columns(group, base, resamples, reason))
        row["train_seconds_to_best"] = group["train_seconds_to_best"].mean(skipna=False)   # NaN unless every run has it
        row["train_cpu_seconds_to_best"] = group["train_cpu_seconds_to_best"].mean(skipna=False)
        row["peak_memory_mb"] = group["peak_memory_mb"].mean(skipna=False)
        row["peak_memory_kind"] = "/".join(sorted({k for part in group["peak_memory_kind"] for k in part.split("/") if k}))
        row["trainable_parameters"] = group["trainable_parameters"].mean(skipna=False)
        row["full_fine_tuning"] = is_full_fine_tuning(c)
        rows.append(row)
    add_tpme(rows)
    return rows


def is_full_fine_tuning(config: dict) -> bool:
    """A text / vision tower trained end to end with every encoder weight: no two-stage cache, no
    cached branch, no frozen blocks or tensors, no PEFT (the TPME reference, module docstring)."""
    return (config.get("item_tower", "id") != "id" and not config.get("two_stage")
            and (config.get("mm_cached_branch") or "none") == "none" and config.get("trainable_layers", -1) == -1
            and not config.get("freeze_paras_before") and config.get("peft", "none") == "none")


def cost_values(row: dict) -> tuple[float, float, float]:
    """(T, P, M) of TPME: train seconds to best, trainable parameters, peak memory."""
    return row["train_seconds_to_best"], row["trainable_parameters"], row["peak_memory_mb"]


def add_tpme(rows: list[dict]) -> None:
    """Each row's "tpme" against its data set and setting's reference row, and "tpme_reference"
    naming that row (module docstring); NaN / "" where a value is missing or the memory kinds differ."""
    for row in rows:
        row["tpme"], row["tpme_reference"] = math.nan, ""
    for place in {(r["dataset"], r["setting"]) for r in rows}:
        measured = [r for r in rows if (r["dataset"], r["setting"]) == place
                    and not any(math.isnan(v) for v in cost_values(r))]
        full = [r for r in measured if r["full_fine_tuning"]]
        if not measured:
            continue
        reference = max(full or measured, key=lambda r: r["trainable_parameters"])
        name = f"{reference['item_tower']} {reference['mode']} ({reference['loss']}" + (
            ", full fine-tuning)" if full else ", no full fine-tuning row: the most trainable parameters)")
        for row in measured:
            row["tpme_reference"] = name
            if row["peak_memory_kind"] == reference["peak_memory_kind"]:
                row["tpme"] = tpme(cost_values(row), cost_values(reference))


def repeat_columns(config: dict, group: pd.DataFrame) -> dict:
    """The row's repeat rule (SPEC "Evaluation") and its number of repeat test targets ("" when a
    run's test predates the record; that test kept a repeated target rankable)."""
    counts = [r.test.get("repeat_count") for r in group["run"]]
    return {"repeat_targets": config.get("repeat_targets", "miss"),
            "repeat_count": counts[0] if None not in counts else ""}


def repeat_cell(r: dict) -> str:
    """'621 (miss)': repeat test targets and the rule; '?' when not recorded."""
    return f"{'?' if r['repeat_count'] == '' else r['repeat_count']} ({r['repeat_targets']})"


def repeat_note(rows: list[dict]) -> list[str]:
    """The table's note on repeat targets (only for rows whose tests recorded them)."""
    recorded = [r for r in rows if r.get("repeat_count", "") != ""]
    if not recorded:
        return []
    if all(r["repeat_count"] == 0 for r in recorded) and all(r["repeat_targets"] == "miss" for r in rows):
        return ["Repeat targets (test targets also in the user's history): none in these test splits."]
    return ["Repeat targets: test targets also in the user's history, and the rule (SPEC \"Evaluation\"): miss = "
            "masked with the history, a miss (the default); rank = no history masked; skip = those users left out "
            "of the metrics; ? = tested before the count was recorded (such a test kept a repeated target rankable)."]


def fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def paired_cell(r: dict, key: str, kind: str = "") -> str:
    """'+1.23 [+0.40, +2.10] p=0.004 *' (percentage points). kind "": the seed-level test (* : p <
    ALPHA); kind "user_": the per-user cluster test (never starred; its p has R resamples)."""
    if math.isnan(r.get(f"{key}_{kind}diff", math.nan)):
        return "-"
    p = r[f"{key}_{kind}p"]
    star = " *" if not kind and p < ALPHA else ""
    return (f"{r[f'{key}_{kind}diff']:+.2f} [{r[f'{key}_{kind}ci_low']:+.2f}, {r[f'{key}_{kind}ci_high']:+.2f}] "
            f"{fmt_p(p, r.get('resamples') if kind else None)}{star}")


def significance_note(rows: list[dict]) -> str:
    """The table's note on its tests: seeds, resamples, the smallest p an exact seed test could give."""
    tested = [r for r in rows if r.get("compared_seeds")]
    seeds = sorted({len(r["compared_seeds"].split(" vs ")[0].split()) for r in tested})
    resamples = sorted({r["resamples"] for r in tested}) or [RESAMPLES]
    floor = ", ".join(f"{2 / 2 ** s:.3g} with {s} seeds" for s in seeds) if seeds else "0.25 with 3 seeds"
    return (f"Δ vs IDRec (default test; the trained run is the unit): difference of the mean over seeds, in percentage "
            f"points; 95% interval of a two-level bootstrap (seeds resampled, then users within each seed; "
            f"{'/'.join(map(str, resamples))} resamples); p of a paired t test over the per-seed means when both rows share "
            f">= 2 seeds, else Welch's t test over the seed means (the 'test' column says which and over how many seeds: "
            f"{'/'.join(map(str, seeds)) if seeds else '-'} here); * = p < {ALPHA}. An exact sign flip over seeds could "
            f"not go below p = {floor}. Per-user (these trained models): the same difference per user averaged over "
            f"the seeds, users resampled as clusters (bootstrap interval, sign-flip p with {'/'.join(map(str, resamples))} "
            f"resamples, shown as p < 1/(R+1) when no resample was as extreme); it holds the trained runs fixed, "
            f"so it says whether these models rank these users differently, not whether the method is better "
            f"(never starred). docs/significance.md.")


MEMORY_KINDS = {"max_rss": "rss", "max_rss_process": "rss since start", "max_allocated": "alloc"}


def count_text(count: float) -> str:
    """22690880 -> '22.69M', 274307 -> '274.3k', 5 -> '5'."""
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}k" if count >= 1e3 else f"{count:.0f}"


def cost_cell(r: dict) -> str:
    """'412 s[ (CPU 380 s)], 1234 MiB rss[, 22.69M params]': train seconds to the best epoch, (when
    every run records it) their CPU seconds, peak memory and (when recorded) the trainable
    parameters (module docstring)."""
    if math.isnan(r["train_seconds_to_best"]):
        return "-"
    memory = "" if math.isnan(r["peak_memory_mb"]) else \
        f", {r['peak_memory_mb']:.0f} MiB " + "/".join(MEMORY_KINDS.get(k, k) for k in r["peak_memory_kind"].split("/"))
    parameters = "" if math.isnan(r.get("trainable_parameters", math.nan)) else \
        f", {count_text(r['trainable_parameters'])} params"
    cpu = "" if math.isnan(r.get("train_cpu_seconds_to_best", math.nan)) else \
        f" (CPU {r['train_cpu_seconds_to_best']:.0f} s)"
    return f"{r['train_seconds_to_best']:.0f} s" + cpu + memory + parameters


def tpme_note(rows: list[dict]) -> str:
    references = sorted({f"{r['dataset']} {r['setting']}: {r['tpme_reference']}" for r in rows if r.get("tpme_reference")})
    return ("TPME (IISAN, Fu et al., SIGIR 2024; lower is better): (T / T_ref + P / P_ref + M / M_ref) / 3, equal "
            "weights 1/3, on T = train seconds to best, P = trainable parameters, M = peak memory, against the "
            f"reference row (TPME 1) of the data set and setting: {'; '.join(references) or 'none'}. '-': a value "
            "not recorded (runs from before the parameter record), or a memory kind other than the reference's.")


def markdown(rows: list[dict]) -> str:
    show_other = any(r["other"] for r in rows)
    show_cost = any(not math.isnan(r.get("train_seconds_to_best", math.nan)) for r in rows)
    show_tpme = show_cost and any(not math.isnan(r.get("trainable_parameters", math.nan)) for r in rows)
    show_cold = any(r["cold_users"] != "" for r in rows)
    show_paired = any(r.get("test", "") != "" for r in rows)
    show_repeat = any(r.get("repeat_count", "") not in ("", 0) or r.get("repeat_targets", "miss") != "miss" for r in rows)
    head = ["data set", "setting", "model", "loss", "item tower", "mode"] + (["other"] if show_other else []) \
        + ["seeds", "HR@10", "NDCG@10", "HR@10 vs IDRec", "NDCG@10 vs IDRec"] \
        + (["cold-start HR@10 (users)"] if show_cold else []) + ["users / items"] \
        + (["repeat targets (rule)"] if show_repeat else []) \
        + (["test", "ΔHR@10 vs IDRec [95% CI], p", "ΔNDCG@10 vs IDRec [95% CI], p",
            "per-user ΔHR@10 (these models) [95% CI], p", "per-user ΔNDCG@10 (these models) [95% CI], p"]
           if show_paired else []) \
        + ([f"cost: train s to best, peak memory{', trainable params' if show_tpme else ''}"] if show_cost else []) \
        + (["TPME vs reference"] if show_tpme else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["dataset"], r["setting"], r["model"], r["loss"], r["item_tower"], r["mode"]] \
            + ([r["other"]] if show_other else []) \
            + [str(r["n"]), fmt(r["hr10_mean"], r["hr10_std"]), fmt(r["ndcg10_mean"], r["ndcg10_std"]),
               signed(r["hr10_vs_id_pct"]), signed(r["ndcg10_vs_id_pct"])]
        if show_cold:
            cold = "-" if r["cold_users"] in ("", 0) else f"{fmt(r['cold_hr10_mean'], r['cold_hr10_std'])} ({r['cold_users']})"
            cells.append(cold)
        cells.append(f"{r['users']} / {r['items']}" if r["users"] != "" else "-")
        if show_repeat:
            cells.append(repeat_cell(r))
        if show_paired:
            cells += [r["test"] or "-", paired_cell(r, "hr10"), paired_cell(r, "ndcg10"),
                      paired_cell(r, "hr10", "user_"), paired_cell(r, "ndcg10", "user_")]
        if show_cost:
            cells.append(cost_cell(r))
        if show_tpme:
            cells.append("-" if math.isnan(r.get("tpme", math.nan)) else f"{r['tpme']:.3f}")
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    notes = ["", "HR@10 / NDCG@10 on the test split, in percent: mean ± sample standard deviation (n - 1) "
             "over the seeds (seeds = number of runs). vs IDRec: relative change of the mean against the "
             "ID row that shares every value but the item tower (and its per-tower lr / l2_weight)."]
    unmatched = [r for r in rows if r.get("no_baseline")]
    notes += [f"No Δ for {r['item_tower']} {r['mode']} ({r['setting']}, seeds {r['seeds']}): {r['no_baseline']}."
              for r in unmatched]
    if show_cold:
        below = sorted({r["cold_below"] for r in rows if r["cold_below"] != ""})
        notes.append(f"Cold-start: test users whose target item had fewer than {'/'.join(map(str, below))} "
                     "train interactions (1 = never seen in training); their number in brackets.")
    notes += repeat_note(rows)
    if show_paired:
        notes.append(significance_note(rows))
    if show_cost:
        notes.append("Cost: the training seconds summed over epochs 1 .. best epoch (evaluation excluded) and the "
                     "run's peak memory in MiB (rss: max resident set of the process on CPU; alloc: max "
                     "allocated on CUDA), means over the row's runs; '-': runs from before cost accounting.")
        if any(not math.isnan(r.get("train_cpu_seconds_to_best", math.nan)) for r in rows):
            notes.append("CPU s: this process's CPU time over the same training steps (all threads, so with N "
                         "threads it can exceed the wall seconds; a paused or core-starved run shows wall >> CPU); "
                         "shown where every run of the row records it.")
    if show_tpme:
        notes.append(tpme_note(rows))
    return "\n".join(lines + notes) + "\n"


CSV_COLUMNS = ["dataset", "setting", "warm_min_count", "model", "loss", "item_tower", "mode", "two_stage",
               "fusion", "dnn_layers", "other", "n", "seeds", "hr10_mean", "hr10_std", "ndcg10_mean",
               "ndcg10_std", "hr10_vs_id_pct", "ndcg10_vs_id_pct", "cold_below", "cold_users",
               "cold_hr10_mean", "cold_hr10_std", "cold_ndcg10_mean", "cold_ndcg10_std", "users", "items",
               "repeat_targets", "repeat_count",                       # SPEC "Evaluation"
               "best_epochs", "runs", "baseline_runs", "no_baseline", "test", "compared_seeds", "resamples",
               "hr10_diff", "hr10_ci_low", "hr10_ci_high", "hr10_p",
               "ndcg10_diff", "ndcg10_ci_low", "ndcg10_ci_high", "ndcg10_p",
               "hr10_user_diff", "hr10_user_ci_low", "hr10_user_ci_high", "hr10_user_p",
               "ndcg10_user_diff", "ndcg10_user_ci_low", "ndcg10_user_ci_high", "ndcg10_user_p",
               "train_seconds_to_best", "train_cpu_seconds_to_best", "peak_memory_mb", "peak_memory_kind",
               "trainable_parameters", "tpme", "tpme_reference"]


def to_csv(rows: list[dict]) -> str:
    frame = pd.DataFrame.from_records(rows, columns=CSV_COLUMNS).astype(object)
    rounded = frame.map(lambda v: round(v, 4) if isinstance(v, float) and not math.isnan(v) else
                        "" if isinstance(v, float) else v)
    return rounded.to_csv(index=False, lineterminator="\n")


def write_table(rows: list[dict], out: Path, title: str = "") -> tuple[Path, Path]:
    """Write OUT.md and OUT.csv; returns their paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    md, csv_path = out.with_suffix(".md"), out.with_suffix(".csv")
    md.write_text((f"# {title}\n\n" if title else "") + markdown(rows), encoding="utf-8")
    csv_path.write_text(to_csv(rows), encoding="utf-8")
    return md, csv_path


# ----------------------------------------------------------------------------- A/A check

AA_MIN_SEEDS = 6


def aa_splits(n_seeds: int, half: int):
    """Every split of range(n_seeds) into two disjoint index tuples of `half` each (unordered:
    the half holding the smallest index present is A)."""
    from itertools import combinations
    for a in combinations(range(n_seeds), half):
        rest = [i for i in range(n_seeds) if i not in a]
        for b in combinations(rest, half):
            if a[0] < b[0]:
                yield a, b


def binomial_range(n: int, rate: float = ALPHA, level: float = 0.95) -> tuple[int, int]:
    """The central `level` range of Binomial(n, rate) counts (stats.binom.interval)."""
    low, high = stats.binom.interval(level, n, rate)
    return int(low), int(high)


def aa_check(folders: list[str | Path], half: int | None = None, metric: str = "NDCG@10",
             max_splits: int = 5000, plant: list[float] | None = None) -> list[str]:
    """A/A check on the runs of one system (the A/A check): every split of its seeds into two
    disjoint halves tested as "A vs B" by the default test (the halves share no seed: Welch over
    the seed means, as the table would test two rows without shared seeds), next to the paired t
    with the halves paired in seed order, the per-user cluster test and the old pooled test (both
    sign flips by their normal approximation here, whose error is far below the resampling noise
    at these sizes). Returns the report's lines; the last is 'A/A: x of N splits with p < 0.05 (y%)'
    for the default test on `metric`. Splits overlap (they reuse seeds), so their p-values are
    dependent: the binomial range printed is a guide, not an exact interval. More than `max_splits`
    splits (20 seeds have 92,378 halvings): a uniform random sample of that many (seeded).
    plant: gains (points of `metric`) added to half A in turn, the share of splits the default
    and the paired test find (p < 0.05): their power against real seed variation."""
    runs = load_runs(folders, quiet=True)
    where = ", ".join(map(str, folders)) if len(folders) <= 3 else f"{len(folders)} folders ({folders[0]} ...)"
    if not runs:
        raise InputError(f"--aa_check: no tested run under {where}")
    groups = grouped(runs, check=False)
    if len(groups) != 1:
        names = [f"{tower_name(g['run'].iloc[0].config)} {mode_name(g['run'].iloc[0].config)} "
                 f"({len(g)} runs)" for g in groups]
        raise InputError(f"--aa_check: {where} holds {len(groups)} systems (table rows: {'; '.join(names)}); "
                         "give the runs of one system, differing only in their seed")
    check_runs(runs)
    group = groups[0]
    if len(group) < AA_MIN_SEEDS:
        raise InputError(f"--aa_check: {where} holds {len(group)} seed(s) of one system ({' '.join(map(str, group['seed']))}); "
                         f"an A/A check needs at least {AA_MIN_SEEDS} (two disjoint halves of >= 3)")
    arrays = seed_arrays(list(group["run"]))
    if arrays is None:
        raise InputError(f"--aa_check: some runs under {where} lack test_ranks.npz; re-run their test script")
    n = len(arrays.seeds)
    half = half or n // 2
    if not 2 <= half <= n // 2:
        raise InputError(f"--aa_half {half}: choose 2 .. {n // 2} for {n} seeds")
    lines = [f"A/A check: {n} seeds ({' '.join(map(str, arrays.seeds))}) x {len(arrays.users)} users of one system "
             f"under {where}; every split into two disjoint halves of {half} seeds"]
    for m in METRICS:
        x = arrays.values[m]
        means = x.mean(axis=1)
        noise = math.sqrt(float(x.var(axis=0, ddof=1).mean()) / x.shape[1])
        lines.append(f"{m}: run means {means.mean():.2f}, sd over seeds {means.std(ddof=1):.3f} points; "
                     f"per-user noise alone would give {noise:.3f} (run-level sd "
                     f"{math.sqrt(max(means.var(ddof=1) - noise ** 2, 0.0)):.3f})")
    total = math.comb(n, half) * math.comb(n - half, half) // 2
    if total <= max_splits:
        splits = list(aa_splits(n, half))
    else:                                             # distinct random splits, without listing them all
        rng, chosen = np.random.default_rng(0), set()
        while len(chosen) < max_splits:
            order = rng.permutation(n)
            a, b = tuple(sorted(order[:half].tolist())), tuple(sorted(order[half:2 * half].tolist()))
            chosen.add((a, b) if a[0] < b[0] else (b, a))
        splits = sorted(chosen)
        lines.append(f"{total} splits: a random sample of {max_splits} tested (--aa_max_splits)")
    everyone = np.arange(len(arrays.users))
    tests = {
        "seed-level (default: Welch over seed means)":
            lambda a, b: seed_level([(a, everyone, 1.0)], [(b, everyone, 1.0)], interval=False)["p"],
        "paired t over seed means (halves paired in seed order)":
            lambda a, b: seed_level([(a - b, everyone, 1.0)], interval=False)["p"],
        "per-user cluster sign flip (these models; not a test of A vs B)":
            lambda a, b: user_cluster_test(a, b, budget=0, interval=False)["p"],
        "old pooled (seed, user) sign flip (before the seed-level default)":
            lambda a, b: sign_flip_p(a.ravel(), b.ravel(), budget=0),
    }
    low, high = binomial_range(len(splits))
    default = {}
    for name, test in tests.items():
        for m in METRICS:
            x = arrays.values[m]
            p = np.array([test(x[list(a)], x[list(b)]) for a, b in splits])
            lines.append(f"{name}, {m}: {int((p < 0.05).sum())} of {len(splits)} with p < 0.05 "
                         f"({100 * np.mean(p < 0.05):.1f}%), {int((p < 0.01).sum())} with p < 0.01 "
                         f"({100 * np.mean(p < 0.01):.1f}%)")
            if name.startswith("seed-level"):
                default[m] = p
    for gain in plant or []:
        x = arrays.values[metric]
        for name in list(tests)[:2]:
            p = np.array([tests[name](x[list(a)] + gain, x[list(b)]) for a, b in splits])
            lines.append(f"power, {metric} + {gain:g} points planted in half A, {name}: {int((p < 0.05).sum())} of "
                         f"{len(splits)} with p < 0.05 ({100 * np.mean(p < 0.05):.1f}%)")
    lines.append(f"(binomial 95% range of the count at 5% if the {len(splits)} splits were independent: {low} .. {high}; "
                 "they share seeds, so the true spread is wider)")
    p = default[metric]
    hits = int((p < ALPHA).sum())
    lines.append(f"A/A: {hits} of {len(splits)} splits with p < {ALPHA:g} ({100 * hits / len(splits):.1f}%)")
    return lines


# ----------------------------------------------------------------------------- user groups

def load_user_groups(spec: str) -> tuple[Path, str, pd.Series]:
    """FILE:COLUMN -> (file, column, group of each user name). FILE: a tab-separated file with a
    header, the user name (as in the data set's users file) in the first column."""
    if ":" not in spec:
        raise InputError(f"--user_groups {spec!r}: expected FILE:COLUMN, e.g. dataset/ml-100k/user_groups.tsv:gender")
    name, column = spec.rsplit(":", 1)
    path = Path(name)
    if not path.is_file():
        raise InputError(f"--user_groups: {path} is not a file")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise InputError(f"--user_groups: {path} cannot be read as a tab-separated file ({err})") from None
    if column not in frame.columns[1:]:
        raise InputError(f"--user_groups: {path} has no column {column!r}; its columns: {', '.join(frame.columns[1:])}")
    if frame.iloc[:, 0].duplicated().any():
        raise InputError(f"--user_groups: {path} lists a user twice ({frame.iloc[:, 0][frame.iloc[:, 0].duplicated()].iloc[0]})")
    groups = frame.set_index(frame.columns[0])[column]
    if (groups == "").any():
        raise InputError(f"--user_groups: {path}, column {column}: {int((groups == '').sum())} user(s) without a group")
    return path, column, groups


def group_members(users: pd.Index, groups: pd.Series, path: Path) -> dict[str, np.ndarray]:
    """{group: indices into users}; refuses a file that misses some of the tested users."""
    missing = users.difference(groups.index)
    if len(missing):
        raise InputError(f"--user_groups: {path} lacks {len(missing)} of the {len(users)} tested users "
                         f"(e.g. {', '.join(map(str, missing[:3]))}); it must name every user of the data set")
    labels = groups.reindex(users).to_numpy()
    return {g: np.flatnonzero(labels == g) for g in sorted(set(labels))}


def interval_cell(result: dict, p: bool = True, star: bool = True) -> str:
    if math.isnan(result["diff"]):
        return "-"
    text = f"{result['diff']:+.2f} [{result['ci_low']:+.2f}, {result['ci_high']:+.2f}]" if not p else \
        f"{result['diff']:+.2f} [{result['ci_low']:+.2f}, {result['ci_high']:+.2f}] {fmt_p(result['p'])}"
    return text + (" *" if p and star and result["p"] < ALPHA else "")


def group_table(runs: list[Run], spec: str, resamples: int = RESAMPLES) -> str:
    """Markdown: per table row and user group, HR@10 / NDCG@10 with the seed-level interval, the
    gap to the other users (group - rest, per seed, one-sample t over the seeds), and for MoRec rows
    Δ vs the IDRec row within the group and the gap of that Δ (is the gain shared by all users?)."""
    path, column, groups = load_user_groups(spec)
    table = grouped(runs)
    configs = [g["run"].iloc[0].config for g in table]
    hr10 = [g["hr10"].mean() for g in table]
    head = ["data set", "setting", "item tower", "mode", "seeds", f"{column} (users)"] + \
        [f"{m} [95% CI]" for m in METRICS] + [f"{m} gap vs other users [95% CI]" for m in METRICS] + \
        [f"Δ{m} vs IDRec [95% CI], p" for m in METRICS] + [f"Δ{m} gap vs other users [95% CI]" for m in METRICS]
    lines = [f"## Per user group: {path} column {column}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    problems = []
    for group, c in zip(table, configs):
        row_runs = list(group["run"])
        label = [c.get("dataset", ""), setting_name(c), tower_name(c), mode_name(c), " ".join(map(str, group["seed"]))]
        if len(row_runs) < 2:
            problems.append(f"{tower_name(c)} {mode_name(c)} (seeds {' '.join(map(str, group['seed']))}): 1 seed, "
                            "no seed-level interval (needs >= 2 seeds)")
            continue
        arrays = seed_arrays(row_runs)
        if arrays is None:
            problems.append(f"{tower_name(c)} {mode_name(c)}: runs without test_ranks.npz; re-run their test script")
            continue
        members = group_members(arrays.users, groups, path)
        index = baseline_index(c, configs, hr10)
        pair = pairing(row_runs, list(table[index]["run"])) if index is not None else None
        if pair is not None and pair.problem:
            problems.append(f"{tower_name(c)} {mode_name(c)}: no Δ per group: {pair.problem}")
        elif index is None and not is_id(c):
            problems.append(f"{tower_name(c)} {mode_name(c)}: no Δ per group: {no_baseline_reason(c, configs)}")
        for name, users in members.items():
            rest = np.setdiff1d(np.arange(len(arrays.users)), users)
            cells = list(label) + [f"{name} ({len(users)})"]
            for m in METRICS:
                value = seed_level([(arrays.values[m], users, 1.0)], None, resamples)
                cells.append(f"{value['diff']:.2f} [{value['ci_low']:.2f}, {value['ci_high']:.2f}]")
            for m in METRICS:
                x = arrays.values[m]
                cells.append(interval_cell(seed_level([(x, users, 1.0), (x, rest, -1.0)], None, resamples), p=False))
            for m in METRICS:
                if pair is None or pair.problem:
                    cells.append("-")
                    continue
                cells.append(interval_cell(compare(pair, m, users, resamples)))
            for m in METRICS:
                if pair is None or pair.problem:
                    cells.append("-")
                    continue
                a, b = pair.a.values[m], pair.b.values[m]
                result = seed_level([(a - b, users, 1.0), (a - b, rest, -1.0)], None, resamples) if pair.paired else \
                    seed_level([(a, users, 1.0), (a, rest, -1.0)], [(b, users, 1.0), (b, rest, -1.0)], resamples)
                cells.append(interval_cell(result, p=False))
            lines.append("| " + " | ".join(str(v).replace("|", "/") for v in cells) + " |")
    lines += ["", f"Per group of {path} ({column}): the mean over seeds in percent with the 95% interval of the two-level "
              f"bootstrap (seeds, then the group's users within each seed; {resamples} resamples); gap = group minus "
              "the other users of the same runs; Δ vs IDRec within the group (the table's default seed-level test, "
              "* = p < 0.05); Δ gap = the group's Δ minus the other users' Δ (a gain not shared by all users shows "
              "here). The gaps get an interval only: which users form a group is a sample too, and only the "
              "bootstrap's second level sees it (a t test over the seeds would not)."]
    lines += [f"Not shown: {p}." for p in problems]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", help="experiment, runs or run folders")
    parser.add_argument("--out", help="write OUT.md and OUT.csv (default: print the markdown only)")
    parser.add_argument("--title", default="", help="a heading for OUT.md")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help="bootstrap and sign-flip resamples per comparison")
    parser.add_argument("--user_groups", metavar="FILE:COLUMN",
                        help="also a table per user group (e.g. dataset/ml-100k/user_groups.tsv:gender): each row's "
                             "HR@10 / NDCG@10 per group, the gap between groups, Δ vs IDRec per group")
    parser.add_argument("--aa_check", nargs="+", metavar="RUNS_DIR",
                        help="A/A check instead of a table: the runs of ONE system (>= 6 seeds), every split of its "
                             "seeds into two disjoint halves tested as A vs B; last line: the share with p < 0.05")
    parser.add_argument("--aa_half", type=int, help="--aa_check: seeds per half (default: half of them)")
    parser.add_argument("--aa_max_splits", type=int, default=5000,
                        help="--aa_check: test a random sample of this many splits when there are more (default 5000)")
    parser.add_argument("--aa_plant", type=float, nargs="*", metavar="POINTS",
                        help="--aa_check: also add each of these gains (points of --aa_metric) to half A: the power "
                             "of the test against these runs' seed variation")
    parser.add_argument("--aa_metric", choices=METRICS, default="NDCG@10",
                        help="--aa_check: the metric of the last line (default NDCG@10; every line shows both)")
    args = parser.parse_args(argv)
    if args.resamples < 99:
        raise InputError(f"--resamples {args.resamples} is too few for a 95% interval; use at least 99 (default {RESAMPLES})")
    if args.aa_check:
        if args.folders or args.out or args.user_groups:
            raise InputError("--aa_check takes its runs folder(s) only: no table folders, --out or --user_groups")
        print("\n".join(aa_check(args.aa_check, args.aa_half, args.aa_metric, args.aa_max_splits, args.aa_plant)))
        return
    if not args.folders:
        raise InputError("give the folders of the runs to tabulate (or --aa_check RUNS_DIR)")
    if args.user_groups:
        load_user_groups(args.user_groups)                   # a bad FILE:COLUMN fails before the table's work
    runs = load_runs(args.folders)
    if not runs:
        raise InputError(f"no tested run under {', '.join(args.folders)}; train and test runs first "
                         "(a run counts once its folder holds test_metrics.json)")
    rows = table_rows(runs, args.resamples)
    text = markdown(rows)
    groups_text = group_table(runs, args.user_groups, args.resamples) if args.user_groups else ""
    if groups_text:
        text += "\n" + groups_text
    print(text, end="")
    if args.out:
        for path in write_table(rows, Path(args.out), args.title):
            print(f"wrote {path}", file=sys.stderr)
        if groups_text:
            groups_path = Path(args.out).with_name(Path(args.out).name + "_groups.md")
            groups_path.write_text(groups_text, encoding="utf-8")
            print(f"wrote {groups_path}", file=sys.stderr)

if __name__ == "__main__":
    run_cli(main)
