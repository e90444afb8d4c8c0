"""Question 4 (beyond the paper): how should the text encoder be adapted? IDRec against MoRec with
full fine-tuning, the top 2 blocks, LoRA, BitFit, and the layer-cached two-stage head (IISAN-style
decoupling: every layer's frozen features, a learned mix of them; the encoder never runs in
training), with the cost of each (train seconds to the best epoch, peak memory):

    python scripts/study_q4_adaptation.py                            # ml-100k, small CPU settings
    python scripts/study_q4_adaptation.py --arms full,top2,lora --seed 1,2,3 --out docs/studies/ml-100k-adaptation

Arms (--arms, default all): id, full (trainable_layers -1), top2 (trainable_layers 2, the Q1
MoRec run), lora (peft lora, r --lora_r), bitfit (peft bitfit), ts_all (two_stage, ts_layers
all, dnn_layers --ts_dnn) and ts_last (the same head over the last layer only, the Q3 TS run).
Not in the default list: iisan (`--arms ...,iisan`; the IISAN side adapter networks over the same
all-layer cache, `--side_network iisan`, dnn_layers --ts_dnn; docs/iisan.md); like the two-stage
arms its encoder never trains, so it gets the cheap arms' seeds.
Not in the default list, asked for by name: top1_cached, top2_cached (trainable_layers 1 / 2 with
--cache_frozen_layers true: the frozen blocks' output computed once per item, in eval mode, and
only the top blocks run; docs/parameters.md) and lora_top2_cached (LoRA in the top 2 blocks only,
--peft_layers 2, on the cache); they train their encoder's top blocks, so they get the
end-to-end seed count.
Defaults: scripts/study_common.py SMALL; its IDRec, top2 and ts_last runs are those of
study_q1 / study_q3 when they share --runs_dir.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # noqa: E401,E702

from study_common import (IDREC, MOREC_E2E, MOREC_TS, check_arm_overrides, entry, paired_table, parse_args, run_study,
                          study_runs, with_modality)
from morec.errors import InputError

# The study page's reading (scripts/study_page.py writes it under the tables). It refers to the
# table rather than quoting it, so that a re-run does not make it wrong.
READING = """\
The arms: all-MiniLM-L6-v2 over the movie titles, fine-tuned in full, in its top 2 blocks, with
LoRA (r 8, alpha 16, every module peft targets by default) or BitFit (biases only), or frozen in a
two-stage head over the last layer or over a learned scalar mix of all 7 hidden states
(`--ts_layers all`, `--ts_mix_lr`), both with `--ts_dnn` DNN layers. Every encoder arm shares the
study's encoder learning rate (`fine_tune_lr`). The studies' default seeds: 5 for IDRec and the
two-stage heads, 3 for the arms that train the encoder (18-32 minutes of training to the best
epoch). Every Δ is the seed-level test from the runs (paired t over the seeds both rows share,
two-level bootstrap interval); the re-run reproduced the earlier 3-seed runs' test metrics
exactly. The `_vs_full` table compares every arm with full fine-tuning on the seeds they share.

- Full fine-tuning beats IDRec at the seed level on both metrics; the top 2 blocks on NDCG@10 (its
  HR@10 gain is in the mean only, not shown with 3 seeds). The two are level with each other (the
  `_vs_full` table: no `*`, less than 0.15 points apart on either metric).
- The frozen two-stage heads are ahead of IDRec in the mean only, and not separated from full
  fine-tuning either (over the 3 seeds they share with it). Whether mixing every layer beats the
  last one: see the ts_layers study (10 seeds).
- LoRA and BitFit are level with IDRec (no `*`). LoRA is significantly behind full fine-tuning on
  both metrics; BitFit is behind it by as much in the mean (HR@10 -1.3 points) without a `*`. The
  shared encoder learning rate is low for them: they train slowly (see the curves), and a tuned
  learning rate (LoRA is usually run at 1e-4 to 1e-3 and above) may change this; not measured.
- With 3 seeds a gain of the size found here is shown about half the time (docs/significance.md):
  a missing `*` is "not shown", not "no difference".
- Cost: the cost column orders two-stage (seconds) far below end to end (tens of minutes). The
  re-run arms (LoRA, BitFit) also give CPU seconds: where they fall well below the wall seconds
  the run waited for a core, so the wall seconds of runs that shared the 2-core CPU say nothing
  finer. Per-step costs measured alone are in docs/benchmarks.md (`scripts/bench_peft.py`)."""

# The reading of the same study on another data set (scripts/study_page.py picks it by --dataset).
READING_BY_DATASET = {"amazon-scientific": """\
Amazon "Industrial and Scientific" (product titles; 12,076 users and 20,314 items kept at L 10),
the SMALL settings with `cold_start_count 1`: 2,443 of the 12,076 test targets (20%) and 4,008 of
the 20,314 ranked items never occur in training; the 621 repeat targets (5.1%) count as misses
(`--repeat_targets miss`). Arms whose encoder does not train: IDRec, the frozen all-MiniLM-L6-v2
two-stage head over its last layer (`ts_last`) or over a learned mix of all 7 hidden states
(`ts_all`), and IISAN's side network over the same cache (`iisan`); 5 seeds each (1-5). The Δ
columns are the seed-level test (paired t over the per-seed means; two-level bootstrap intervals).

- Regular setting: every frozen-text arm is ahead of IDRec on both metrics at the seed level
  (`*`), by more than on ml-100k. Part of the gain is the items never seen in training: IDRec
  cannot rank them (its cold-start HR@10 is 0), the text arms can, a little.
