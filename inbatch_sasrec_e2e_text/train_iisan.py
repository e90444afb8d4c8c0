"""IISAN (Fu et al., SIGIR 2024) over all-MiniLM-L6-v2 with the in-batch debiased softmax loss: the
encoder is frozen and never runs in training; each item's pooled state of every layer is cached
once (`--ts_layers all`), and a side adapter network (gated mix of the cached layer states and the
previous block, then a bottleneck adapter; every second layer) trains beside it (docs/iisan.md,
morec/models/side_network.py).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_iisan.py --san_layers every_second,all --san_dim 32,64
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", two_stage=True, ts_layers="all", side_network="iisan",
    bert_model_load="all_minilm_l6_v2",
)

if __name__ == "__main__":
    main(params, "train", __file__)
