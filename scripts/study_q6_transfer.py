"""Question 6 (beyond the paper): does a MoRec model pre-trained on one domain transfer
to another, where item ids mean nothing? On ml-100k's target domain (scripts/make_domains.py:
movies with an Action, Adventure, Sci-Fi or Fantasy genre; the source domain holds the others),
at several sizes of the target's training set (--target_users, percent of the target's users
whose train part trains; every user is validated and tested, so the sizes compare):

    id           IDRec from scratch on the target
    scratch      MoRec from scratch on the target
    transfer     MoRec initialised from the source domain's MoRec run (--init_from), all fine-tuned
    frozen_user  the same with the user encoder frozen (--freeze_user_encoder, linear-probe style)
  named, not in the default set (--arms id,missrec_scratch,missrec_transfer):
    missrec_scratch   MISSRec (--model missrec, two-stage, --ts_dnn head layers, no IDs) from scratch
    missrec_transfer  MISSRec initialised from the source domain's MISSRec run (its interest
                      encoder, decoder, fusion and feature heads: morec/transfer.py), all fine-tuned

    python scripts/study_q6_transfer.py                                  # text MoRec, small CPU settings
    python scripts/study_q6_transfer.py --morec ts --target_users 10,30,100 --epoch 100 \
        --out docs/studies/ml-100k-transfer
    python scripts/study_q6_transfer.py --modality vision --cv_model_load swin_tiny
    python scripts/study_q6_transfer.py --morec ts        # two-stage MoRec: what transfers is the user
                                                          # encoder and the head over frozen features

First the source MoRec run of each seed is trained on <domains>-source (the domains are made
from dataset/ml-100k if missing), then the target runs; a transfer run starts from the source run
of its own seed. Subsets are nested and the same for every seed and arm (morec/data/sequences.py
`with_train_users`). Defaults: scripts/study_common.py SMALL.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # noqa: E401,E702

from pathlib import Path

from study_common import (IDREC, MISSREC_TS, SMALL, add_morec_mode, default_seeds, entry, execute, morec_arm, paired_table,
                          parse_args, run_study, study_runs, with_modality)
from morec.config import make_config
from morec.errors import InputError

ARMS = ("id", "scratch", "transfer", "frozen_user")
MISSREC_ARMS = ("missrec_scratch", "missrec_transfer")     # named arms, not in the default set

# The study page's reading (scripts/study_page.py writes it under the tables). It refers to the
# tables rather than quoting them, so that a re-run does not make it wrong.
READING = """\
**Domains** (`scripts/make_domains.py`, `morec/tools/domains.py`): ml-100k split by genre. The
target holds the movies with an Action, Adventure, Sci-Fi or Fantasy genre, the source the others
(the table's users / items column gives the target's size after the filters). No item is in both;
the same people appear in both, but the user encoder reads only item vectors, never user ids. Both
domains come from one time-ordered log, so a source sequence may hold interactions later than a
target user's test item: this is a cross-genre transfer, not a cross-time one.

**Arms** on the target domain at each share of target users whose train part trains
(`--train_user_fraction`: nested subsets, the same for every arm and seed; every user is
validated and tested, so the sizes compare): `id` IDRec from scratch; `scratch` MoRec from
scratch; `transfer` MoRec started from the source domain's best MoRec checkpoint of the same seed
(`--init_from`: the user encoder and the item head), all of it fine-tuned; `frozen_user` the same
with the user encoder frozen (`--freeze_user_encoder`). With `--morec ts` MoRec is two-stage: the
encoder runs once over each domain's titles and what transfers is the SASRec user encoder and the
head over the frozen features. End-to-end transfer (`--morec e2e`, the default) is CPU-hours; the
committed tables do not measure it.

Every Δ is the seed-level test (paired t over 10 seeds; the per-user columns are not a test of
the method and are never starred).

- Transfer pays off where the target has little data, when the transferred user encoder is kept
  frozen: with 10% and with 30% of the target users it beats the same MoRec from scratch
  significantly on both metrics (`q6_transfer_vs_scratch.md`). Fine-tuning all of it (`transfer`)
  is ahead of scratch in the mean at those sizes, but the seed-level test does not separate them.
  With all the target users transfer no longer helps.
