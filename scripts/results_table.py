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
from pathlib import Path

from morec.errors import InputError, run_cli
from morec.report.aa_check import aa_check
from morec.report.rows import table_rows
from morec.report.run_files import METRICS, load_runs
from morec.report.significance import RESAMPLES
from morec.report.table_text import markdown, write_table
from morec.report.user_groups import group_table, load_user_groups


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
