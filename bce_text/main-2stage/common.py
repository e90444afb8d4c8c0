"""The values every script of bce_text/main-2stage shares: two-stage (TS) text MoRec. BERT-base is
frozen, the last-layer CLS feature of every item is extracted once and cached (cache/features/,
memory-mapped), and SASRec trains with BCE on GELU(Linear(feature)) followed by dnn_layers x
[Dropout, Linear, GELU]. Each train_*.py adds only its dnn_layers (the block at its top). Change a
value here to change it for the whole comparison, or override any value for one run on the command
line (a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per combination).
tests/test_shared_blocks.py checks that the scripts of the folder agree on every value but its
dnn_layers. Features can be extracted ahead (e.g. on a GPU node):
    python scripts/extract_features.py --bert_model_load bert_base_uncased

Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv): BERT-base
TS reaches HR@10 13.93 without DNN layers and 16.66 with 8 (E2E: 18.23); dnn_layers swept 0-12
(`--dnn_layers 0,2,4,6,8,10,12`), embedding_dim 512, batch_size 512, lr 1e-4, l2_weight 0.01,
drop_rate 0.1, epoch 150. The values below are sized for ml-100k on a CPU.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=20, min_seq_len=5,
    model="sasrec", item_tower="text", two_stage=True, loss="bce",
    bert_model_load="bert_base_uncased", news_attributes="title", num_words_title=30,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=11, seed=12345,
)
