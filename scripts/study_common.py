"""What every `scripts/study_*.py` shares: options, running the grid of runs (train, then test),
skipping runs that are done, and the table + figures at the end.

A study is a list of parts, each a dict of run values (a list is a grid, as in train_*.py). The
command line takes the study's own options (`--out`, and e.g. `--warm`) plus any run parameter
`--key value`, applied to every part: `--seed 1,2,3` (a grid: one run per seed; the tables show
mean ± std over them; without it each arm gets `default_seeds`: 5 seeds for an arm whose
encoder does not train, 3 for one that trains its encoder end to end), `--max_seq_len 20`,
`--dataset MIND --behaviors ... --news ...`; and
`--id.key value` / `--mo.key value` for the IDRec / MoRec runs only (e.g. their own lr).
Any data set: `--dataset NAME [--root_data_dir DIR]` (default ml-100k under dataset/); SMALL holds
the settings, DATASET_SETTINGS what differs per data set (e.g. amazon-scientific).

Runs go to `<runs_dir>/<label>/` (default `<out>/runs`); the label is derived from the values, so
a study run again skips finished runs (trained to early stop or --epoch, and tested), resumes
unfinished ones, and studies that share a run (the same values) share its folder: point them
at the same --runs_dir. Tables and figures go to `<out>/<study>.md|.csv|_bars.png|_curves.png`,
the study page (scripts/study_page.py) to `<out>/README.md` or `--page PATH`.
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from morec.config import Config, make_config, parse_overrides, run_label
from morec.errors import InputError, Preempted
from morec.launch import expand_grid
from morec.report.rows import table_rows
from morec.report.run_files import METRICS, load_run, read_history
from morec.report.significance import RESAMPLES, compare, fmt_p, pairing
from morec.report.table_text import markdown, significance_note, write_table
from morec.report.user_groups import group_table, load_user_groups
from study_page import REPO, write_page

# Small settings that make every study finish on a laptop CPU on ml-100k (see docs/paper.md
# for the paper's settings on MIND / HM / Bili).
SMALL = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", loss="inbatch",
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    bert_model_load="all_minilm_l6_v2", news_attributes="title", trainable_layers=2,
    fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=40, patience=5,
    cold_start_count=5,     # ml-100k, L 10: 27 test targets never seen in training, 155 seen < 5 times
)
# Per data set, the values that differ from SMALL (a data set not listed takes SMALL as is).
DATASET_SETTINGS = {
    "ml-100k": {},
    "amazon-scientific": dict(cold_start_count=1),   # L 10: 2,443 of 12,076 test targets never seen in training
}
# Seeds of an arm when the command gives no --seed (default_seeds). The seed-level test needs
# them: with the measured run-to-run spread (docs/significance.md) 3 seeds per arm find a gain of
# the README headline's size (+1.36 NDCG@10 points) 54% of the time, 5 seeds 96%. Every arm
# whose encoder does not train with the recommender (IDRec, two-stage / cached-feature arms) costs
# seconds to a few CPU-minutes a run and gets 5; an arm that trains its encoder end to end (text
# E2E and PEFT: 25-50 CPU-minutes a run; vision E2E) keeps 3. A Δ between such arms pairs the 3
# seeds they share; each row's mean ± sd uses all of its own seeds.
CHEAP_SEEDS = [1, 2, 3, 4, 5]
E2E_SEEDS = [1, 2, 3]
SEED_RULE = ("5 seeds per arm whose encoder does not train (IDRec, two-stage / cached features) and 3 per arm "
             "that trains its encoder end to end (text E2E and PEFT, vision E2E)")


def trains_encoder(values: dict) -> bool:
    """Whether a run's item tower trains an encoder with the recommender: any modality tower that
    is not two-stage (a text+vision arm with --mm_cached_branch still trains its other encoder)."""
    return values.get("item_tower", "id") != "id" and not values.get("two_stage", False)


def default_seeds(values: dict) -> list[int]:
    """The seeds of an arm (its run values) when no --seed is given: CHEAP_SEEDS, or E2E_SEEDS when
    the arm trains its encoder (trains_encoder); the rule is SEED_RULE."""
    return list(E2E_SEEDS if trains_encoder(values) else CHEAP_SEEDS)


IDREC = dict(item_tower="id")
MOREC_E2E = dict(item_tower="text", two_stage=False)
MOREC_TS = dict(item_tower="text", two_stage=True)
MISSREC_TS = dict(model="missrec", item_tower="text", two_stage=True)   # MISSRec over cached features (docs/missrec.md)
MODALITIES = ("text", "vision")
ENCODER_FIELD = {"text": "bert_model_load", "vision": "cv_model_load"}


def with_modality(parts: list[dict], modality: str) -> list[dict]:
    """The study's parts with the MoRec ones (item_tower text) switched to `modality`."""
    return [{**part, "item_tower": modality} if part.get("item_tower") == "text" else part for part in parts]


