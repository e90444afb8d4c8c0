"""Question 7 (beyond the paper): what do the parameter-efficient multi-modal recommenders buy
over IDRec and the plain two-stage head, and at what cost? IDRec, the frozen text encoder's
all-layer two-stage head, IISAN's side adapter networks on titles and on titles + posters, and
MISSRec without and with pre-training on Q6's source genres (and, asked for by name, LoRA in the
text encoder's top 2 blocks on the layer cache), with quality, the seed-level test against IDRec
and the cost columns (train seconds to the best epoch, peak memory, trainable parameters, TPME):

    python scripts/study_q7_efficient_multimodal.py                  # ml-100k, small CPU settings
    python scripts/study_q7_efficient_multimodal.py --arms id,iisan_text,missrec --seed 1,2,3 \
        --runs_dir /tmp/runs --out docs/studies/ml-100k-efficient

Arms (--arms, default all but the two LoRA arms):
    id           IDRec (SASRec over an item ID table)
    ts_all       two-stage: a learned scalar mix of every hidden state of the frozen text encoder,
                 dnn_layers --ts_dnn (the q4 ts_all arm)
    iisan_text   IISAN's side network over the same all-layer cache (--side_network iisan; docs/iisan.md)
    iisan_mm     IISAN over titles and posters (ml-100k's generated posters.lmdb, dataset/ml-100k/
                 render_posters.py): text, vision and inter-modal SANs; --cv_model_load (default
                 random_tiny_vit_mae, a random frozen ViT-MAE: pretrained_models/make_tiny.py) at --image_size
    missrec      MISSRec (--model missrec) over the cached title features, no IDs, a head of --ts_dnn layers
    missrec_mm   the same over titles and posters (item_tower text+vision: one text and one image token per
                 item, the image features from iisan_mm's frozen --cv_model_load)
    missrec_pre  the same initialised from the MISSRec run of the same seed pre-trained on Q6's source
                 genres (scripts/study_q6_transfer.py's missrec source run, ml-100k-source; the ID
                 table never carries over, docs/missrec.md); ml-100k only
  named, not in the default list:
    lora         LoRA on the text encoder trained end to end (the q4 lora arm; ~25 CPU-minutes a run)
    lora_top2_cached
                 LoRA in the top 2 blocks only, on the layer cache (the q4 lora_top2_cached arm:
                 --peft_layers 2 --cache_frozen_layers true; the 4 frozen blocks run once per item)
Defaults: scripts/study_common.py SMALL; its IDRec and ts_all runs are those of study_q4 (and
missrec_pre's source runs those of study_q6 --morec ts) when they share --runs_dir.
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # noqa: E401,E702

from pathlib import Path

from study_common import (IDREC, MISSREC_TS, MOREC_E2E, MOREC_TS, check_arm_overrides, default_seeds, entry,
                          parse_args, run_study)
from morec.errors import InputError

DEFAULT_ARMS = ("id", "ts_all", "iisan_text", "iisan_mm", "missrec", "missrec_mm", "missrec_pre")
SOURCE_DOMAINS = "ml-100k"            # Q6's genre domains: ml-100k-source pre-trains missrec_pre

# The study page's reading (scripts/study_page.py writes it under the tables). It refers to the
# tables rather than quoting them, so that a re-run does not make it wrong.
READING = """\
**Arms.** Every arm but IDRec reads all-MiniLM-L6-v2's title features, frozen and cached once
(no encoder runs in training): `ts_all` a learned scalar mix of its 7 hidden states with a 2-layer
head; `iisan_text` IISAN's side adapter networks over the same states; `iisan_mm` IISAN over titles
and ml-100k's **generated posters** (genre stripes, decade, title: not real posters, and the image
encoder is a random, frozen tiny ViT-MAE, so the image side is a fixed random projection of the
drawing, which shows the genres); `missrec` MISSRec over the title features, no IDs; `missrec_mm`
MISSRec over titles and the same posters (one text and one image token per item); `missrec_pre`
the title-only MISSRec started from a MISSRec run of the same seed trained on Q6's source genres
(`ml-100k-source`, the same next-item loss: their contrastive pre-training is not implemented).
LoRA over the whole encoder (end to end, about 25 CPU-minutes a run) was not run; `lora_top2_cached`
is Q4's cached LoRA arm: LoRA (r 8) in MiniLM's top 2 blocks, trained end to end on the layer
cache (the frozen lower blocks computed once per item, in eval mode), the studies' encoder
learning rate 1e-4, 5 seeds (1-5; its Δ pairs them with the same seeds of IDRec). The seed-level test is in `q7_efficient_multimodal_vs_idrec.md` (every arm against
SASRec's IDRec; the main table has no Δ for the MISSRec rows because its IDRec counterpart would be
MISSRec over IDs), `q7_efficient_multimodal_posters.md` (each system with posters against itself
over titles) and `q7_efficient_multimodal_pretraining.md`; the per-user columns are not a test of
the method.

