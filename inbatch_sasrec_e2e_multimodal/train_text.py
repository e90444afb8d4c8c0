"""Text MoRec on the multi-modal folder's protocol: SASRec whose item tower is all-MiniLM-L6-v2 over
the ml-100k titles (top 2 blocks fine-tuned). The text branch of train_text_vision.py, alone.

    python inbatch_sasrec_e2e_multimodal/train_text.py --epoch 3 [--bert_model_load NAME]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text", trainable_layers=2,
)

if __name__ == "__main__":
    main(params, "train", __file__)
