"""Vision MoRec trained with the in-batch debiased softmax loss: SASRec whose item tower is ResNet50
(torchvision, pretrained_models/resnet50/), fine-tuned end to end.

    python inbatch_sasrec_e2e_vision/train_resnet50.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]

Paper, HM: 11.90 HR@10, level with IDRec (11.94).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="vision", cv_model_load="resnet50",
)

if __name__ == "__main__":
    main(params, "train", __file__)
