"""Two-stage ID + image fusion by addition: the frozen Swin-T feature, cached once, passes its
mo_dnn_layers and is added to the ID embedding.

    python bce_vision/id_plus_mo-2stage/train_swin_add.py --dnn_layers 0,2,4,6

The sum then passes the dnn_layers MLP layers (the paper sweeps 0, 2, 4 and 6 of them).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="add",
)

if __name__ == "__main__":
    main(params, "train", __file__)
