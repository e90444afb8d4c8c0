"""Vision MoRec: SASRec whose item tower is Swin-T (HF microsoft/swin-tiny-patch4-window7-224,
pretrained_models/swin_tiny/), trained end to end with BCE and sampled negatives (the paper's main
setting).

    python bce_vision/main-end2end/train_swin_tiny.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]

Swin-T, 28M parameters, pooler output of 768 dimensions.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="vision", cv_model_load="swin_tiny",
)

if __name__ == "__main__":
    main(params, "train", __file__)
