"""In-batch debiased softmax, SASRec, item tower BERT-small (google/bert_uncased_L-4_H-512_A-8,
pretrained_models/bert_small/) fine-tuned end to end, every layer.

    python inbatch_sasrec_e2e_text/train_bert_small.py --epoch 3 [--bert_model_load NAME]

Paper results on MIND: HR@10 22.96 / NDCG@10 12.82 (IDRec 22.60 / 12.57).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="bert_small", trainable_layers=-1,
)

if __name__ == "__main__":
    main(params, "train", __file__)
