"""The table rows (morec/report/rows.py) as text: markdown (cells and the notes under the table)
and CSV; write_table writes OUT.md and OUT.csv.

Cost cell (shown when the runs' metrics.jsonl record it; morec/cost.py): train seconds to the best
epoch (the sum of `train_seconds` over epochs 1 .. best epoch), "(CPU N s)" where every run of the
row records `train_cpu_seconds`, the run's peak memory in MiB ("rss" = max RSS of the process on
CPU, "alloc" = max allocated on CUDA) and, when recorded, the trainable parameters; means over the
row's runs; "-" for runs from before cost accounting.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from morec.report.significance import ALPHA, RESAMPLES, fmt_p


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