def add_morec_mode(parser, more: dict[str, str] | None = None) -> None:
    """--morec e2e|ts (and the study's `more` modes: name -> help) and --ts_dnn, for studies whose
    MoRec arms can run either way (Q5, Q6)."""
    more = more or {}
    parser.add_argument("--morec", choices=("e2e", "ts", *more), default="e2e",
                        help="MoRec arms end to end (the encoders fine-tuned, default) or two-stage (frozen "
                             "encoders run once, cached features, a head of --ts_dnn layers trains: CPU-sized)"
                             + "".join(f"; {name}: {text}" for name, text in more.items()))
    parser.add_argument("--ts_dnn", type=int, default=2,
                        help="--morec ts: dnn_layers of the heads (default 2, the best TS depth of Q3 on ml-100k)")


def morec_arm(args) -> dict:
    """The MoRec values of a study with add_morec_mode's options."""
    return MOREC_E2E if args.morec == "e2e" else {**MOREC_TS, "dnn_layers": args.ts_dnn}


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"expected comma-separated integers, got {text!r}") from None


def split_tower_args(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Take `--id.KEY VALUE` / `--mo.KEY VALUE` (values for the IDRec / the MoRec runs only) out."""
    rest, per_tower = [], {"id": [], "mo": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        prefix = arg[2:4] if arg.startswith(("--id.", "--mo.")) else None
        if prefix is None:
            rest.append(arg)
        else:
            per_tower[prefix].append("--" + arg[5:])
            if "=" not in arg and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                per_tower[prefix].append(argv[i])
        i += 1
    return rest, per_tower


def parse_args(argv: list[str], description: str, extra) -> tuple[argparse.Namespace, dict]:
    """The study's own options (`extra(parser)` adds them) and the run-parameter overrides:
    {"all": {...}, "id": {...}, "mo": {...}} (every run; IDRec runs; MoRec runs)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any run parameter may follow as --key value (a comma list is a grid); --id.key value or "
               "--mo.key value sets it for the IDRec or the MoRec runs only (the paper tuned them apart).")
    parser.add_argument("--out", help="folder for the tables and figures (default studies/<dataset>)")
    parser.add_argument("--table_only", action="store_true", help="do not train: tabulate the runs there are")
    parser.add_argument("--page_only", action="store_true",
                        help="do not train or tabulate: rewrite the study page from the tables already in --out")
    parser.add_argument("--page", help="the study page to write (default <out>/README.md; scripts/study_page.py)")
    parser.add_argument("--modality", choices=MODALITIES, default="text",
                        help="the MoRec runs' item tower: text (--bert_model_load) or vision (--cv_model_load, "
                             "--image_lmdb; HM / Bili, or ml-100k's generated posters)")
    parser.add_argument("--user_groups", metavar="[FILE:]COLUMN[,COLUMN]",
                        help="also a table per user group and column (e.g. gender,age_band: the columns of the data "
                             "set's user_groups.tsv, or FILE:COLUMN): IDRec and the --modality MoRec rows per group, "
                             "each Δ vs IDRec with the seed-level test, written to <out>/<study>_groups_<column>.md")
    extra(parser)
    rest, per_tower = split_tower_args(argv)
    args, rest = parser.parse_known_args(rest)
    args.argv = list(argv)                            # the command, for the study page
    args.table_only = args.table_only or args.page_only
    return args, {"all": parse_overrides(rest), **{k: parse_overrides(v) for k, v in per_tower.items()}}


