"""Text MoRec: SASRec whose item tower is RoBERTa-base (125M, roberta-base,
pretrained_models/roberta_base/), trained end to end with BCE and sampled negatives (the paper's
main setting, Table 2).

    python bce_text/main-end2end/train_roberta_base.py --epoch 3 [--bert_model_load NAME]

Paper results on MIND: HR@10 18.68 / NDCG@10 10.02.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="roberta_base",
)

if __name__ == "__main__":
    main(params, "train", __file__)
