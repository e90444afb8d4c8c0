"""One dict per table row (table_rows): the row's names, HR@10 / NDCG@10 mean and standard
deviation over its seeds, the relative change against its IDRec row, the significance columns
(morec/report/significance.py), the cold-start view, repeat targets and the training cost.

TPME (IISAN, Fu et al., SIGIR 2024; morec.cost.tpme) = (T / T_ref + P / P_ref + M / M_ref) / 3,
equal weights, on T = train seconds to best, P = trainable parameters and M = peak memory, against
one reference row per data set and setting: its full fine-tuning row (a text / vision tower
trained end to end, no frozen blocks, no PEFT; the one with the most trainable parameters if
several), else the row with the most trainable parameters. Lower is better, 1 for the reference;
NaN for a row lacking a value, or whose memory kind (rss / alloc) differs from the reference's.
"""
from __future__ import annotations

import math

import pandas as pd

from morec.cost import tpme
from morec.report.grouping import (baseline_index, grouped, mode_name, no_baseline_reason, other_values,
                                   setting_name, tower_name)
from morec.report.run_files import Run
from morec.report.significance import RESAMPLES, paired_columns


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