def trained(cfg: Config, run_dir: Path) -> bool:
    """Trained to its stop: `epoch` evaluations, or `patience` of them since the best (train.py's
    rule: the first epoch with the highest valid HR@10, then NDCG@10 with tie_break_ndcg)."""
    history = read_history(run_dir)
    if not history or not (run_dir / "checkpoint_best.pt").is_file():
        return False
    score = (lambda r: (r["valid"]["HR@10"], r["valid"]["NDCG@10"])) if cfg.tie_break_ndcg else \
        (lambda r: (r["valid"]["HR@10"],))
    best = max(range(len(history)), key=lambda i: (score(history[i]), -i))
    return len(history) >= cfg.epoch or len(history) - 1 - best >= cfg.patience


def tested(cfg: Config, run_dir: Path) -> bool:
    """Tested after its last epoch, with this cold-start threshold, under SPEC's tie rule, with
    per-user counts (a test from before test_ranks.npz is run again) and of the checkpoint_best.pt
    now in the folder (where the test recorded it: morec.run_identity)."""
    from morec.run_identity import checkpoint_check
    test_file, metrics_file = run_dir / "test_metrics.json", run_dir / "metrics.jsonl"
    if not test_file.is_file() or test_file.stat().st_mtime < metrics_file.stat().st_mtime:
        return False
    result = json.loads(test_file.read_text())
    cold = result.get("cold_start") or {}
    return (cold.get("below", 0) == max(cfg.cold_start_count, 0) and result.get("ties") == cfg.ties
            and result.get("repeat_targets") == cfg.repeat_targets      # a test before the repeat rule: again
            and (run_dir / result.get("per_user", "test_ranks.npz")).is_file()
            and checkpoint_check(run_dir, result)[1] in ("", None))        # None: not recorded, or no checkpoint


def study_runs(parts: list[dict], overrides: dict, runs_dir: Path) -> list[tuple[Config, Path]]:
    """(Config, run folder) of every grid point of every part, without duplicates; a part without
    a seed (from the part or --seed / --id.seed / --mo.seed) gets default_seeds."""
    runs, seen = [], set()
    for part in parts:
        tower = "id" if part.get("item_tower", "id") == "id" else "mo"
        dataset = overrides["all"].get("dataset", part.get("dataset", SMALL["dataset"]))
        values = {**SMALL, **DATASET_SETTINGS.get(dataset, {}), **part, **overrides["all"], **overrides[tower]}
        if "seed" not in values:
            values["seed"] = default_seeds(values)
        for point in expand_grid(values):
            point["runs_dir"] = str(runs_dir)
            cfg = make_config(point)
            if cfg.label:
                raise InputError("--label does not apply to a study: its runs are named from their values")
            run_dir = runs_dir / run_label(cfg)
            if run_dir not in seen:
                seen.add(run_dir)
                runs.append((cfg, run_dir))
    return runs


def execute(runs: list[tuple[Config, Path]]) -> None:
    """Train (resuming a started run) and test every run that is not finished; re-test a trained
    run whose test is older than its last epoch or used another --cold_start_count."""
    from morec.train import test, train
    for number, (cfg, run_dir) in enumerate(runs, 1):
        start = time.perf_counter()
        if trained(cfg, run_dir):
            if tested(cfg, run_dir):
                print(f"[{number}/{len(runs)}] {run_dir.name}: done", flush=True)
                continue
            print(f"[{number}/{len(runs)}] {run_dir.name}: testing", flush=True)
        else:
            print(f"[{number}/{len(runs)}] {run_dir.name}: training", flush=True)
            train(dataclasses.replace(cfg, resume=(run_dir / "checkpoint_last.pt").is_file()), run_dir)
        test(cfg, run_dir)
        print(f"[{number}/{len(runs)}] {run_dir.name}: {time.perf_counter() - start:.0f}s", flush=True)


def group_specs(text: str, data_dir: Path) -> list[str]:
    """--user_groups value -> results_table --user_groups specs (FILE:COLUMN): `gender,age_band`
    names columns of the data set's `user_groups.tsv`, `FILE:COLUMN[,COLUMN]` those of FILE."""
    file, _, columns = text.rpartition(":")
    path = Path(file) if file else data_dir / "user_groups.tsv"
    if path.is_absolute() and Path.cwd().resolve() == REPO and path.resolve().is_relative_to(REPO):
        path = path.resolve().relative_to(REPO)             # the tables name it as a reader would type it
    names = [c.strip() for c in columns.split(",") if c.strip()]
    if not names:
        raise InputError(f"--user_groups {text!r}: give the columns, e.g. gender,age_band")
    return [f"{path}:{name}" for name in names]