- Freezing the transferred user encoder is best with the fewest target users (fewer parameters to
  fit) and worst with all of them, where it is significantly below MoRec from scratch on HR@10
  (the target's own sequences would re-shape the encoder).
- Against IDRec (`q6_transfer.md`), both transferred arms win significantly only in the smallest
  setting; beyond it IDRec is level, or ahead on HR@10 (of MoRec from scratch at 30%, of the
  frozen transfer with all users): on ml-100k's dense, popular catalogue ids are learnt fast (as
  in Q1). IDRec's own spread across seeds is widest with 10% of the users.
- 10 seeds (`--seed 1,...,10`; without it these two-stage arms get 5), one split of the genres,
  one source run per seed. The cost column is tiny for every two-stage run: the encoder never runs
  in training."""


def add_options(parser) -> None:
    parser.add_argument("--target_users", default="10,30,100",
                        help="percent of the target domain's users whose train part trains (default 10,30,100)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"which arms to run (default: {', '.join(ARMS)})")
    parser.add_argument("--domains", default="ml-100k",
                        help="data sets <domains>-source and <domains>-target under --root_data_dir "
                             "(ml-100k: made by scripts/make_domains.py when missing)")
    add_morec_mode(parser)


def percents(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 < v <= 100 for v in values):
        raise InputError(f"--target_users {text!r}: give percents in (0, 100], e.g. 10,30,100")
    return [v / 100 for v in values]


def ensure_domains(overrides: dict, prefix: str) -> None:
    """Make <prefix>-source / -target from <root>/ml-100k when they are missing (ml-100k only)."""
    cfg = make_config({k: v for k, v in {**SMALL, **overrides["all"]}.items() if k in ("root_data_dir",)})
    root = cfg.data_dir().parent
    if all((root / f"{prefix}-{d}" / "users.tsv").is_file() for d in ("source", "target")):
        return
    if prefix != "ml-100k":
        raise InputError(f"{root / (prefix + '-source')} or -target missing; make them first (scripts/make_domains.py)")
    from morec.tools.domains import make_domains
    folders = make_domains(root / "ml-100k", root)
    print(f"made the domains {folders['source']} and {folders['target']} (scripts/make_domains.py)", flush=True)


def main(argv: list[str]):
    args, overrides = parse_args(argv, __doc__.split("\n\n")[0], add_options)
    for name in ("dataset", "init_from", "freeze_user_encoder", "train_user_fraction"):
        if any(name in o for o in overrides.values()):
            raise InputError(f"--{name} is set by the study (use --domains, --arms, --target_users)")
    fractions = percents(args.target_users)
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not chosen or any(a not in ARMS + MISSREC_ARMS for a in chosen):
        raise InputError(f"--arms {args.arms!r}: choose from {', '.join(ARMS + MISSREC_ARMS)}")
    for tower in ("id", "mo"):
        if "seed" in overrides[tower]:
            raise InputError(f"--{tower}.seed: a transfer run starts from the source run of its own seed; use --seed")
    given = overrides["all"].pop("seed", None)
    morec = with_modality([morec_arm(args)], args.modality)[0]
    # Without --seed: study_common.default_seeds (5 for IDRec and two-stage MoRec, 3 for end-to-end MoRec).
    seeds = given if given is not None else default_seeds({**SMALL, **morec, **overrides["all"], **overrides["mo"]})
    seeds = seeds if isinstance(seeds, list) else [seeds]
    id_seeds = seeds if given is not None else default_seeds({**SMALL, **IDREC})
    ensure_domains(overrides, args.domains)
    source, target = f"{args.domains}-source", f"{args.domains}-target"
    out = Path(args.out or f"studies/{target}")
    runs_dir = Path(overrides["all"].get("runs_dir", "") or out / "runs")
    images = {"image_lmdb": "posters.lmdb"} if args.modality != "text" else {}
    missrec = with_modality([missrec_arm(args)], args.modality)[0]
    missrec_seeds = given if given is not None else default_seeds({**SMALL, **missrec})
    missrec_seeds = missrec_seeds if isinstance(missrec_seeds, list) else [missrec_seeds]
    kinds = [(kind, values, kind_seeds) for kind, values, kind_seeds, names in
             (("morec", morec, seeds, ARMS[1:]), ("missrec", missrec, missrec_seeds, MISSREC_ARMS))
             if any(a in names for a in chosen)]
    source_runs = {kind: source_runs_of({**values, **images, "dataset": source}, kind_seeds, overrides, runs_dir,
                                        args.table_only) for kind, values, kind_seeds in kinds}
    parts = [{**IDREC, "dataset": target, "train_user_fraction": fractions, "seed": seed}
             for seed in id_seeds] if "id" in chosen else []
    for kind, values, kind_seeds in kinds:
        on_target = {**values, **images, "dataset": target, "train_user_fraction": fractions}
        for seed, (_, source_dir) in zip(kind_seeds, source_runs[kind]):
            pretrained = {**on_target, "init_from": str(source_dir.resolve())}
            arms = {"scratch": on_target, "transfer": pretrained,
                    "frozen_user": {**pretrained, "freeze_user_encoder": True},
                    "missrec_scratch": on_target, "missrec_transfer": pretrained}
            names = ARMS[1:] if kind == "morec" else MISSREC_ARMS
            parts += [{**arms[a], "seed": seed} for a in chosen if a in names]
    args.out = str(out)

    def own_tables(tested: list, out: Path) -> None:
        versus_scratch(tested, out / "q6_transfer_vs_scratch.md")
        plot_by_size(tested, out / "q6_transfer_sizes.png", f"Q6: {source} -> {target}")
    return run_study("q6_transfer", f"Q6: transfer from {source} to {target} (MoRec {args.modality})",
                     parts, args, overrides, own_tables)


def missrec_arm(args) -> dict:
    """The MISSRec arms' values: two-stage over the --modality features, a head of --ts_dnn layers, no IDs."""
    return {**MISSREC_TS, "dnn_layers": args.ts_dnn}


