"""IDRec baseline for the vision experiments: SASRec over an item ID embedding table, BCE with
sampled negatives, max_seq_len 10 (the image data sets' setting).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_vision/main-end2end/train_id.py --seed 12345,12346,12347
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv
(dataset/HM/README.md).
Paper settings on HM (original release's bce_vision/main-end2end/train_id.py): max_seq_len 10,
batch_size 128, lr in [1e-4, 5e-5, 1e-3, 5e-4], embedding_dim in [512, 1024, 2048, 4096],
l2_weight 0.1, drop_rate 0.1, epoch 150.
Paper results (SASRec, BCE, HM): IDRec HR@10 6.84 / NDCG@10 4.01, Swin-B 7.24 / 3.98.
Defaults below: ml-100k on a CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="id", loss="bce",
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
