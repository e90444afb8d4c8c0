"""IDRec with the in-batch debiased softmax loss on the multi-modal folder's protocol (ml-100k,
max_seq_len 10, patience 7): the baseline of train_text.py, train_vision.py and
train_text_vision.py (issue 16: does text + image beat either one, and the ID table?).

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_id.py --seed 12345,12346,12347
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="id", loss="inbatch",
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
