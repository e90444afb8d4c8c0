"""The values every script of inbatch_sasrec_e2e_text shares: SASRec trained with the in-batch
debiased softmax loss (the paper's follow-up setting), the item tower being an ID table
(train_id.py), a text encoder fine-tuned end to end, or frozen cached text features
(train_minilm_2stage.py). Each train_*.py adds only its item tower (the block at its top). Change a
value here to change it for the whole comparison, or override any value for one run on the command
line (a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per combination).
tests/test_shared_blocks.py checks that the scripts of the folder agree on every value but its item
tower.

Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv): max_seq_len
20, drop_rate 0.1, transformer_block 2, num_attention_heads 2. IDRec: embedding_dim 512, batch_size
64 per GPU x 8, lr 1e-4, l2_weight 0.1. Text MoRec: news_attributes title, freeze_paras_before 0,
embedding_dim 512, batch_size 128 per GPU x 2, lr 1e-4, fine_tune_lr 5e-5, l2_weight 0.01,
fine_tune_l2_weight 0.01, epoch 300. Paper results on MIND: IDRec HR@10 22.60 / NDCG@10 12.57. The
values below are sized for ml-100k on a CPU; the encoders are read offline from
pretrained_models/NAME/ (pretrained_models/README.md).
"""
common = dict(
    loss="inbatch",                                 # the in-batch debiased softmax (morec/losses.py)
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    news_attributes="title", num_words_title=30,     # text items (the ID tower reads none of these)
    model="sasrec", embedding_dim=64, transformer_block=2, num_attention_heads=2,
    drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=11, seed=12345,
    freeze_paras_before=0, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
