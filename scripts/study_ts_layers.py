"""Layer-cached two-stage: the last layer's features, or a learned scalar mix of every
layer's (`--ts_layers all`, ELMo eq. 1), under the frozen text encoder?

Trains and tests two-stage text MoRec with `--ts_layers last` and `all` at each DNN depth, with
every seed; then writes the table (with the cost column) and the figures (bars, curves, pareto):

    python scripts/study_ts_layers.py                                  # ml-100k, small CPU settings
    python scripts/study_ts_layers.py --dnn 0,2 --seed 1,2,3,4,5,6,7,8,9,10 --out docs/studies/ml-100k-ts-layers

Defaults: those of scripts/study_common.py SMALL (all-MiniLM-L6-v2, max_seq_len 10, in-batch
SASRec), depths 0 and 2. The `last` runs are the two-stage runs of study_q3_ts_vs_e2e.py (same
labels: they are shared when both studies use the same --runs_dir).
"""
import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # noqa: E401,E702

from pathlib import Path

from study_common import MOREC_TS, entry, int_list, paired_table, parse_args, run_study
from morec.errors import InputError

# The study page's reading (scripts/study_page.py writes it under the tables). It refers to the
# table rather than quoting it, so that a re-run does not make it wrong.
READING = """\
Two-stage text MoRec (frozen all-MiniLM-L6-v2, cached features, a trainable head) with the last
layer's CLS (`--ts_layers last`, the paper's two-stage) or with the CLS of all 7 hidden states
(embedding output + 6 blocks) mixed by a learned ELMo scalar mix (`--ts_layers all`, its own
learning rate `--ts_mix_lr`). 10 seeds per arm (`--seed 1,...,10`; without it these cheap arms
get 5). The `last` rows are the two-stage runs of the Q3 study (the same labels when both studies
use one --runs_dir).

- The mix is ahead of the last layer in the mean at both head depths, by about half an HR@10
  point, but the seed-level test does not separate them at either depth
  (`ts_layers_all_vs_last.md`: paired t over 10 seeds, no `*`, every interval includes 0). Gains
  under 1 point are found with 10 seeds only part of the time (docs/significance.md's power
  table): "not shown", not "no difference".
- The mix's runs vary less from seed to seed than the last layer's (the ± of the main table).
- The learned mix ends almost entirely on the last layer, more so under the 2-layer head (the
  softmax layer weights in the runs' checkpoints, not in the tables): on this data set the lower
  layers add little beyond a rescaling. The mix has its own learning rate because, trained at the
  recommender's learning rate and weight decay (an earlier version), its weights barely left their
  uniform start.
- The table has no IDRec row, so its Δ vs IDRec columns are empty; IDRec against the 2-layer
  two-stage head, with 10 seeds, is in the Q5 frozen study (ml-100k-multimodal).
- Cost (the cost column): the all-layer head gathers a (B, L+1, 7, 384) block per step; it takes a
  little longer to its best epoch without DNN layers and as long with 2 (runs sharing a small CPU),
  and peaks a little higher; its feature cache is 7x larger (one pass of the encoder either way)."""


def main(argv: list[str]):
    args, overrides = parse_args(argv, __doc__.split("\n\n")[0], lambda parser: parser.add_argument(
        "--dnn", default="0,2", help="dnn_layers of the runs (default 0,2)"))
    if any(key in o for o in overrides.values() for key in ("dnn_layers", "ts_layers")):
        raise InputError("give the depths with --dnn; the study runs both --ts_layers last and all")
    if args.modality != "text":
        raise InputError("--ts_layers all is for text encoders; this study has no --modality vision")
    parts = [{**MOREC_TS, "ts_layers": layers, "dnn_layers": int_list(args.dnn)} for layers in ("last", "all")]
    return run_study("ts_layers", "Two-stage: last layer vs a scalar mix of every layer", parts, args, overrides,
                     lambda tested, out: all_versus_last(tested, out / "ts_layers_all_vs_last.md"))


def all_versus_last(tested: list, path: Path) -> str:
    """The question of the study in one table: at each head depth, the all-layer mix against the
    last layer, with the seed-level test (study_common.paired_table); `tested`: the study's tested
    runs (morec.report.run_files.Run)."""
    def of(layers: str, depth: int) -> list:
        return [r for r in tested if r.config.get("ts_layers", "last") == layers and r.config["dnn_layers"] == depth]
    depths = sorted({r.config["dnn_layers"] for r in tested})
    return paired_table("Two-stage: all layers mixed against the last layer (same head depth, paired by seed)",
                        ("dnn_layers",), "last layer", [((str(d),), of("all", d), of("last", d)) for d in depths], path)


if __name__ == "__main__":
    entry(main)
