"""Vision MoRec DSSM with Swin-T (HF microsoft/swin-tiny-patch4-window7-224,
pretrained_models/swin_tiny/) as the item tower, against the user-ID MLP tower; end to end, BCE.

    python bce_vision/main-end2end-dssm/train_swin_tiny.py --epoch 3 [--cv_model_load NAME]

Swin-T: a shifted-window vision transformer of 28M parameters (pooler output, 768-d).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="vision", cv_model_load="swin_tiny",
)

if __name__ == "__main__":
    main(params, "train", __file__)
