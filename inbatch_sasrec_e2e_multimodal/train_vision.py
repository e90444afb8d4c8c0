"""Vision MoRec on the multi-modal folder's protocol: SASRec whose item tower is ResNet50
(torchvision weights in pretrained_models/resnet50/, top 2 stages fine-tuned) over the ml-100k
posters (generated from title, year and genres by dataset/ml-100k/render_posters.py; not real
posters: README_posters.md), in-batch debiased softmax loss. The vision branch of
train_text_vision.py, alone.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_vision.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", loss="inbatch",
    cv_model_load="resnet50", image_size=224, image_norm="imagenet",
    freeze_paras_before=0, trainable_layers=2,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
