"""Results tables like the paper's: every finished run under the given folders, grouped by data set
x setting x model x loss x item tower x training mode, HR@10 / NDCG@10 in percent as mean ± sample
standard deviation over the seeds, the relative improvement over the matching IDRec row, and paired
per-user statistics against that row.

    python scripts/results_table.py inbatch_sasrec_e2e_text bce_text [--out docs/results]
    python scripts/results_table.py runs/studies/ml-100k --out table      # table.md + table.csv

A folder may be a run folder (it holds config.json), an experiment folder, or anything above them:
every `config.json` below it whose folder also holds `test_metrics.json` (written by a test_*.py
script) is one run; runs that were trained but not tested are listed on stderr and left out.

Grouping: runs whose resolved configs (config.json, missing keys filled with today's defaults so
older runs still load) are equal except for `seed` and run-control values form one row; patience,
epoch cap and the run's "setting" (world size and precision; missing: one process, fp32) stay in
the key, and so does the tie rule of its test metrics (a test_metrics.json without "ties" predates
SPEC's tie rule: "optimistic"). The row shows the mean over its runs and, with two or more seeds,
the sample standard deviation (n - 1).
Improvement over IDRec = (row mean - IDRec mean) / IDRec mean, in percent, against the ID-tower
row of the same data set, setting, model, loss, sequence lengths, users file and tie rule; when
several ID rows qualify, the one sharing the most other values is used (then the higher HR@10).
Paired statistics (SPEC "Evaluation"; test_*.py saves each user's tie counts in test_ranks.npz):
for the seeds both rows share, user u of seed s is paired with user u of the same seed; over all
pairs, the mean difference of per-user NDCG@10 and HR@10 (percentage points), a 95% paired
bootstrap confidence interval (scipy.stats.bootstrap, paired=True, percentile, 2000 resamples;
users resampled) and a two-sided paired sign-flip p-value (scipy.stats.permutation_test,
permutation_type="samples", 2000 resamples; its normal approximation for very large tables).
A "*" marks a difference whose interval excludes 0. Runs tested before test_ranks.npz existed
get "-" there.
Columns: setting = regular or warm-K (`warm_min_count`); item tower = ID or the encoder folder;
mode = E2E (end to end), TS (two-stage, frozen features) with its DNN depth, +ID add/cat (fusion);
cold-start = HR@10 on the test users whose target had < k train interactions (test_*.py's view);
users / items = the data after filtering (warm settings keep fewer).
Cost (shown when the runs' metrics.jsonl record it, issue 13.6; morec/cost.py): train seconds to the
best epoch = the sum of `train_seconds` over epochs 1 .. best epoch (the training that produced the
tested checkpoint; evaluation not included), and the run's peak memory = the largest
`peak_memory_mb` of its epochs (MiB; "rss" = max RSS of the process on CPU, "alloc" = max
allocated on CUDA); both the mean over the row's runs. Runs from before cost accounting get "-".
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from morec.config import RUN_CONTROL, UNUSED_BY_TOWER, Config
from morec.errors import InputError, run_cli
from morec.evaluate import per_user_metrics

METRICS = ("HR@10", "NDCG@10")
# Keys shown in their own columns (or meaningless across runs): not listed under "other".
SHOWN = {"dataset", "warm_min_count", "model", "loss", "item_tower", "bert_model_load", "cv_model_load",
         "two_stage", "fusion", "dnn_layers", "mo_dnn_layers", "seed", "ts_layers"}
# Run-control values that still change what a run reports: kept in the grouping key.
GROUPED_RUN_CONTROL = {"patience", "epoch"}
DEFAULT_SETTING = {"world_size": 1, "precision": "fp32"}
# An IDRec row is comparable when these agree.
BASELINE_KEYS = ("dataset", "root_data_dir", "behaviors", "news", "warm_min_count", "model", "loss",
                 "max_seq_len", "min_seq_len", "setting", "ties")
# Item towers and the config key naming their encoder (vision keys are read when present).
ENCODER_KEYS = {"text": "bert_model_load", "vision": "cv_model_load", "image": "cv_model_load"}
CONFIDENCE = 0.95
RESAMPLES = 2000                      # bootstrap and sign-flip resamples per comparison (--resamples)


@dataclass
class Run:
    dir: Path
    config: dict          # config.json over today's defaults, "setting" filled, "ties" of the test
    test: dict            # test_metrics.json

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
    saved.pop("data_identity", None)          # digests of the data read (morec.data.identity), not a setting
    source = saved.pop("init_source", None)   # --init_from: the source run, named apart from its seed
    if isinstance(source, dict) and saved.get("init_from"):
        saved["init_from"] = f"{source.get('dataset')} run {source.get('values_sha1')}"
    config = {**defaults, **saved, "setting": {**DEFAULT_SETTING, **(saved.get("setting") or {})},
              "ties": test.get("ties", "optimistic")}
    return Run(run_dir, config, test)


def load_runs(folders: list[str | Path], quiet: bool = False) -> list[Run]:
    """Every tested run under `folders`; the untested ones are listed on stderr unless quiet."""
    tested, untested = find_run_dirs(folders)
    if untested and not quiet:
        print(f"left out {len(untested)} run(s) without test_metrics.json (run their test script): "
              + ", ".join(str(p) for p in untested[:5]) + (" ..." if len(untested) > 5 else ""), file=sys.stderr)
    return [load_run(d) for d in tested]


def per_user(run: Run) -> pd.DataFrame | None:
    """The run's per-user test HR@10 and NDCG@10 in percent, indexed by user name (None when the
    run was tested before test_ranks.npz existed). Refuses a file that does not match the run's
    test_metrics.json (another test, a truncated file)."""
    name = run.test.get("per_user")
    if not name:
        return None
    path = run.dir / name
    try:
        with np.load(path, allow_pickle=False) as saved:
            h, t, users = saved["h"], saved["t"], saved["user"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise InputError(f"{path} cannot be read ({type(err).__name__}: {err}); re-run the run's test script") from None
    if len(h) != run.test.get("num_users", len(h)) or not (len(h) == len(t) == len(users)) or (h < 0).any() or (t < 0).any():
        raise InputError(f"{path} does not hold one (h, t) pair per test user of {run.dir / 'test_metrics.json'}; "
                         "re-run the run's test script")
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
    return records


def run_cost(run: Run) -> dict:
    """{"train_seconds_to_best": sum of train_seconds over epochs 1 .. best epoch,
    "peak_memory_mb": the largest epoch peak, "peak_memory_kind"}; NaN / "" where metrics.jsonl
    lacks them (runs from before cost accounting, or a history that misses an epoch)."""
    history = {r.get("epoch"): r for r in read_history(run.dir)}
    best = run.test.get("best_epoch")
    epochs = [history.get(e) for e in range(1, best + 1)] if isinstance(best, int) else [None]
    seconds = (sum(r["train_seconds"] for r in epochs)
               if all(r is not None and "train_seconds" in r for r in epochs) else math.nan)
    peaks = [r for r in history.values() if "peak_memory_mb" in r]
    return {"train_seconds_to_best": seconds,
            "peak_memory_mb": max((r["peak_memory_mb"] for r in peaks), default=math.nan),
            "peak_memory_kind": "/".join(sorted({r.get("peak_memory_kind", "?") for r in peaks}))}


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


def grouped(runs: list[Run]) -> list[pd.DataFrame]:
    """The runs of each row (a frame per group, seeds in order), rows in table order."""
    groups = [frame for _, frame in runs_frame(runs).groupby("key", sort=False)]
    return sorted(groups, key=lambda g: config_sort_key(g["run"].iloc[0].config))


def other_values(configs: list[dict]) -> list[str]:
    """For each row's config, the values (not shown in their own columns) that differ between rows."""
    keys = sorted({k for c in configs for k in c} - SHOWN - (RUN_CONTROL - GROUPED_RUN_CONTROL))
    varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [" ".join(f"{k}={c.get(k)}" for k in varying if k not in UNUSED_BY_TOWER.get(c.get("item_tower", "id"), set()))
            for c in configs]


