"""Figures of runs, as PNG (matplotlib, no display needed).

    python scripts/plot_runs.py curves RUN_OR_FOLDER... --out curves.png [--metric NDCG@10]
    python scripts/plot_runs.py bars FOLDER... --out bars.png

curves: valid metric (default NDCG@10, percent) and train loss per epoch of every run found under
the folders (a run folder holds config.json and metrics.jsonl; untested runs count too). Runs that
differ only in their seed share a colour; the legend names each group once.
bars: the results table of `scripts/results_table.py` as a bar chart, HR@10 and NDCG@10 per row
with the standard deviation over seeds as error bars.
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import argparse
import json
import math
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from morec.config import Config  # noqa: E402
from morec.errors import InputError, run_cli  # noqa: E402
from results_table import (config_sort_key, group_key, load_runs, mode_name, read_json, setting_name,
                           table_rows, tower_name)  # noqa: E402


def run_label(config: dict) -> str:
    return f"{tower_name(config)} {mode_name(config)} ({setting_name(config)})"


def read_history(run_dir: Path) -> list[dict]:
    records = []
    path = run_dir / "metrics.jsonl"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputError(f"{path}, line {number}: not JSON; the file is damaged") from None
    return records


def curve_runs(folders: list[str | Path]) -> list[tuple[Path, dict, list[dict]]]:
    """(run folder, config over defaults, epoch records) of every run with a metrics.jsonl."""
    defaults = {f.name: f.default for f in fields(Config)}
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give run folders or folders above them")
        configs = [folder / "config.json"] if (folder / "config.json").is_file() else sorted(folder.rglob("config.json"))
        for config in configs:
            if (config.parent / "metrics.jsonl").is_file():
                found.append((config.parent, {**defaults, **read_json(config)}, read_history(config.parent)))
    if not found:
        raise InputError(f"no run with a metrics.jsonl under {', '.join(map(str, folders))}")
    return found


def plot_curves(folders: list[str | Path], out: Path, metric: str = "NDCG@10", title: str = "") -> Path:
    runs = curve_runs(folders)
    colours = {}
    fig, (ax_metric, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run_dir, config, history in sorted(runs, key=lambda r: (config_sort_key(r[1]), r[1].get("seed", 0))):
        key = group_key(config)
        first = key not in colours
        colour = colours.setdefault(key, f"C{len(colours) % 10}")
        epochs = [r["epoch"] for r in history]
        if history and metric not in history[0].get("valid", {}):
            raise InputError(f"{run_dir / 'metrics.jsonl'} has no valid {metric}; choose one of "
                             f"{', '.join(history[0].get('valid', {}))}")
        ax_metric.plot(epochs, [100 * r["valid"][metric] for r in history], color=colour, lw=1.2, alpha=0.85,
                       label=run_label(config) if first else None)
        ax_loss.plot(epochs, [r["train_loss"] for r in history], color=colour, lw=1.2, alpha=0.85)
    ax_metric.set(xlabel="epoch", ylabel=f"valid {metric} (%)", title=f"valid {metric}")
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="train loss")
    for ax in (ax_metric, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_metric.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_bars(rows: list[dict], out: Path, title: str = "") -> Path:
    """Grouped bars of HR@10 and NDCG@10 (percent, ± std over seeds) for table rows."""
    if not rows:
        raise InputError("no table rows to plot")
    many_datasets = len({r["dataset"] for r in rows}) > 1
    labels = [(f"{r['dataset']}\n" if many_datasets else "") + f"{r['item_tower']}\n{r['mode']}\n{r['setting']}"
              + (f"\n{r['other']}" if r["other"] else "") for r in rows]
    x = range(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.6))
    for offset, key, name in ((-width / 2, "hr10", "HR@10"), (width / 2, "ndcg10", "NDCG@10")):
        means = [r[f"{key}_mean"] for r in rows]
        stds = [0.0 if math.isnan(r[f"{key}_std"]) else r[f"{key}_std"] for r in rows]
        ax.bar([i + offset for i in x], means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("test metric (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    seeds = sorted({r["n"] for r in rows})
    subtitle = f"test HR@10 / NDCG@10 (%), mean ± sample std over {'/'.join(map(str, seeds))} seed(s)"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["curves", "bars"])
    parser.add_argument("folders", nargs="+", help="run folders or folders above them")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--metric", default="NDCG@10", help="curves: the valid metric (HR@10, NDCG@10, ...)")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    if args.kind == "curves":
        path = plot_curves(args.folders, Path(args.out), args.metric, args.title)
    else:
        runs = load_runs(args.folders)
        if not runs:
            raise InputError(f"no tested run under {', '.join(args.folders)}; run the test scripts first")
        path = plot_bars(table_rows(runs), Path(args.out), args.title)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
