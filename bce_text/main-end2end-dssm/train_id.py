"""IDRec DSSM (two towers: user-ID MLP, item-ID MLP) trained with BCE and sampled negatives.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_text/main-end2end-dssm/train_id.py --epoch 3 --dnn_layers 2 [--label NAME]
Paper, MIND (original release: behaviors mind_60w_users.tsv, news mind_60w_items.tsv): the DSSM
runs used the SASRec data protocol (max_seq_len 20), l2_weight 0.1, drop_rate 0.1 and swept lr
and embedding_dim as the SASRec scripts do; neg_num negatives per positive pair.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="dssm", item_tower="id", loss="bce", neg_num=1,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, dnn_layers=2, drop_rate=0.1,
    batch_size=256, lr=1e-3, l2_weight=0.1, epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
