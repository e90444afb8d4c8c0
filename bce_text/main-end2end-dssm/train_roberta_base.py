"""Text MoRec DSSM: user-ID MLP tower against an item tower that is RoBERTa-base (roberta-base),
trained end to end with BCE and sampled negatives.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_text/main-end2end-dssm/train_roberta_base.py --epoch 3 [--bert_model_load NAME]
The encoder folder pretrained_models/roberta_base/ is read offline (pretrained_models/README.md).
Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv): the DSSM
runs used the SASRec data protocol (max_seq_len 20), news_attributes title, embedding_dim 512,
l2_weight 0.01, drop_rate 0.1, lr 1e-4 with fine_tune_lr 5e-5, freeze_paras_before 0. The paper
finds DSSM MoRec far behind SASRec MoRec. Defaults below are sized for ml-100k on a CPU.
Weight decay differs from the original release: its BCE code decayed the encoder with `l2_weight`
(one value for both parameter groups); here the encoder group uses `fine_tune_l2_weight`. For
the original's behaviour pass `--fine_tune_l2_weight` equal to `--l2_weight`.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="dssm", item_tower="text", loss="bce", neg_num=1,
    bert_model_load="roberta_base", news_attributes="title", num_words_title=30,
    freeze_paras_before=0, trainable_layers=-1,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, dnn_layers=2, drop_rate=0.1,
    batch_size=256, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
