"""The values every script of bce_text/id_plus_mo-end2end shares: ID + text fusion trained end to end,
each item being its ID embedding fused with the BERT-base text vector; SASRec with BCE and sampled
negatives. Each train_*.py adds only its fusion (the block at its top). Change a value here to
change it for the whole comparison, or override any value for one run on the command line (a list,
or commas `--lr 1e-3,1e-4`, is a grid: one run per combination). tests/test_shared_blocks.py checks
that the scripts of the folder agree on every value but its fusion.

Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv):
bert_base_uncased, news_attributes title, freeze_paras_before 0, embedding_dim 512, batch_size 32
per GPU x 2, lr 1e-4, fine_tune_lr 5e-5, l2_weight 0.01, drop_rate 0.1, epoch 150. The paper finds
that adding the ID embedding does not beat text alone. The values below are sized for ml-100k on a
CPU; `--bert_model_load NAME` picks another encoder folder under pretrained_models/. Weight decay
differs from the original release: its BCE code decayed the encoder with `l2_weight` (one value for
both parameter groups); here the encoder group uses `fine_tune_l2_weight`. For the original's
behaviour pass `--fine_tune_l2_weight` equal to `--l2_weight`.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    model="sasrec", item_tower="text", loss="bce", embedding_dim=64, transformer_block=2,
    num_attention_heads=2, drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1,
    bert_model_load="bert_base_uncased", news_attributes="title", num_words_title=30,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=7, seed=12345,
)
