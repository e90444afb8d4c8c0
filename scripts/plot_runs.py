"""Figures of runs, as PNG (matplotlib, no display needed).

    python scripts/plot_runs.py curves RUN_OR_FOLDER... --out curves.png [--metric NDCG@10]
    python scripts/plot_runs.py bars FOLDER... --out bars.png
    python scripts/plot_runs.py pareto FOLDER... --out pareto.png

curves: valid metric (default NDCG@10, percent) and train loss per epoch of every run found under
the folders (a run folder holds config.json and metrics.jsonl; untested runs count too). Runs that
differ only in their seed share a colour; the legend names each group once.
bars: the results table of `scripts/results_table.py` as a bar chart, HR@10 and NDCG@10 per row
with the standard deviation over seeds as error bars.
pareto: cost against quality, one marker per table row (item tower / training mode):
test NDCG@10 (mean over seeds, ± std) against the training seconds to the best epoch (the sum of
metrics.jsonl's `train_seconds` over epochs 1 .. best epoch, evaluation excluded; mean over seeds;
log scale when they span more than 10x), with the Pareto front (no other row is both faster and better) as a dashed line.
Rows whose runs predate cost accounting are left out (listed on stderr).
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import math
import textwrap
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from morec.config import Config  # noqa: E402
from morec.errors import InputError, run_cli  # noqa: E402
from morec.report.grouping import config_sort_key, group_key, mode_name, setting_name, tower_name  # noqa: E402
from morec.report.rows import table_rows  # noqa: E402
from morec.report.run_files import config_files, load_runs, read_history, read_json  # noqa: E402


def run_label(config: dict) -> str:
    return f"{tower_name(config)} {mode_name(config)} ({setting_name(config)})"


def curve_runs(folders: list[str | Path]) -> list[tuple[Path, dict, list[dict]]]:
    """(run folder, config over defaults, epoch records) of every run with a metrics.jsonl."""
    defaults = {f.name: f.default for f in fields(Config)}
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder; give run folders or folders above them")
        for config in sorted(config_files(folder)):
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


LABEL_WIDTH = 24                      # characters per line of a bar's label (tower names and 'other' values wrap)


def plot_bars(rows: list[dict], out: Path, title: str = "") -> Path:
    """Grouped bars of HR@10 and NDCG@10 (percent, ± std over seeds) for table rows."""
    if not rows:
        raise InputError("no table rows to plot")
    many_datasets = len({r["dataset"] for r in rows}) > 1
    labels = [(f"{r['dataset']}\n" if many_datasets else "") + f"{textwrap.fill(r['item_tower'], LABEL_WIDTH)}\n{r['mode']}\n{r['setting']}"
              + (f"\n{textwrap.fill(r['other'], LABEL_WIDTH, break_long_words=False)}" if r["other"] else "") for r in rows]
    x = range(len(rows))
    width = 0.38
    lines = max(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(rows) + 2), 4.6 + 0.12 * max(lines - 4, 0)))
    for offset, key, name in ((-width / 2, "hr10", "HR@10"), (width / 2, "ndcg10", "NDCG@10")):
        means = [r[f"{key}_mean"] for r in rows]
        stds = [0.0 if math.isnan(r[f"{key}_std"]) else r[f"{key}_std"] for r in rows]
        ax.bar([i + offset for i in x], means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("test metric (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    seeds = sorted({r["n"] for r in rows})
    return save_figure(fig, ax, title, f"test HR@10 / NDCG@10 (%), mean ± sample std over "
                       f"{'/'.join(map(str, seeds))} seed(s)", out)


MARKERS = "osD^vPX*<>hp"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (seconds, quality) points no other point dominates (at most as slow and at
    least as good, and better in one), by increasing seconds."""
    front = []
    for i, (sec, value) in enumerate(points):
        dominated = any(s2 <= sec and v2 >= value and (s2, v2) != (sec, value) for s2, v2 in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def pareto_rows(rows: list[dict]) -> list[dict]:
    """The table rows that have a cost (train seconds to the best epoch); the others on stderr."""
    kept = [r for r in rows if not math.isnan(r["train_seconds_to_best"])]
    if len(kept) < len(rows):
        print(f"pareto: left out {len(rows) - len(kept)} row(s) whose runs record no train_seconds "
              "(runs from before cost accounting): " + ", ".join(f"{r['item_tower']} {r['mode']}" for r in rows
                                                               if r not in kept), file=sys.stderr)
    if not kept:
        raise InputError("no table row has a training cost (metrics.jsonl train_seconds up to the best epoch); "
                         "train the runs with this version")
    return kept


def plot_pareto(rows: list[dict], out: Path, title: str = "") -> Path:
    """Test NDCG@10 (%) against training seconds to the best epoch, one marker per row."""
    rows = pareto_rows(rows)
    many_datasets = len({r["dataset"] for r in rows}) > 1
    points = [(r["train_seconds_to_best"], r["ndcg10_mean"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, (r, (sec, value)) in enumerate(zip(rows, points)):
        label = (f"{r['dataset']} " if many_datasets else "") + f"{r['item_tower']} {r['mode']} ({r['setting']})" \
            + (f" {r['other']}" if r["other"] else "") + f", n={r['n']}"
        std = 0.0 if math.isnan(r["ndcg10_std"]) else r["ndcg10_std"]
        ax.errorbar([sec], [value], yerr=[std], fmt=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", ms=8,
                    capsize=3, label=label)
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=0.8, alpha=0.6,
            label="Pareto front")
    seconds = [sec for sec, _ in points]
    log_scale = max(seconds) > 10 * max(min(seconds), 1e-9)               # IDRec to E2E: decades apart
    if log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(xlabel="training seconds to the best epoch" + (" (log scale)" if log_scale else ""),
           ylabel="test NDCG@10 (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, ax, title, "test NDCG@10 vs training cost (mean ± std over seeds)", out)


def save_figure(fig, ax, title: str, subtitle: str, out: Path) -> Path:
    """Title (the caller's, then the subtitle), layout, PNG at `out`; the figure is closed."""
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["curves", "bars", "pareto"])
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
        plot = plot_bars if args.kind == "bars" else plot_pareto
        path = plot(table_rows(runs), Path(args.out), args.title)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