- Two-stage over all layers beats two-stage over the last layer here (not in the table: paired t
  over the 5 seeds' test metrics, HR@10 +0.39 points p = 0.009, NDCG@10 +0.24 p = 0.013); on
  ml-100k it did not (the ts_layers study, 10 seeds). IISAN is not ahead of the plain mix of all
  layers (HR@10 -0.27 p = 0.22, NDCG@10 -0.14 p = 0.24, same test).
- Warm items (`--warm_min_count 3`, the second table: 4,140 users and 2,232 items; at 20, the
  paper's setting, 7 items and 90 users are left, too few to rank): IDRec catches up. The
  last-layer head is level with it; the all-layer mix is level on HR@10 and significantly behind
  on NDCG@10. The paper's pattern (MoRec's lead shrinks as items get warm) holds here.
- End to end, one seed so far: text MoRec with the top block of MiniLM trained on the layer
  cache (`top1_cached`, seed 1; best epoch 37 of the 40-epoch cap, so still improving) reaches
  test HR@10 7.91, NDCG@10 4.90 and cold-start HR@10 2.75, against seed 1's two-stage all-layer
  mix 6.04 (cold-start 0.62) and IDRec 4.41. One seed is not evidence (the table gives it no
  test); it points to end to end above two-stage on this catalogue, the paper's finding, with the
  trained block reading the unseen titles better. It trained about 4.3 hours to its best epoch on
  a thread shared with other runs (the cost column), against minutes for the frozen arms. The
  top-2 (`top2_cached`) and LoRA (`lora_top2_cached`) arms are training; more seeds are to run.
- Two of the five `ts_last` runs had their best epoch at the 40-epoch cap and two `ts_all` runs
  at epoch 39: these arms may be under-trained (the `_curves` figure shows it). The cost column was measured
  while several runs shared a 2-core CPU."""}


def arms(ts_dnn: int) -> dict[str, dict]:
    """Each arm with every value that defines it (an override that contradicts one is refused)."""
    return {
        "id": IDREC,
        "full": {**MOREC_E2E, "trainable_layers": -1, "peft": "none"},
        "top2": {**MOREC_E2E, "trainable_layers": 2, "peft": "none"},
        "lora": {**MOREC_E2E, "trainable_layers": -1, "peft": "lora"},
        "bitfit": {**MOREC_E2E, "trainable_layers": -1, "peft": "bitfit"},
        "ts_all": {**MOREC_TS, "dnn_layers": ts_dnn, "ts_layers": "all"},
        "ts_last": {**MOREC_TS, "dnn_layers": ts_dnn, "ts_layers": "last"},
        "iisan": {**MOREC_TS, "dnn_layers": ts_dnn, "ts_layers": "all", "side_network": "iisan"},   # not a default arm
        "top1_cached": {**MOREC_E2E, "trainable_layers": 1, "peft": "none", "cache_frozen_layers": True},
        "top2_cached": {**MOREC_E2E, "trainable_layers": 2, "peft": "none", "cache_frozen_layers": True},
        "lora_top2_cached": {**MOREC_E2E, "trainable_layers": -1, "peft": "lora", "peft_layers": 2,
                             "cache_frozen_layers": True},
    }


def add_options(parser) -> None:
    parser.add_argument("--arms", default="id,full,top2,lora,bitfit,ts_all,ts_last",
                        help="which adaptations to run (default: all but the *_cached arms)")
    parser.add_argument("--ts_dnn", type=int, default=2,
                        help="dnn_layers of the two-stage heads (default 2, the best TS depth of Q3 on ml-100k)")


def main(argv: list[str]):
    args, overrides = parse_args(argv, __doc__.split("\n\n")[0], add_options)
    known = arms(args.ts_dnn)
    chosen = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    unknown = [arm for arm in chosen if arm not in known]
    if unknown or not chosen:
        raise InputError(f"--arms {args.arms!r}: choose from {', '.join(known)}")
    check_arm_overrides({arm: known[arm] for arm in chosen}, overrides,
                        "choose arms with --arms (--ts_dnn sets the two-stage heads' dnn_layers)")

    def then(tested: list, out) -> str | None:
        return against_full(runs_by_arm(tested, {arm: known[arm] for arm in chosen}, args.modality, overrides), out)
    return run_study("q4_adaptation", "Q4: adapting the text encoder (full, top-2, LoRA, BitFit, layer-cached TS)",
                     [known[arm] for arm in chosen], args, overrides, then)


def runs_by_arm(tested: list, chosen: dict[str, dict], modality: str, overrides: dict) -> dict[str, list]:
    """{arm: its tested runs}: each arm's run folders are the ones study_common.study_runs names for
    that arm alone (the run label is a digest of every value), so an arm never picks up another
    arm's runs (top2 and top2_cached differ only in cache_frozen_layers)."""
    if not tested:
        return {}
    runs_dir = tested[0].dir.parent
    by_dir = {run.dir: run for run in tested}
    return {arm: [by_dir[d] for _, d in study_runs(with_modality([part], modality), overrides, runs_dir) if d in by_dir]
            for arm, part in chosen.items()}


def against_full(arm_runs: dict[str, list], out) -> str | None:
    """What a cheaper adaptation gives up: every MoRec arm against full fine-tuning of the same
    encoder, paired by seed, with the tables' seed-level test (study_common.paired_table), written
    to <out>/q4_adaptation_vs_full.md; nothing when the study has no tested full fine-tuning runs."""
    full = arm_runs.get("full")
    if not full:
        return None
    rows = [((arm,), runs, full) for arm, runs in arm_runs.items() if arm not in ("id", "full")]
    return paired_table("Q4: each adaptation against full fine-tuning of the same encoder, paired by seed",
                        ("arm",), "full", rows, out / "q4_adaptation_vs_full.md")


if __name__ == "__main__":
    entry(main)
