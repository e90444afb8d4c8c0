"""Two-stage ResNet50 (torchvision, pretrained_models/resnet50/): the pooled 2048-d vector of every
item, frozen and cached, under 8 DNN layers.

    python bce_vision/main-2stage/train_resnet50_dnn8.py --dnn_layers 0,2,4,6,8,10,12
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    cv_model_load="resnet50",
)

if __name__ == "__main__":
    main(params, "train", __file__)