def group_tables(name: str, tested: list, specs: list[str], modality: str, out: Path) -> list[Path]:
    """Per user-group tables (morec.report.user_groups.group_table, the seed-level test) of the IDRec rows and
    the `modality` MoRec rows of the study's tested runs, one file per column:
    `<out>/<name>_groups_<column>.md` (the study page shows it with the other tables)."""
    chosen = [r for r in tested if r.config.get("item_tower", "id") in ("id", modality)]
    paths = []
    for spec in specs:
        column = spec.rsplit(":", 1)[1]
        text = group_table(chosen, spec).replace("## Per user group:", f"# Per user group ({column}):", 1)
        path = out / f"{name}_groups_{column}.md"
        path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
        print(text, end="" if text.endswith("\n") else "\n")
        paths.append(path)
    return paths


def report(name: str, title: str, runs: list[tuple[Config, Path]], out: Path, then=None,
           groups: tuple[list[str], str] | None = None) -> Path:
    """Table (md + csv) and figures (bars, curves; pareto when the runs record their cost) of the
    study's tested runs; then `then(tested runs, out)` when given."""
    import math
    from plot_runs import plot_bars, plot_curves, plot_pareto
    tested = [load_run(d) for _, d in runs if (d / "test_metrics.json").is_file()]
    if not tested:
        raise InputError(f"none of the study's {len(runs)} runs is tested yet; run the study without --table_only")
    rows = table_rows(tested)
    md, _ = write_table(rows, out / name, title)
    plot_bars(rows, out / f"{name}_bars.png", title)
    plot_curves([d for _, d in runs if (d / "metrics.jsonl").is_file()], out / f"{name}_curves.png",
                title=title)
    pareto = any(not math.isnan(r["train_seconds_to_best"]) for r in rows)
    if pareto:
        plot_pareto(rows, out / f"{name}_pareto.png", title)
    missing = len(runs) - len(tested)
    print(markdown(rows), end="")
    print(f"wrote {md}, {md.with_suffix('.csv')}, {out / (name + '_bars.png')}, {out / (name + '_curves.png')}"
          + (f", {out / (name + '_pareto.png')}" if pareto else "")
          + (f" ({missing} of {len(runs)} runs not tested yet)" if missing else ""))
    if then:
        then(tested, out)
    if groups:
        group_tables(name, tested, *groups, out)
    return md


def paired_table(title: str, keys: tuple[str, ...], base_name: str, entries: list, path: Path) -> str:
    """A markdown table of arms compared with another arm than IDRec, with results_table.py's
    tests (docs/significance.md): the seed-level default (paired t over the per-seed means on the
    seeds both arms share, Welch over seed means when they share < 2; two-level bootstrap interval;
    * = p < 0.05) and the per-user cluster test (these trained models; never starred). `entries`: (key
    values, the arm's runs, its base arm's runs) per row, runs as morec.report.run_files.load_run gives
    them; an arm without runs is left out, one that cannot be tested (a single seed, no per-user
    file) says why in its row. Written to `path`, printed and returned."""

    def cell(result: dict, kind: str = "") -> str:
        if math.isnan(result[f"{kind}diff"]):
            return "-"
        p = result[f"{kind}p"]
        return (f"{result[f'{kind}diff']:+.2f} [{result[f'{kind}ci_low']:+.2f}, {result[f'{kind}ci_high']:+.2f}] "
                f"{fmt_p(p, RESAMPLES if kind else None)}" + (" *" if not kind and p < 0.05 else ""))
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " | seeds | "
             + " | ".join(f"{m} | Δ{m} vs {base_name} [95% CI], p | per-user Δ{m} (these models) [95% CI], p"
                          for m in METRICS) + " | test |",
             "|" + "---|" * (len(keys) + 2 + 3 * len(METRICS))]
    seeds_seen = []
    for key, runs, base in entries:
        if not runs or not base:
            continue
        pair = pairing(runs, base)
        cells = []
        for metric in METRICS:
            result = compare(pair, metric)
            cells += [f"{sum(100 * r.test['test'][metric] for r in runs) / len(runs):.2f}", cell(result), cell(result, "user_")]
        if not pair.problem:
            seeds_seen.append({"compared_seeds": " ".join(map(str, pair.a.seeds)), "resamples": RESAMPLES})
        lines.append("| " + " | ".join(key) + f" | {len(runs)} | " + " | ".join(cells) + f" | {pair.test_name} |")
    lines += ["", significance_note(seeds_seen).replace("vs IDRec", f"vs {base_name}"), ""]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text, end="")
    return text


