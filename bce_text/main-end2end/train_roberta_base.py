"""Text MoRec: SASRec whose item tower is RoBERTa-base (125M, roberta-base), trained end to end
with BCE and sampled negatives (the paper's main setting, Table 2).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_text/main-end2end/train_roberta_base.py --epoch 3 [--bert_model_load NAME]
The encoder folder pretrained_models/roberta_base/ is read offline (pretrained_models/README.md
says where to get it); `--bert_model_load all_minilm_l6_v2` runs with the MiniLM that pip installs.
Paper results on MIND: HR@10 18.68 / NDCG@10 10.02. Paper settings on MIND (original release files
mind_60w_users.tsv, mind_60w_items.tsv): max_seq_len 20, news_attributes title, num_words_title 30,
freeze_paras_before 0 (all layers fine-tuned), embedding_dim 512, batch_size 32 per GPU x 2, (lr,
fine_tune_lr) in [(1e-4, 5e-5), (5e-5, 5e-5)], l2_weight 0.01, drop_rate 0.1, epoch 150. The
defaults below are sized for ml-100k on a CPU.
Weight decay differs from the original release: its BCE code decayed the encoder with `l2_weight`
(one value for both parameter groups); here the encoder group uses `fine_tune_l2_weight`. For
the original's behaviour pass `--fine_tune_l2_weight` equal to `--l2_weight`.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="text", loss="bce",
    bert_model_load="roberta_base", news_attributes="title", num_words_title=30,
    freeze_paras_before=0, trainable_layers=-1,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
