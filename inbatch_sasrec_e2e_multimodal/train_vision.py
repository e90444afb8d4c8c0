"""Vision MoRec on the multi-modal folder's protocol: ResNet50 over the ml-100k posters as the item
tower, its top 2 stages fine-tuned; the vision branch of train_text_vision.py, alone.

    python inbatch_sasrec_e2e_multimodal/train_vision.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="vision", trainable_layers=2,
)

if __name__ == "__main__":
    main(params, "train", __file__)
