"""ID + text fusion by concatenation (CAT) over the cached BERT-base features.

    python bce_text/id_plus_mo-2stage/train_bert_cat.py --dnn_layers 0,2,4,6

The concatenation is projected back, e = GELU(Linear(Dropout([e_id; e_text]))); dnn_layers follow.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="cat",
)

if __name__ == "__main__":
    main(params, "train", __file__)
