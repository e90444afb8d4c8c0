"""ID + image fusion, end to end, by concatenation: the ID embedding and the Swin-T vector side by
side, projected back to one vector of embedding_dim.

    python bce_vision/id_plus_mo-end2end/train_swin_cat.py --epoch 3 [--cv_model_load NAME]

CAT: e = GELU(Linear(Dropout([e_id; e_image]))).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="cat",
)

if __name__ == "__main__":
    main(params, "train", __file__)
