"""Text MoRec trained with the in-batch debiased softmax loss: SASRec whose item tower is BERT-base
(bert-base-uncased, pretrained_models/bert_base_uncased/), fine-tuned end to end.

    python inbatch_sasrec_e2e_text/train_bert_base.py --epoch 3 [--bert_model_load NAME]

All of its 12 layers train (trainable_layers -1).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="bert_base_uncased", trainable_layers=-1,
)

if __name__ == "__main__":
    main(params, "train", __file__)
