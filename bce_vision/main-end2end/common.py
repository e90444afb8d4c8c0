"""The values every script of bce_vision/main-end2end shares: SASRec trained end to end with BCE and
sampled negatives (the paper's main setting) on the image data protocol (max_seq_len 10), the item
tower being an ID table (train_id.py) or an image encoder whose head is replaced by
GELU(Linear(feature, d)) (every other script). Each train_*.py adds only its item tower (the block
at its top). Change a value here to change it for the whole comparison, or override any value for
one run on the command line (a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per
combination). tests/test_shared_blocks.py checks that the scripts of the folder agree on every
value but its item tower.

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM (original release: hm_50w_users.tsv, hm_50w_items.tsv, hm_50w_items.lmdb):
max_seq_len 10, drop_rate 0.1, epoch 150. IDRec (the original's
bce_vision/main-end2end/train_id.py): batch_size 128, lr in [1e-4, 5e-5, 1e-3, 5e-4], embedding_dim
in [512, 1024, 2048, 4096], l2_weight 0.1. Vision MoRec: images 224 x 224, freeze_paras_before 0,
embedding_dim 512, batch_size 16 per GPU x 4, (lr, fine_tune_lr) in [(1e-4, 1e-4), (5e-5, 5e-5),
(1e-4, 5e-5)], l2_weight 0.01. Paper results (SASRec, BCE, HM): IDRec HR@10 6.84 / NDCG@10 4.01,
Swin-B 7.24 / 3.98. Weight decay differs from the original release: its BCE code decayed the
encoder with `l2_weight` (one value for both parameter groups); here the encoder group uses
`fine_tune_l2_weight`. For the original's behaviour pass `--fine_tune_l2_weight` equal to
`--l2_weight`.

The values below are sized for ml-100k; for the image encoders a GPU is advised (every batch runs
the encoder; `--num_workers 4` decodes images in parallel). The encoders are read offline from
pretrained_models/NAME/ (pretrained_models/README.md).
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=10, min_seq_len=5,
    image_lmdb="posters.lmdb", image_size=224, image_norm="imagenet",   # images (the ID tower reads none)
    model="sasrec", loss="bce", embedding_dim=64, transformer_block=2, num_attention_heads=2,
    drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7, seed=12345,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
