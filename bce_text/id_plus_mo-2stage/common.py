"""The values every script of bce_text/id_plus_mo-2stage shares: ID + text fusion, two-stage. Frozen,
cached BERT-base features pass through GELU(Linear(feature)) and mo_dnn_layers MLP layers, are
fused with the ID embedding, then pass dnn_layers MLP layers; SASRec with BCE. Each train_*.py adds
only its fusion (the block at its top). Change a value here to change it for the whole comparison,
or override any value for one run on the command line (a list, or commas `--lr 1e-3,1e-4`, is a
grid: one run per combination). tests/test_shared_blocks.py checks that the scripts of the folder
agree on every value but its fusion.

Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv):
bert_base_uncased, news_attributes title, mo_dnn_layers 4, dnn_layers in [2, 4, 6, 0]
(`--dnn_layers 0,2,4,6`), embedding_dim 512, batch_size 64, lr 1e-4, l2_weight 0.01, drop_rate 0.1,
epoch 150. The values below are sized for ml-100k on a CPU.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    model="sasrec", item_tower="text", two_stage=True, loss="bce", mo_dnn_layers=4, dnn_layers=0,
    bert_model_load="bert_base_uncased", news_attributes="title", num_words_title=30,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1, batch_size=64,
    lr=1e-3, l2_weight=0.1, epoch=100, patience=7, seed=12345,
)
