"""IDRec DSSM baseline for the vision experiments: user-ID MLP tower against an item ID
embedding tower, BCE with sampled negatives, the image data protocol (max_seq_len 10).

Edit the values below (a list is a grid) or override any of them:
    python bce_vision/main-end2end-dssm/train_id.py --seed 12345,12346,12347
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv
(dataset/HM/README.md).
Defaults below: ml-100k on a CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="dssm", item_tower="id", loss="bce", neg_num=1,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, dnn_layers=2, drop_rate=0.1,
    batch_size=256, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=6,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
