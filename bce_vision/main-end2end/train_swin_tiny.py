"""Vision MoRec: SASRec whose item tower is Swin-T (HF microsoft/swin-tiny-patch4-window7-224, pretrained_models/swin_tiny/), with its head replaced by
GELU(Linear(feature, d)), trained end to end with BCE and sampled negatives (the paper's main setting).

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python bce_vision/main-end2end/train_swin_tiny.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]
The encoder is read offline from pretrained_models/swin_tiny/ (pretrained_models/README.md).
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).
Paper settings on HM (original release: hm_50w_users.tsv, hm_50w_items.tsv, hm_50w_items.lmdb):
max_seq_len 10, images 224 x 224, freeze_paras_before 0, embedding_dim 512, batch_size 16 per GPU x 4,
(lr, fine_tune_lr) in [(1e-4, 1e-4), (5e-5, 5e-5), (1e-4, 5e-5)], l2_weight 0.01, drop_rate 0.1,
epoch 150.
Paper results (SASRec, BCE, HM): IDRec HR@10 6.84 / NDCG@10 4.01, Swin-B 7.24 / 3.98.
Defaults below: ml-100k; a GPU is advised (every batch runs the image encoder).
Weight decay differs from the original release: its BCE code decayed the encoder with `l2_weight`
(one value for both parameter groups); here the encoder group uses `fine_tune_l2_weight`. For
the original's behaviour pass `--fine_tune_l2_weight` equal to `--l2_weight`.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", loss="bce",
    cv_model_load="swin_tiny", image_size=224, image_norm="imagenet",
    freeze_paras_before=0, trainable_layers=-1,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
