"""IDRec on the multi-modal folder's protocol (in-batch debiased softmax): the baseline that
train_text.py, train_vision.py and train_text_vision.py must beat.

    python inbatch_sasrec_e2e_multimodal/train_id.py --seed 12345,12346,12347

Edit the values below (a list is a grid), the shared ones in common.py, or override any of them.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="id",
)

if __name__ == "__main__":
    main(params, "train", __file__)
