"""Results tables like the paper's: every finished run under the given folders, grouped by data set
x setting x model x loss x item tower x training mode, HR@10 / NDCG@10 in percent as mean ± sample
standard deviation over the seeds, and the relative improvement over the matching IDRec row.

    python scripts/results_table.py inbatch_sasrec_e2e_text bce_text [--out docs/results]
    python scripts/results_table.py runs/studies/ml-100k --out table      # table.md + table.csv

A folder may be a run folder (it holds config.json), an experiment folder, or anything above them:
every `config.json` below it whose folder also holds `test_metrics.json` (written by a test_*.py
script) is one run; runs that were trained but not tested are listed on stderr and left out.

Grouping: runs whose resolved configs (config.json, missing keys filled with today's defaults so
older runs still load) are equal except for `seed` and run-control values form one row; the row
shows the mean over its runs and, with two or more seeds, the sample standard deviation (n - 1).
Improvement over IDRec = (row mean - IDRec mean) / IDRec mean, in percent, against the ID-tower
row of the same data set, setting, model, loss, sequence lengths and users file; when several ID
rows qualify, the one sharing the most other values is used (then the higher HR@10).
Columns: setting = regular or warm-K (`warm_min_count`); item tower = ID or the encoder folder;
mode = E2E (end to end), TS (two-stage, frozen features) with its DNN depth, +ID add/cat (fusion);
cold-start = HR@10 on the test users whose target had < k train interactions (test_*.py's view);
users / items = the data after filtering (warm settings keep fewer).
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import csv
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from morec.config import RUN_CONTROL, UNUSED_BY_TOWER, Config
from morec.errors import InputError, run_cli

METRICS = ("HR@10", "NDCG@10")
# Keys shown in their own columns (or meaningless across runs): not listed under "other".
SHOWN = {"dataset", "warm_min_count", "model", "loss", "item_tower", "bert_model_load", "cv_model_load",
         "two_stage", "fusion", "dnn_layers", "mo_dnn_layers", "seed"}
# An IDRec row is comparable when these agree.
BASELINE_KEYS = ("dataset", "root_data_dir", "behaviors", "news", "warm_min_count", "model", "loss",
                 "max_seq_len", "min_seq_len")
# Item towers and the config key naming their encoder (vision keys are read when present).
ENCODER_KEYS = {"text": "bert_model_load", "vision": "cv_model_load", "image": "cv_model_load"}


@dataclass
class Run:
    dir: Path
    config: dict          # config.json over today's defaults
    test: dict            # test_metrics.json

    @property
    def label(self) -> str:
        return self.dir.name


@dataclass
class Group:
    config: dict                      # the shared values (seed: of the first run)
    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str, part: str = "test") -> list[float]:
        """Percent values of `metric` over the runs (part 'test' or 'cold')."""
        out = []
        for run in self.runs:
            metrics = run.test.get("test", {}) if part == "test" else (run.test.get("cold_start") or {}).get("metrics")
            if metrics and metric in metrics:
                out.append(100.0 * metrics[metric])
        return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is nan below two values."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


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
    return Run(run_dir, {**defaults, **saved}, test)


def load_runs(folders: list[str | Path], quiet: bool = False) -> list[Run]:
    """Every tested run under `folders`; the untested ones are listed on stderr unless quiet."""
    tested, untested = find_run_dirs(folders)
    if untested and not quiet:
        print(f"left out {len(untested)} run(s) without test_metrics.json (run their test script): "
              + ", ".join(str(p) for p in untested[:5]) + (" ..." if len(untested) > 5 else ""), file=sys.stderr)
    return [load_run(d) for d in tested]


# ----------------------------------------------------------------------------- grouping

def group_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in RUN_CONTROL and k != "seed"},
                      sort_keys=True, default=str)


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(group_key(run.config), Group(run.config)).runs.append(run)
    for group in groups.values():
        group.runs.sort(key=lambda r: (r.config.get("seed", 0), r.label))
    return sorted(groups.values(), key=sort_key)


def is_id(config: dict) -> bool:
    return config.get("item_tower", "id") == "id"


def tower_name(config: dict) -> str:
    tower = config.get("item_tower", "id")
    if tower == "id":
        return "ID"
    key = ENCODER_KEYS.get(tower)
    return f"{tower}: {config[key]}" if key and config.get(key) else tower


def mode_name(config: dict) -> str:
    mode = "TS" if config.get("two_stage") else "E2E"
    if config.get("fusion", "none") not in ("none", ""):
        mode += f" +ID {config['fusion']}"
        if config.get("two_stage") and config.get("mo_dnn_layers"):
            mode += f" mo_dnn={config['mo_dnn_layers']}"
    if config.get("two_stage") or config.get("model") == "dssm":
        mode += f" dnn={config.get('dnn_layers', 0)}"
    return mode


def setting_name(config: dict) -> str:
    warm = config.get("warm_min_count", 0)
    return f"warm-{warm}" if warm else "regular"


def sort_key(group: Group):
    return config_sort_key(group.config)


def config_sort_key(c: dict):
    """Data set, setting, model, loss, IDRec first, tower, E2E before TS, DNN depth."""
    return (c.get("dataset", ""), c.get("warm_min_count", 0), c.get("model", ""), c.get("loss", ""),
            not is_id(c), tower_name(c), bool(c.get("two_stage")), c.get("fusion", "none"),
            c.get("dnn_layers", 0), group_key(c))


def other_values(groups: list[Group]) -> dict[int, str]:
    """For each group, the values (not shown in their own columns) that differ between groups."""
    keys = sorted({k for g in groups for k in g.config} - SHOWN - RUN_CONTROL)
    varying = [k for k in keys if len({json.dumps(g.config.get(k), default=str) for g in groups}) > 1]
    return {id(g): " ".join(f"{k}={g.config.get(k)}" for k in varying
                            if k not in UNUSED_BY_TOWER.get(g.config.get("item_tower", "id"), set()))
            for g in groups}


def baseline_for(group: Group, groups: list[Group]) -> Group | None:
    """The IDRec group this group is compared with (None for ID groups or when none matches)."""
    if is_id(group.config):
        return None
    candidates = [g for g in groups if is_id(g.config)
                  and all(g.config.get(k) == group.config.get(k) for k in BASELINE_KEYS)]
    if not candidates:
        return None

    def closeness(g: Group):
        shared = sum(g.config.get(k) == group.config.get(k) for k in group.config if k not in RUN_CONTROL)
        return shared, mean_std(g.values("HR@10"))[0]
    return max(candidates, key=closeness)


# ----------------------------------------------------------------------------- the table

def fmt(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def improvement(value: float, base: float) -> float:
    return math.nan if math.isnan(value) or math.isnan(base) or base == 0 else 100.0 * (value - base) / base


def table_rows(runs: list[Run]) -> list[dict]:
    """One dict per group: the values of the markdown and CSV tables (metrics in percent)."""
    groups = group_runs(runs)
    others = other_values(groups)
    rows = []
    for group in groups:
        c = group.config
        row = {"dataset": c.get("dataset", ""), "setting": setting_name(c),
               "warm_min_count": c.get("warm_min_count", 0), "model": c.get("model", ""),
               "loss": c.get("loss", ""), "item_tower": tower_name(c), "mode": mode_name(c),
               "two_stage": bool(c.get("two_stage")), "fusion": c.get("fusion", "none"),
               "dnn_layers": c.get("dnn_layers", 0), "other": others[id(group)],
               "seeds": " ".join(str(r.config.get("seed")) for r in group.runs), "n": len(group.runs)}
        base = baseline_for(group, groups)
        for metric in METRICS:
            key = metric.split("@")[0].lower() + "10"
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(group.values(metric))
            base_mean = mean_std(base.values(metric))[0] if base else math.nan
            row[f"{key}_vs_id_pct"] = improvement(row[f"{key}_mean"], base_mean)
        cold = [r.test.get("cold_start") for r in group.runs if r.test.get("cold_start")]
        row["cold_below"] = cold[0]["below"] if cold else ""
        row["cold_users"] = cold[0]["users"] if cold else ""
        row["cold_hr10_mean"], row["cold_hr10_std"] = mean_std(group.values("HR@10", "cold"))
        row["cold_ndcg10_mean"], row["cold_ndcg10_std"] = mean_std(group.values("NDCG@10", "cold"))
        row["users"] = group.runs[0].test.get("num_users", "")
        row["items"] = group.runs[0].test.get("num_items", "")
        row["best_epochs"] = " ".join(str(r.test.get("best_epoch", "")) for r in group.runs)
        row["runs"] = " ".join(r.label for r in group.runs)
        rows.append(row)
    return rows


def signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}%"


def markdown(rows: list[dict]) -> str:
    show_other = any(r["other"] for r in rows)
    show_cold = any(r["cold_users"] != "" for r in rows)
    head = ["data set", "setting", "model", "loss", "item tower", "mode"] + (["other"] if show_other else []) \
        + ["seeds", "HR@10", "NDCG@10", "HR@10 vs IDRec", "NDCG@10 vs IDRec"] \
        + (["cold-start HR@10 (users)"] if show_cold else []) + ["users / items"]
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
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    notes = ["", "HR@10 / NDCG@10 on the test split, in percent: mean ± sample standard deviation (n - 1) "
             "over the seeds (seeds = number of runs). vs IDRec: relative change of the mean against the "
             "ID row of the same data set and setting."]
    if show_cold:
        below = sorted({r["cold_below"] for r in rows if r["cold_below"] != ""})
        notes.append(f"Cold-start: test users whose target item had fewer than {'/'.join(map(str, below))} "
                     "train interactions (1 = never seen in training); their number in brackets.")
    return "\n".join(lines + notes) + "\n"


CSV_COLUMNS = ["dataset", "setting", "warm_min_count", "model", "loss", "item_tower", "mode", "two_stage",
               "fusion", "dnn_layers", "other", "n", "seeds", "hr10_mean", "hr10_std", "ndcg10_mean",
               "ndcg10_std", "hr10_vs_id_pct", "ndcg10_vs_id_pct", "cold_below", "cold_users",
               "cold_hr10_mean", "cold_hr10_std", "cold_ndcg10_mean", "cold_ndcg10_std", "users", "items",
               "best_epochs", "runs"]


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(r[k], float) and math.isnan(r[k]) else
                             round(r[k], 4) if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS})
    return out.getvalue()


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
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        raise InputError(f"no tested run under {', '.join(args.folders)}; train and test runs first "
                         "(a run counts once its folder holds test_metrics.json)")
    rows = table_rows(runs)
    print(markdown(rows), end="")
    if args.out:
        for path in write_table(rows, Path(args.out), args.title):
            print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
