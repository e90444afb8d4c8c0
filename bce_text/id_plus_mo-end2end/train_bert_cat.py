"""ID + text fusion by concatenation (CAT), end to end.

    python bce_text/id_plus_mo-end2end/train_bert_cat.py --epoch 3 [--bert_model_load NAME]

The two vectors are concatenated and projected back to embedding_dim: e =
GELU(Linear(Dropout([e_id; e_text]))).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    fusion="cat",
)

if __name__ == "__main__":
    main(params, "train", __file__)
