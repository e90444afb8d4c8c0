"""Text MoRec DSSM with RoBERTa-base (roberta-base, read from pretrained_models/roberta_base/) as the
item tower, against the user-ID MLP tower; end to end, BCE, sampled negatives.

    python bce_text/main-end2end-dssm/train_roberta_base.py --epoch 3 [--bert_model_load NAME]

RoBERTa-base (125M) has BERT-base's shape with a byte-level BPE vocabulary and longer pretraining.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="roberta_base",
)

if __name__ == "__main__":
    main(params, "train", __file__)
