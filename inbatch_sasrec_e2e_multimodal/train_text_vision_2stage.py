"""Multi-modal MoRec, two-stage: the text and the vision encoder are frozen and run once, before
training: each item's title features (all-MiniLM-L6-v2) and poster features (ResNet50, global-
average pooled) are cached; in training a head over each branch's features (GELU(Linear) +
dnn_layers) gives e_text and e_image, fused by --mm_fusion (sum, concat, gate;
morec/models/multimodal.py). The encoders never run in training: a CPU-sized multi-modal run.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_text_vision_2stage.py --mm_fusion sum,concat,gate
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    item_tower="text+vision", two_stage=True, mm_fusion="gate", dnn_layers=2,
)

if __name__ == "__main__":
    main(params, "train", __file__)
