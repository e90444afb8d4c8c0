"""The values every script of bce_text/main-end2end shares: SASRec trained end to end with BCE and
sampled negatives (the paper's main setting, Table 2), the item tower being an ID table
(train_id.py) or a text encoder over the item titles (every other script). Each train_*.py adds
only its item tower (the block at its top). Change a value here to change it for the whole
comparison, or override any value for one run on the command line (`--lr 1e-4`; a list or `--lr
1e-3,1e-4` is a grid: one run per combination). tests/test_shared_blocks.py checks that the scripts
of the folder agree on every value but their item tower.

Paper settings on MIND (original release: dataset MIND, behaviors mind_60w_users.tsv, news
mind_60w_items.tsv): max_seq_len 20, drop_rate 0.1, epoch 150. IDRec: batch_size 128, lr swept over
[1e-4, 5e-5, 1e-3, 5e-4], embedding_dim over [512, 1024, 2048, 4096], l2_weight 0.1. Text MoRec:
news_attributes title, num_words_title 30, freeze_paras_before 0 (all layers fine-tuned),
embedding_dim 512, batch_size 32 per GPU x 2, (lr, fine_tune_lr) in [(1e-4, 5e-5), (5e-5, 5e-5)],
l2_weight 0.01. Image data sets (HM, Bili): max_seq_len 10 (bce_vision/). The values below are
sized for ml-100k on a CPU.

The encoders are read offline from pretrained_models/NAME/ (pretrained_models/README.md says where
to get each); `--bert_model_load all_minilm_l6_v2` runs any text script with the MiniLM that pip
installs. Weight decay differs from the original release: its BCE code decayed the encoder with
`l2_weight` (one value for both parameter groups); here the encoder group uses
`fine_tune_l2_weight`. For the original's behaviour pass `--fine_tune_l2_weight` equal to
`--l2_weight`.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    news_attributes="title", num_words_title=30,     # text items (the ID tower reads none of these)
    model="sasrec", loss="bce", embedding_dim=64, transformer_block=2, num_attention_heads=2,
    drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7, seed=12345,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
