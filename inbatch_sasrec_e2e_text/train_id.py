"""IDRec SASRec trained with the in-batch debiased softmax loss (the paper's follow-up setting).

Edit the values below (a list is a grid: one run per combination), those of common.py, or override
any of them:
    python inbatch_sasrec_e2e_text/train_id.py --epoch 3 --embedding_dim 64 [--label NAME]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="id",
)

if __name__ == "__main__":
    main(params, "train", __file__)