def source_runs_of(values: dict, seeds: list, overrides: dict, runs_dir: Path, table_only: bool) -> list:
    """The source-domain runs (Config, folder) of `values`, one per seed, trained (unless
    table_only) before any target run starts from them."""
    runs = study_runs([{**values, "seed": s} for s in seeds], overrides, runs_dir)
    print(f"q6_transfer: {len(runs)} {values.get('model', 'sasrec')} source runs in {runs_dir}", flush=True)
    if not table_only:
        execute(runs)
    return runs


def plot_by_size(tested: list, path: Path, title: str) -> Path:
    """Test HR@10 and NDCG@10 (mean ± sample std over seeds) against the share of target users
    that train, one line per arm; `tested`: the study's tested runs (morec.report.run_files.Run)."""
    import pandas as pd
    from plot_runs import plt, save_figure
    from morec.report.run_files import METRICS
    frame = pd.DataFrame([{"arm": arm_of(r.config), "size": 100 * r.config["train_user_fraction"],
                           **{m: 100 * r.test["test"][m] for m in METRICS}} for r in tested])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(10, 4))
    for ax, metric in zip(axes, METRICS):
        for arm, rows in frame.groupby("arm", sort=False):
            stats = rows.groupby("size")[metric].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=arm)
        ax.set_xlabel("target users whose train part trains (%)")
        ax.set_ylabel(f"test {metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return save_figure(fig, axes[-1], title, "mean ± sample std over seeds", path)


def arm_of(config: dict) -> str:
    if config["item_tower"] == "id":
        return "id"
    if config.get("model") == "missrec":
        return "missrec_transfer" if config.get("init_from") else "missrec_scratch"
    if not config.get("init_from"):
        return "scratch"
    return "frozen_user" if config.get("freeze_user_encoder") else "transfer"


def versus_scratch(tested: list, path: Path) -> str:
    """The question of the study in one table: each transfer arm against MoRec from scratch at the
    same target training-set size, with the seed-level test (study_common.paired_table); `tested`:
    the study's tested runs (morec.report.run_files.Run)."""
    def of(arm: str, size: float) -> list:
        return [r for r in tested if arm_of(r.config) == arm and r.config["train_user_fraction"] == size]
    sizes = sorted({r.config["train_user_fraction"] for r in tested})
    entries = [((f"{100 * size:g}%", arm), of(arm, size), of(base, size)) for size in sizes
               for arm, base in (("transfer", "scratch"), ("frozen_user", "scratch"),
                                 ("missrec_transfer", "missrec_scratch"))]
    return paired_table("Q6: each transfer arm against the same model from scratch (same target users, paired by seed)",
                        ("target users", "arm"), "scratch", entries, path)


if __name__ == "__main__":
    entry(main)