def baseline_index(config: dict, configs: list[dict], hr10: list[float]) -> int | None:
    """Index of the IDRec row this row is compared with (None for ID rows or when none matches)."""
    if is_id(config):
        return None
    candidates = [i for i, c in enumerate(configs)
                  if is_id(c) and all(c.get(k) == config.get(k) for k in BASELINE_KEYS)]
    if not candidates:
        return None

    def closeness(i: int):
        c = configs[i]
        shared = sum(c.get(k) == config.get(k) for k in config
                     if k not in RUN_CONTROL - GROUPED_RUN_CONTROL)
        return shared, hr10[i]
    return max(candidates, key=closeness)


# ----------------------------------------------------------------------------- paired statistics

def paired_pairs(rows: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame | None:
    """Per-user metrics of the two rows, paired by (seed, user) over their shared seeds:
    columns HR@10, NDCG@10, base_HR@10, base_NDCG@10 (percent). None without per-user files."""
    parts = []
    base_by_seed = dict(zip(base["seed"], base["run"]))
    for seed, run in zip(rows["seed"], rows["run"]):
        if seed not in base_by_seed:
            continue
        mine, theirs = per_user(run), per_user(base_by_seed[seed])
        if mine is None or theirs is None:
            continue
        if not mine.index.equals(theirs.index):
            raise InputError(f"{run.dir} and {base_by_seed[seed].dir} did not test the same users in the same "
                             "order; they cannot be paired (same data set and filters?)")
        parts.append(mine.join(theirs.add_prefix("base_")))
    return pd.concat(parts) if parts else None


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
                budget: float = 2e7) -> float:
    """Two-sided p-value of the paired sign-flip test of mean(a - b) = 0 (each pair's two values
    swapped at random under the null). Identical pairs: p = 1.

    Pairs with equal values do not change the statistic under any flip, so only the others are
    resampled: scipy.stats.permutation_test(permutation_type="samples") on the differences (a
    one-sample sign flip; exact when 2^n <= resamples). Above `budget` differences x resamples
    (scipy's resampling takes about a second per 10^7), the normal approximation of the same
    test: sum(d) has mean 0 and variance sum(d^2) over the flips; with > 10^4 differences its
    error is far below the resampling noise (tests/test_results_table.py compares the two)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    if len(d) * resamples > budget:
        return float(2 * stats.norm.sf(abs(float(np.sum(d))) / math.sqrt(float(np.sum(d * d)))))
    return float(stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                        n_resamples=resamples, rng=np.random.default_rng(seed)).pvalue)


def paired_test(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean of a - b over pairs, its 95% paired-bootstrap interval and the two-sided sign-flip
    p-value. a, b (P,) paired values (percent)."""
    low, high = bootstrap_interval(a, b, resamples, seed)
    return {"diff": float(np.mean(a - b)), "ci_low": low, "ci_high": high, "p": sign_flip_p(a, b, resamples, seed)}


