"""Two-stage ID + image fusion by concatenation of the ID embedding and the cached Swin-T branch.

    python bce_vision/id_plus_mo-2stage/train_swin_cat.py --dnn_layers 0,2,4,6

e = GELU(Linear(Dropout([e_id; e_image]))), then dnn_layers.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="cat",
)

if __name__ == "__main__":
    main(params, "train", __file__)
