"""The values every script of bce_vision/main-2stage shares: two-stage (TS) vision MoRec. The image
encoder is frozen, the feature of every item is extracted once and cached (cache/features/,
memory-mapped), and SASRec trains with BCE on GELU(Linear(feature)) followed by dnn_layers = 8 x
[Dropout, Linear, GELU]. Each train_*.py adds only its image encoder (the block at its top). Change
a value here to change it for the whole comparison, or override any value for one run on the
command line (a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per combination).
tests/test_shared_blocks.py checks that the scripts of the folder agree on every value but its
image encoder. Features can be extracted ahead (e.g. on a GPU node):
    python scripts/extract_features.py --item_tower vision --cv_model_load NAME --image_lmdb posters.lmdb

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM (original release): images 224 x 224, dnn_layers 8 (swept 0-12: `--dnn_layers
0,2,4,6,8,10,12`), embedding_dim 512, batch_size 512, lr 1e-4, l2_weight 0.01, drop_rate 0.1, epoch
150. The values below are sized for ml-100k on a CPU.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", two_stage=True, loss="bce", dnn_layers=8,
    image_size=224, image_norm="imagenet", max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=11, seed=12345,
)
