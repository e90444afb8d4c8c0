"""Text MoRec: SASRec whose item tower is OPT-125M (facebook/opt-125m, pretrained_models/opt_125m/;
masked-mean pooling), trained end to end with BCE and sampled negatives (the paper's main setting,
Table 2).

    python bce_text/main-end2end/train_opt_125m.py --epoch 3 [--bert_model_load NAME]

It is part of the paper's text encoder scaling study (OPT 125M and larger).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="opt_125m",
)

if __name__ == "__main__":
    main(params, "train", __file__)
