"""Two-stage BERT-base with 8 DNN layers ([Dropout, Linear, GELU] each) over GELU(Linear(feature)): in
the paper 8 layers lift TS BERT-base from 13.93 to 16.66 HR@10 (end to end: 18.23).

    python bce_text/main-2stage/train_bert_base_dnn8.py --dnn_layers 0,2,4,6,8,10,12
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    dnn_layers=8,
)

if __name__ == "__main__":
    main(params, "train", __file__)