def paired_columns(rows: pd.DataFrame, base: pd.DataFrame | None, resamples: int) -> dict:
    """The row's paired columns against its IDRec rows: pairs, then per metric diff / CI / p."""
    pairs = paired_pairs(rows, base) if base is not None else None
    out = {"pairs": "" if pairs is None else len(pairs)}
    for metric in METRICS:
        key = metric.split("@")[0].lower() + "10"
        result = (paired_test(pairs[metric].to_numpy(), pairs[f"base_{metric}"].to_numpy(), resamples)
                  if pairs is not None else dict.fromkeys(("diff", "ci_low", "ci_high", "p"), math.nan))
        out.update({f"{key}_{name}": value for name, value in result.items()})
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
        row["best_epochs"] = " ".join(str(r.test.get("best_epoch", "")) for r in group["run"])
        row["runs"] = " ".join(group["label"])
        row.update(paired_columns(group, base, resamples))
        row["train_seconds_to_best"] = group["train_seconds_to_best"].mean(skipna=False)   # NaN unless every run has it
        row["peak_memory_mb"] = group["peak_memory_mb"].mean(skipna=False)
        row["peak_memory_kind"] = "/".join(sorted({k for part in group["peak_memory_kind"] for k in part.split("/") if k}))
        rows.append(row)
    return rows


def fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def paired_cell(r: dict, key: str) -> str:
    """'+1.23 [+0.40, +2.10] p=0.004 *' (percentage points; * : the interval excludes 0)."""
    if math.isnan(r[f"{key}_diff"]):
        return "-"
    excludes_zero = r[f"{key}_ci_low"] > 0 or r[f"{key}_ci_high"] < 0
    return (f"{r[f'{key}_diff']:+.2f} [{r[f'{key}_ci_low']:+.2f}, {r[f'{key}_ci_high']:+.2f}] "
            f"p={r[f'{key}_p']:.3g}" + (" *" if excludes_zero else ""))


MEMORY_KINDS = {"max_rss": "rss", "max_rss_process": "rss since start", "max_allocated": "alloc"}


