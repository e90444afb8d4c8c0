"""Two-stage Swin-T (HF microsoft/swin-tiny-patch4-window7-224, pretrained_models/swin_tiny/): the
pooler output of every item, frozen and cached once, then GELU(Linear) and 8 DNN layers.

    python bce_vision/main-2stage/train_swin_tiny_dnn8.py --epoch 3
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    cv_model_load="swin_tiny",
)

if __name__ == "__main__":
    main(params, "train", __file__)
