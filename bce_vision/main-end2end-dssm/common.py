"""The values every script of bce_vision/main-end2end-dssm shares: DSSM (a user-ID MLP tower against
an item tower) with BCE and sampled negatives on the image data protocol (max_seq_len 10); the item
tower is an ID embedding + MLP (train_id.py) or an image encoder trained end to end. Each
train_*.py adds only its item tower (the block at its top). Change a value here to change it for
the whole comparison, or override any value for one run on the command line (a list, or commas
`--lr 1e-3,1e-4`, is a grid: one run per combination). tests/test_shared_blocks.py checks that the
scripts of the folder agree on every value but its item tower.

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM (original release): images 224 x 224, embedding_dim 512, dnn_layers 0,
batch_size 256 per GPU x 2, lr 1e-4, fine_tune_lr 1e-4, l2_weight 0.01, drop_rate 0.1, epoch 150,
freeze_paras_before 0. The paper finds DSSM MoRec far behind SASRec MoRec. The values below are
sized for ml-100k. Weight decay differs from the original release: its BCE code decayed the encoder
with `l2_weight` (one value for both parameter groups); here the encoder group uses
`fine_tune_l2_weight`. For the original's behaviour pass `--fine_tune_l2_weight` equal to
`--l2_weight`.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=10, min_seq_len=5,
    image_lmdb="posters.lmdb", image_size=224, image_norm="imagenet",   # images (the ID tower reads none)
    model="dssm", loss="bce", neg_num=1, embedding_dim=64, dnn_layers=2, drop_rate=0.1,
    batch_size=256, lr=1e-3, l2_weight=0.1, epoch=100, patience=6, seed=12345,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
