"""--user_groups FILE:COLUMN: a table per user group (e.g. dataset/ml-100k/user_groups.tsv:gender):
each row's HR@10 / NDCG@10 per group and the gap between groups, each with the seed-level
interval, and Δ vs IDRec per group (morec/report/significance.py).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from morec.errors import InputError
from morec.report.grouping import baseline_index, grouped, is_id, mode_name, no_baseline_reason, setting_name, tower_name
from morec.report.run_files import METRICS, Run
from morec.report.significance import ALPHA, RESAMPLES, compare, fmt_p, pairing, seed_arrays, seed_level


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
