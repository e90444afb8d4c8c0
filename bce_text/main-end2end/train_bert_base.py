"""Text MoRec: SASRec whose item tower is BERT-base (110M, bert-base-uncased,
pretrained_models/bert_base_uncased/), trained end to end with BCE and sampled negatives (the
paper's main setting, Table 2).

    python bce_text/main-end2end/train_bert_base.py --epoch 3 [--bert_model_load NAME]

Paper results on MIND: HR@10 18.23 / NDCG@10 9.73 (IDRec 17.71 / 9.52).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="bert_base_uncased",
)

if __name__ == "__main__":
    main(params, "train", __file__)
