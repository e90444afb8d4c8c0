"""The values every script of bce_text/main-end2end-dssm shares: DSSM (two towers: a user-ID MLP
against an item tower) trained with BCE and neg_num sampled negatives per positive pair; the item
tower is an ID embedding + MLP (train_id.py) or a text encoder fine-tuned end to end. Each
train_*.py adds only its item tower (the block at its top). Change a value here to change it for
the whole comparison, or override any value for one run on the command line (a list, or commas
`--lr 1e-3,1e-4`, is a grid: one run per combination). tests/test_shared_blocks.py checks that the
scripts of the folder agree on every value but its item tower.

Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv): the DSSM
runs used the SASRec data protocol (max_seq_len 20), drop_rate 0.1. IDRec: l2_weight 0.1, lr and
embedding_dim swept as in the SASRec scripts. Text MoRec: news_attributes title, embedding_dim 512,
l2_weight 0.01, lr 1e-4 with fine_tune_lr 5e-5, freeze_paras_before 0. The paper finds DSSM MoRec
far behind SASRec MoRec. The values below are sized for ml-100k on a CPU; the encoders are read
offline from pretrained_models/NAME/ (pretrained_models/README.md). Weight decay differs from the
original release: its BCE code decayed the encoder with `l2_weight` (one value for both parameter
groups); here the encoder group uses `fine_tune_l2_weight`. For the original's behaviour pass
`--fine_tune_l2_weight` equal to `--l2_weight`.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    news_attributes="title", num_words_title=30,     # text items (the ID tower reads none of these)
    model="dssm", loss="bce", neg_num=1, embedding_dim=64, dnn_layers=2, drop_rate=0.1,
    batch_size=256, lr=1e-3, l2_weight=0.1, epoch=100, patience=11, seed=12345,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
