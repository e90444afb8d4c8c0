"""Text MoRec: SASRec whose item tower is BERT-small (29M, google/bert_uncased_L-4_H-512_A-8,
pretrained_models/bert_small/), trained end to end with BCE and sampled negatives (the paper's main
setting, Table 2).

    python bce_text/main-end2end/train_bert_small.py --epoch 3 [--bert_model_load NAME]

In the paper the BERT scaling study's middle size: 4 layers, hidden 512.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", bert_model_load="bert_small",
)

if __name__ == "__main__":
    main(params, "train", __file__)
