"""ID + text fusion by addition (ADD), end to end.

    python bce_text/id_plus_mo-end2end/train_bert_add.py --epoch 3 [--bert_model_load NAME]

Each item is e = e_id + e_text (FusionTower, morec/models/towers.py).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="add",
)

if __name__ == "__main__":
    main(params, "train", __file__)