- **IISAN over titles + posters is the only arm significantly above IDRec**, on both metrics
  (10 seeds). What it adds is the posters: IISAN over titles alone is level with the plain
  all-layer mix, both ahead of IDRec in the mean only (NDCG@10 p just above 0.05; as in Q4 and
  the ts_layers study). The posters carry the genres, which the titles do not (Q5 saw the same
  with a random ResNet), so this says what the image side can add, not what real posters would.
- **The posters help both multi-modal systems** (the `_posters` table, 10 seeds): MISSRec over
  titles + posters is ahead of MISSRec over titles on both metrics (HR@10 +1.75 points, NDCG@10
  +0.92, both `*`), and against IDRec it is ahead on NDCG@10 (`*`) and level on HR@10; IISAN
  gains on NDCG@10 (`*`), on HR@10 in the mean only. With the posters MISSRec is stable (best epochs
  19-40, one at the 40-epoch cap), unlike over titles alone (below).
- **MISSRec from scratch is below IDRec in the mean** (not significantly) and by far the most
  spread arm: it starts near chance (validation HR@10 about 2% after the first epoch, against
  about 9% for the pre-trained runs); two of its ten runs stopped on an early plateau
  (`--patience 5`, best epochs 7 and 9) far below the others, and two others reached the 40-epoch
  cap. Under these small settings it is unstable and under-trained rather than measured at its
  best (the `_curves` figure); a longer patience or a tuned learning rate may change its row.
- **Pre-training on the source genres makes MISSRec level with IDRec** and ahead of MISSRec
  from scratch in the mean, but the seed-level test does not separate the two
  (`_pretraining` table). The mean gain comes from the two failed scratch runs, which the
  pre-trained runs of the same seeds avoid; where scratch trained fully the two are level
  (pre-training ahead in 6 seeds, level in 1, behind in 3). Its runs reach their best in a few
  epochs. Not a clean transfer: the source genres are part of the same ml-100k log (the same
  users, whose target-domain training sequences hold those interactions too; no validation or
  test target of ml-100k is in a source run's training part, since those are each user's last
  items), so it is a warm start on related data; the source runs reached the 40-epoch cap.
- **LoRA in the top 2 blocks is below IDRec on HR@10** (`*`, 5 seeds) and level with it on
  NDCG@10; against the frozen arms on the same 5 seeds (paired t over the seeds' test metrics, not
  in the tables) it is behind IISAN over titles and the all-layer mix in the mean (HR@10 -1.48
  p = 0.065 and -1.53 p = 0.059; NDCG@10 -0.50 p = 0.26 and -0.57 p = 0.12). Its runs stopped
  early (best epochs 17-35 of 40), so it is not under-trained by the cap; the encoder learning
  rate shared by every arm (1e-4) is low for LoRA (Q4 says the same; a tuned one is not measured).
  It is the one arm that runs the encoder in training, and the costliest: minutes to its best
  epoch and about 4.2 GiB peak RSS (the encoder and the token-level cache), against seconds and
  under 1 GiB for the frozen arms.
- **Cost.** Every arm but LoRA trains in seconds to about a minute and a half on a shared CPU,
  and none of them runs an encoder in training. Train seconds to best are lowest for IDRec and the two-stage mix, highest
  for the MISSRec arms without pre-training (titles + posters the most); `missrec_pre`'s seconds leave out its source run (100-250 s a seed). The peak
  memory column is the process's peak RSS (about 0.9 GiB for every frozen arm: the libraries and the
  feature caches dominate, not the arms), so TPME ranks the frozen arms by trainable parameters
  and seconds; its reference is the IISAN title + poster row (most parameters; no full
  fine-tuning row is in the study)."""


# The reading of the same study on another data set (scripts/study_page.py picks it by --dataset).
READING_BY_DATASET = {"amazon-scientific": """\
Amazon "Industrial and Scientific" (product titles; 12,076 users, 20,314 items kept at L 10; the
SMALL settings with `cold_start_count 1`: 2,443 test targets never seen in training), arms `id`,
`ts_all`, `iisan_text` and `missrec`, 5 seeds each (1-5).
The data set has no images, so there is no IISAN or MISSRec over posters, and no source domains,
so no pre-trained MISSRec. The IDRec, `ts_all` and `iisan_text` runs are those of the Q4 study on
this data set (same --runs_dir). LoRA: Q4's `lora_top2_cached` arm (one run, training).

