"""ID + text fusion (CAT), two-stage: frozen, cached BERT-base features pass through
GELU(Linear(feature)) and mo_dnn_layers MLP layers, are fused with the ID embedding (e =
GELU(Linear(Dropout([e_id; e_text])))), then dnn_layers MLP layers; SASRec with BCE.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_text/id_plus_mo-2stage/train_bert_cat.py --dnn_layers 0,2,4,6
Paper settings on MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv):
bert_base_uncased, news_attributes title, mo_dnn_layers 4, dnn_layers in [2, 4, 6, 0],
embedding_dim 512, batch_size 64, lr 1e-4, l2_weight 0.01, drop_rate 0.1, epoch 150. Defaults below
are sized for ml-100k on a CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="text", two_stage=True, fusion="cat", loss="bce",
    bert_model_load="bert_base_uncased", news_attributes="title", num_words_title=30,
    mo_dnn_layers=4, dnn_layers=0,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
