"""IDRec DSSM baseline for the vision experiments: user-ID MLP tower against an item ID embedding
tower, BCE with sampled negatives, the image data protocol (max_seq_len 10).

Edit the values below (a list is a grid), those of common.py, or override any of them:
    python bce_vision/main-end2end-dssm/train_id.py --seed 12345,12346,12347
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="id",
)

if __name__ == "__main__":
    main(params, "train", __file__)