- **Every frozen-text arm is ahead of IDRec on both metrics at the seed level** (`*`), MISSRec
  over the title features included: on this catalogue it lands between IISAN and the plain
  all-layer mix, where on ml-100k (titles only) it was below IDRec in the mean.
- **Cold start:** MISSRec ranks the items unseen in training best of the frozen arms (the
  cold-start column: about 0.96 HR@10 against 0.64-0.66 for IISAN and the all-layer mix; IDRec
  cannot rank them at all); not tested between the arms.
- **Cost:** MISSRec is the slowest arm here (train seconds to best about 1,000 against about 250-300
  for IISAN and the mix, on a thread shared with other runs) and four of its five runs had
  their best epoch at 35-39 of the 40-epoch cap, so it may be under-trained at these settings."""}


def arms(ts_dnn: int, cv_model_load: str, image_size: int) -> dict[str, dict]:
    """Each arm with every value that defines it (an override that contradicts one is refused);
    missrec_pre's init_from is added per seed by main."""
    ts_all = {**MOREC_TS, "dnn_layers": ts_dnn, "ts_layers": "all"}
    missrec = {**MISSREC_TS, "dnn_layers": ts_dnn}
    return {
        "id": IDREC,
        "ts_all": ts_all,
        "iisan_text": {**ts_all, "side_network": "iisan"},
        "iisan_mm": {**ts_all, "side_network": "iisan", "item_tower": "text+vision", "image_lmdb": "posters.lmdb",
                     "cv_model_load": cv_model_load, "image_size": image_size},
        "missrec": missrec,
        "missrec_mm": {**missrec, "item_tower": "text+vision", "image_lmdb": "posters.lmdb",
                       "cv_model_load": cv_model_load, "image_size": image_size},
        "missrec_pre": missrec,
        "lora": {**MOREC_E2E, "trainable_layers": -1, "peft": "lora"},
        "lora_top2_cached": {**MOREC_E2E, "trainable_layers": -1, "peft": "lora", "peft_layers": 2,
                             "cache_frozen_layers": True},
    }


def add_options(parser) -> None:
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"which arms to run (default: {','.join(DEFAULT_ARMS)}; also lora, lora_top2_cached)")
    parser.add_argument("--ts_dnn", type=int, default=2,
                        help="dnn_layers of the two-stage, IISAN and MISSRec heads (default 2, Q3's best TS depth)")
    parser.add_argument("--cv_model_load", default="random_tiny_vit_mae",
                        help="iisan_mm's image encoder (a ViT: IISAN needs one width for every layer)")
    parser.add_argument("--image_size", type=int, default=64, help="iisan_mm's poster side in pixels (default 64)")


def chosen_arms(text: str, known: dict) -> list[str]:
    chosen = [arm.strip() for arm in text.split(",") if arm.strip()]
    if not chosen or any(arm not in known for arm in chosen):
        raise InputError(f"--arms {text!r}: choose from {', '.join(known)}")
    return chosen


def pretrained_parts(missrec: dict, seeds: list[int], overrides: dict, out: Path, table_only: bool) -> list[dict]:
    """missrec_pre: per seed, the MISSRec run on Q6's source genres (trained first unless
    table_only; the domains are made from ml-100k when missing), then the target part that
    starts from it (--init_from)."""
    from study_q6_transfer import ensure_domains, source_runs_of
    if overrides["all"].get("dataset", "ml-100k") != "ml-100k" or "seed" in overrides["mo"]:
        raise InputError("missrec_pre is pre-trained on ml-100k's source genres, per seed: run it on ml-100k "
                         "with --seed (not --mo.seed), or leave it out of --arms")
    ensure_domains(overrides, SOURCE_DOMAINS)
    on_source = {**overrides, "all": {k: v for k, v in overrides["all"].items() if k != "dataset"}}
    runs_dir = Path(overrides["all"].get("runs_dir", "") or out / "runs")
    sources = source_runs_of({**missrec, "dataset": f"{SOURCE_DOMAINS}-source"}, seeds, on_source, runs_dir, table_only)
    return [{**missrec, "init_from": str(folder.resolve()), "seed": seed} for seed, (_, folder) in zip(seeds, sources)]