def cost_cell(r: dict) -> str:
    """'412 s, 1234 MiB rss': train seconds to the best epoch and peak memory (module docstring)."""
    if math.isnan(r["train_seconds_to_best"]):
        return "-"
    memory = "" if math.isnan(r["peak_memory_mb"]) else \
        f", {r['peak_memory_mb']:.0f} MiB " + "/".join(MEMORY_KINDS.get(k, k) for k in r["peak_memory_kind"].split("/"))
    return f"{r['train_seconds_to_best']:.0f} s" + memory


def markdown(rows: list[dict]) -> str:
    show_other = any(r["other"] for r in rows)
    show_cost = any(not math.isnan(r.get("train_seconds_to_best", math.nan)) for r in rows)
    show_cold = any(r["cold_users"] != "" for r in rows)
    show_paired = any(r.get("pairs", "") != "" for r in rows)
    head = ["data set", "setting", "model", "loss", "item tower", "mode"] + (["other"] if show_other else []) \
        + ["seeds", "HR@10", "NDCG@10", "HR@10 vs IDRec", "NDCG@10 vs IDRec"] \
        + (["cold-start HR@10 (users)"] if show_cold else []) + ["users / items"] \
        + (["paired users", "ΔHR@10 vs IDRec [95% CI], p", "ΔNDCG@10 vs IDRec [95% CI], p"] if show_paired else []) \
        + (["cost: train s to best, peak memory"] if show_cost else [])
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
        if show_paired:
            cells += [r["pairs"] if r["pairs"] != "" else "-", paired_cell(r, "hr10"), paired_cell(r, "ndcg10")]
        if show_cost:
            cells.append(cost_cell(r))
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    notes = ["", "HR@10 / NDCG@10 on the test split, in percent: mean ± sample standard deviation (n - 1) "
             "over the seeds (seeds = number of runs). vs IDRec: relative change of the mean against the "
             "ID row of the same data set and setting."]
    if show_cold:
        below = sorted({r["cold_below"] for r in rows if r["cold_below"] != ""})
        notes.append(f"Cold-start: test users whose target item had fewer than {'/'.join(map(str, below))} "
                     "train interactions (1 = never seen in training); their number in brackets.")
    if show_paired:
        notes.append("Paired: mean per-user difference against the IDRec row in percentage points, over the "
                     "users of the seeds both rows share (paired users = users x shared seeds); 95% paired "
                     "bootstrap interval; two-sided sign-flip p-value; * = the interval excludes 0.")
    if show_cost:
        notes.append("Cost: the training seconds summed over epochs 1 .. best epoch (evaluation excluded) and the "
                     "run's peak memory in MiB (rss: max resident set of the process on CPU; alloc: max "
                     "allocated on CUDA), means over the row's runs; '-': runs from before cost accounting.")
    return "\n".join(lines + notes) + "\n"


CSV_COLUMNS = ["dataset", "setting", "warm_min_count", "model", "loss", "item_tower", "mode", "two_stage",
               "fusion", "dnn_layers", "other", "n", "seeds", "hr10_mean", "hr10_std", "ndcg10_mean",
               "ndcg10_std", "hr10_vs_id_pct", "ndcg10_vs_id_pct", "cold_below", "cold_users",
               "cold_hr10_mean", "cold_hr10_std", "cold_ndcg10_mean", "cold_ndcg10_std", "users", "items",
               "best_epochs", "runs", "pairs", "hr10_diff", "hr10_ci_low", "hr10_ci_high", "hr10_p",
               "ndcg10_diff", "ndcg10_ci_low", "ndcg10_ci_high", "ndcg10_p", "train_seconds_to_best",
               "peak_memory_mb", "peak_memory_kind"]


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


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="experiment, runs or run folders")
    parser.add_argument("--out", help="write OUT.md and OUT.csv (default: print the markdown only)")
    parser.add_argument("--title", default="", help="a heading for OUT.md")
    parser.add_argument("--resamples", type=int, default=RESAMPLES,
                        help="bootstrap and sign-flip resamples per paired comparison")
    args = parser.parse_args(argv)
    if args.resamples < 99:
        raise InputError(f"--resamples {args.resamples} is too few for a 95% interval; use at least 99 (default {RESAMPLES})")
    runs = load_runs(args.folders)
    if not runs:
        raise InputError(f"no tested run under {', '.join(args.folders)}; train and test runs first "
                         "(a run counts once its folder holds test_metrics.json)")
    rows = table_rows(runs, args.resamples)
    print(markdown(rows), end="")
    if args.out:
        for path in write_table(rows, Path(args.out), args.title):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
