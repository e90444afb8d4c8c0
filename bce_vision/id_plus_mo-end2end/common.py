"""The values every script of bce_vision/id_plus_mo-end2end shares: ID + image fusion trained end to
end, each item being its ID embedding fused with the vector of Swin-T (HF
microsoft/swin-tiny-patch4-window7-224, pretrained_models/swin_tiny/); SASRec with BCE and sampled
negatives. Each train_*.py adds only its fusion (the block at its top). Change a value here to
change it for the whole comparison, or override any value for one run on the command line (a list,
or commas `--lr 1e-3,1e-4`, is a grid: one run per combination). tests/test_shared_blocks.py checks
that the scripts of the folder agree on every value but its fusion.

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM (original release: hm_50w_users.tsv, hm_50w_items.tsv, hm_50w_items.lmdb):
max_seq_len 10, images 224 x 224, freeze_paras_before 0, embedding_dim 512, batch_size 16 per GPU x
4, (lr, fine_tune_lr) in [(1e-4, 1e-4), (5e-5, 5e-5), (1e-4, 5e-5)], l2_weight 0.01, drop_rate 0.1,
epoch 150. The paper finds that adding the ID embedding does not beat the image encoder alone. The
values below are sized for ml-100k; `--cv_model_load NAME` picks another encoder. Weight decay
differs from the original release: its BCE code decayed the encoder with `l2_weight` (one value for
both parameter groups); here the encoder group uses `fine_tune_l2_weight`. For the original's
behaviour pass `--fine_tune_l2_weight` equal to `--l2_weight`.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", loss="bce", cv_model_load="swin_tiny", image_size=224,
    image_norm="imagenet", freeze_paras_before=0, trainable_layers=-1, max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1, batch_size=64,
    lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01, epoch=100, patience=7,
    seed=12345,
)