def main(argv: list[str]):
    args, overrides = parse_args(argv, __doc__.split("\n\n")[0], add_options)
    known = arms(args.ts_dnn, args.cv_model_load, args.image_size)
    chosen = chosen_arms(args.arms, known)
    if any("init_from" in o for o in overrides.values()):
        raise InputError("--init_from is set by the study (the missrec_pre arm)")
    check_arm_overrides({arm: known[arm] for arm in chosen}, overrides,
                        "choose arms with --arms (--ts_dnn, --cv_model_load, --image_size set the arms' values)")
    out = Path(args.out or f"studies/{overrides['all'].get('dataset', 'ml-100k')}-efficient")
    args.out = str(out)
    given = overrides["all"].pop("seed", None)
    seeded = {} if given is None else {"seed": given}
    parts = [{**known[arm], **seeded} for arm in chosen if arm != "missrec_pre"]
    if "missrec_pre" in chosen:
        seeds = default_seeds({**known["missrec"]}) if given is None else given if isinstance(given, list) else [given]
        parts += pretrained_parts(known["missrec"], seeds, overrides, out, args.table_only)
    return run_study("q7_efficient_multimodal", "Q7: efficient multi-modal recommenders (IISAN, MISSRec) against "
                     "IDRec and two-stage", parts, args, overrides, own_tables)


def arm_of(config: dict) -> str:
    """The arm of a run's config.json (morec.report.run_files.Run.config)."""
    if config.get("model") == "missrec":
        if config.get("init_from"):
            return "missrec_pre"
        return "missrec_mm" if config.get("item_tower") == "text+vision" else "missrec"
    if config.get("item_tower", "id") == "id":
        return "id"
    if config.get("side_network") == "iisan":
        return "iisan_mm" if config["item_tower"] == "text+vision" else "iisan_text"
    if config.get("two_stage"):
        return "ts_all"
    if config.get("peft") == "lora":
        return "lora_top2_cached" if config.get("cache_frozen_layers") else "lora"
    return "other"


def own_tables(tested: list, out: Path) -> None:
    """Every arm against IDRec, paired by seed (the main table gives MISSRec no Δ: its IDRec
    counterpart would be a MISSRec over IDs, and the question here is SASRec's IDRec), and, where
    there are pre-trained MISSRec runs, MISSRec pre-trained against MISSRec from scratch, and each
    system over titles + posters against itself over titles (written only where both ran); the
    seed-level test of study_common.paired_table."""
    from study_common import paired_table
    runs = {}
    for run in tested:
        runs.setdefault(arm_of(run.config), []).append(run)
    order = [arm for arm in arms(0, "", 0) if arm != "id" and arm in runs]
    paired_table("Q7: every arm against IDRec (SASRec over item IDs), paired by seed", ("arm",), "IDRec",
                 [((arm,), runs[arm], runs.get("id", [])) for arm in order],
                 out / "q7_efficient_multimodal_vs_idrec.md")
    posters = [((mm, text), runs.get(mm, []), runs.get(text, []))
               for mm, text in (("iisan_mm", "iisan_text"), ("missrec_mm", "missrec"))]
    if any(mine and base for _, mine, base in posters):
        paired_table("Q7: what the posters add: each system over titles + posters against itself over titles, "
                     "paired by seed", ("arm", "against"), "titles only", posters,
                     out / "q7_efficient_multimodal_posters.md")
    if "missrec_pre" in runs:                    # ml-100k only (pre-trained on its source genres)
        paired_table("Q7: MISSRec pre-trained on the source genres against MISSRec from scratch, paired by seed",
                     ("arm",), "MISSRec from scratch",
                     [(("missrec_pre",), runs["missrec_pre"], runs.get("missrec", []))],
                     out / "q7_efficient_multimodal_pretraining.md")


if __name__ == "__main__":
    entry(main)
