"""Text MoRec trained with the in-batch debiased softmax loss: SASRec whose item tower is
BERT-small (google/bert_uncased_L-4_H-512_A-8), fine-tuned end to end (the paper's follow-up
setting).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_bert_small.py --epoch 3 [--bert_model_load NAME]
The encoder folder pretrained_models/bert_small/ is read offline (pretrained_models/README.md).
Paper results on MIND: HR@10 22.96 / NDCG@10 12.82 (IDRec 22.60 / 12.57). Paper settings on MIND
(original release files mind_60w_users.tsv, mind_60w_items.tsv): max_seq_len 20, news_attributes
title, freeze_paras_before 0, embedding_dim 512, batch_size 128 per GPU x 2, lr 1e-4, fine_tune_lr
5e-5, l2_weight 0.01, fine_tune_l2_weight 0.01, drop_rate 0.1, epoch 300. Defaults below: ml-100k,
CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="text", loss="inbatch",
    bert_model_load="bert_small", news_attributes="title", num_words_title=30,
    freeze_paras_before=0, trainable_layers=-1,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
