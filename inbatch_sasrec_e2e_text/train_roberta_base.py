"""Text MoRec with RoBERTa-base (roberta-base, pretrained_models/roberta_base/) as the item tower of
SASRec, all layers fine-tuned with the in-batch debiased softmax loss.

    python inbatch_sasrec_e2e_text/train_roberta_base.py --epoch 3 [--bert_model_load NAME]

Paper results on MIND: HR@10 23.00 / NDCG@10 12.82, above IDRec's 22.60 HR@10.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="roberta_base", trainable_layers=-1,
)

if __name__ == "__main__":
    main(params, "train", __file__)
