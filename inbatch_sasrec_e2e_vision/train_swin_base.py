"""Vision MoRec, in-batch debiased softmax: SASRec with Swin-B as its item tower (HF
microsoft/swin-base-patch4-window7-224, pretrained_models/swin_base/), every stage fine-tuned.

    python inbatch_sasrec_e2e_vision/train_swin_base.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]

Paper, HM: HR@10 12.26 / NDCG@10 7.70, above IDRec (11.94) and ResNet50 (11.90).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="vision", cv_model_load="swin_base",
)

if __name__ == "__main__":
    main(params, "train", __file__)
