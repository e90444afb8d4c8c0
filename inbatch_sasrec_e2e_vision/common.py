"""The values every script of inbatch_sasrec_e2e_vision shares: SASRec with the in-batch debiased
softmax loss (log-popularity correction) on the image data protocol (max_seq_len 10), the item
tower being an ID table (train_id.py) or an image encoder fine-tuned end to end (the paper's
follow-up setting). Each train_*.py adds only its item tower (the block at its top). Change a value
here to change it for the whole comparison, or override any value for one run on the command line
(a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per combination).
tests/test_shared_blocks.py checks that the scripts of the folder agree on every value but its item
tower.

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM: max_seq_len 10, images 224 x 224, embedding_dim 512, freeze_paras_before 0.
Paper results (SASRec, in-batch debiased, HM): IDRec HR@10 11.94 / NDCG@10 7.75, ResNet50 11.90 /
7.46, Swin-B 12.26 / 7.70. The values below are sized for ml-100k; for the image encoders a GPU is
advised (`--num_workers 4` decodes images in parallel).
"""
common = dict(
    loss="inbatch",                                 # the in-batch debiased softmax (morec/losses.py)
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", max_seq_len=10, min_seq_len=5,
    image_lmdb="posters.lmdb", image_size=224, image_norm="imagenet",   # images (the ID tower reads none)
    model="sasrec", embedding_dim=64, transformer_block=2, num_attention_heads=2,
    drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7, seed=12345,
    freeze_paras_before=0, trainable_layers=-1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
)
