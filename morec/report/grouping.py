"""Runs into table rows, and each MoRec row's IDRec baseline.

Grouping: runs whose resolved configs (config.json, missing keys filled with today's defaults so
older runs still load) are equal except for `seed` and run-control values form one row; patience,
epoch cap and the run's "setting" (world size and precision; missing: one process, fp32) stay in
the key, and so does the tie rule of its test metrics (a test_metrics.json without "ties" predates
SPEC's tie rule: "optimistic"). Rows are named by setting (regular / warm-K), item tower (ID or
the encoder folder) and mode (E2E, TS with its DNN depth, +ID add/cat).
Baseline: the ID-tower row that shares every value of the grouping key but the item tower
(ITEM_TOWER_KEYS, TUNED_PER_TOWER may differ); among several, the one sharing the most other
values (then the higher HR@10); without one, no_baseline_reason names the values that differ from
the nearest ID row.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from morec.config import RUN_CONTROL, UNUSED_BY_TOWER
from morec.errors import InputError
from morec.report.run_files import DEFAULT_SETTING, Run, run_cost

# Keys shown in their own columns (or meaningless across runs): not listed under "other".
SHOWN = {"dataset", "warm_min_count", "model", "loss", "item_tower", "bert_model_load", "cv_model_load",
         "two_stage", "fusion", "dnn_layers", "mo_dnn_layers", "seed", "ts_layers"}
# Run-control values that still change what a run reports: kept in the grouping key.
GROUPED_RUN_CONTROL = {"patience", "epoch"}
# Item towers and the config key naming their encoder (vision keys are read when present).
ENCODER_KEYS = {"text": "bert_model_load", "vision": "cv_model_load", "image": "cv_model_load"}


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