def check_arm_overrides(arms: dict[str, dict], overrides: dict, hint: str) -> None:
    """Refuse an override (parse_args' {"all", "id", "mo"}) of a value that a chosen arm sets
    (every key of its dict defines it) when it contradicts that arm: `--peft lora` would make the
    "full" arm (peft none) a LoRA run under the full arm's name. An override equal to the value of
    every arm that sets it is harmless and passes."""
    for scope, values in overrides.items():
        for field, value in values.items():
            clashes = [f"{name} ({field} {arm[field]})" for name, arm in arms.items()
                       if field in arm and arm[field] != value
                       and scope in ("all", "id" if arm.get("item_tower", "id") == "id" else "mo")]
            if clashes:
                flag = f"--{'' if scope == 'all' else scope + '.'}{field}"
                raise InputError(f"{flag} {value}: contradicts the arm{'s' if len(clashes) > 1 else ''} "
                                 f"{', '.join(clashes)}; {hint}")


def check_one_patience(overrides: dict) -> None:
    """A study gives every run the same early stopping (SPEC "Training": a longer patience can
    only find a later, better valid epoch, so IDRec and MoRec runs must share it)."""
    for tower in ("id", "mo"):
        if "patience" in overrides[tower]:
            raise InputError(f"--{tower}.patience: a study gives all its runs one patience; "
                             "use --patience N (every run)")
    if isinstance(overrides["all"].get("patience"), list):
        raise InputError("--patience takes one value in a study (all its runs share it), "
                         f"got {overrides['all']['patience']}")


def run_study(name: str, title: str, parts: list[dict], args: argparse.Namespace, overrides: dict,
              then=None) -> Path:
    """Train and test the study's runs (unless --table_only), then report them; `then(tested, out)`,
    if given, adds the study's own tables from the tested runs (morec.report.run_files.Run)."""
    everywhere = overrides["all"]
    dataset = everywhere.get("dataset", SMALL["dataset"])
    if isinstance(dataset, list) or any("dataset" in overrides[t] for t in ("id", "mo")):
        raise InputError("a study runs on one data set; run it once per --dataset")
    check_one_patience(overrides)
    for key in ("nproc_per_node", "nnodes"):
        if any(o.get(key, 1) != 1 for o in overrides.values()):
            raise InputError(f"a study trains its runs one after the other in this process: --{key} does not "
                             "apply; for DDP runs use the experiment scripts, then scripts/results_table.py")
    out = Path(args.out or f"studies/{dataset}")
    runs_dir = Path(everywhere.pop("runs_dir", "") or out / "runs")
    runs = study_runs(with_modality(parts, args.modality), overrides, runs_dir)
    groups = None
    if getattr(args, "user_groups", None):
        specs = group_specs(args.user_groups, runs[0][0].data_dir())
        for spec in specs:
            load_user_groups(spec)                          # a bad file or column fails before any training
        groups = (specs, args.modality)
    print(f"{name}: {len(runs)} runs in {runs_dir}", flush=True)
    if not args.table_only:
        execute(runs)
    md = out / f"{name}.md" if args.page_only else report(name, title, runs, out, then, groups)
    write_page(name, title, args.argv, [cfg for cfg, _ in runs], out, args.page, args.modality)
    return md


def entry(main) -> None:
    """Run a study's main(argv) with the scripts' error convention."""
    try:
        main(sys.argv[1:])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Preempted as stop:
        print(f"{stop}; run the same study command again to continue", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        print("interrupted; run the same study command again to continue", file=sys.stderr)
        raise SystemExit(130) from None
