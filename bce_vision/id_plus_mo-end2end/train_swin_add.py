"""ID + image fusion, end to end, by addition: e = e_id + e_image, where e_image is the Swin-T vector
trained along with the ID table.

    python bce_vision/id_plus_mo-end2end/train_swin_add.py --epoch 3 [--cv_model_load NAME]

The ADD variant of the paper's ID + modality study.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="add",
)

if __name__ == "__main__":
    main(params, "train", __file__)
