"""Multi-modal MoRec: SASRec whose item tower encodes each item's title with all-MiniLM-L6-v2 AND its
poster with ResNet50 (each with its top 2 blocks / stages fine-tuned) and fuses the two vectors
(--mm_fusion, morec/models/multimodal.py):
    sum     e = e_text + e_image
    concat  e = GELU(Linear(Dropout([e_text; e_image])))
    gate    e = g * e_text + (1 - g) * e_image,  g = sigmoid(W [e_text; e_image] + b) per dimension
The text encoder trains with fine_tune_lr, the vision encoder with cv_fine_tune_lr (-1: the same).
Add the ID vector on top with --fusion add|cat.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_text_vision.py --mm_fusion sum,concat,gate --epoch 3
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text+vision", mm_fusion="gate", trainable_layers=2, cv_fine_tune_lr=-1.0,
)

if __name__ == "__main__":
    main(params, "train", __file__)
