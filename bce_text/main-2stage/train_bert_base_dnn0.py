"""Two-stage BERT-base without DNN layers: each item is GELU(Linear(its cached CLS feature)); in the
paper HR@10 13.93 on MIND.

    python bce_text/main-2stage/train_bert_base_dnn0.py --epoch 3
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    dnn_layers=0,
)

if __name__ == "__main__":
    main(params, "train", __file__)
