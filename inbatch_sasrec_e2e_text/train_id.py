"""IDRec SASRec trained with the in-batch debiased softmax loss (the paper's follow-up setting).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_id.py --epoch 3 --embedding_dim 64 [--label NAME]
Paper, MIND: max_seq_len 20, embedding_dim 512, batch_size 64 per GPU x 8, lr 1e-4, l2_weight 0.1,
drop_rate 0.1, transformer_block 2, num_attention_heads 2 (see the paper's Table 2 setting).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="id", loss="inbatch",
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
