"""IDRec SASRec trained end to end with BCE and sampled negatives (the paper's main setting).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_text/main-end2end/train_id.py --epoch 3 --lr 1e-3,5e-4 [--label NAME]
Paper, MIND (original release: dataset MIND, behaviors mind_60w_users.tsv, news mind_60w_items.tsv):
max_seq_len 20, batch_size 128, lr swept over [1e-4, 5e-5, 1e-3, 5e-4], embedding_dim over
[512, 1024, 2048, 4096], l2_weight 0.1, drop_rate 0.1, epoch 150. Image data sets (HM, Bili):
max_seq_len 10.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="id", loss="bce",
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
