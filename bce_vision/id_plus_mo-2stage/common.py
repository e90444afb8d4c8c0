"""The values every script of bce_vision/id_plus_mo-2stage shares: ID + image fusion, two-stage.
Frozen, cached Swin-T features pass through GELU(Linear(feature)) and mo_dnn_layers MLP layers, are
fused with the ID embedding, then pass dnn_layers MLP layers; SASRec with BCE. Each train_*.py adds
only its fusion (the block at its top). Change a value here to change it for the whole comparison,
or override any value for one run on the command line (a list, or commas `--lr 1e-3,1e-4`, is a
grid: one run per combination). tests/test_shared_blocks.py checks that the scripts of the folder
agree on every value but its fusion.

On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it once;
they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).

Paper settings on HM (original release): swin_tiny, images 224 x 224, mo_dnn_layers 8, dnn_layers
in [2, 4, 6, 0] (`--dnn_layers 0,2,4,6`), embedding_dim 512, batch_size 64, lr 1e-4, l2_weight
0.01, drop_rate 0.1, epoch 150. The values below are sized for ml-100k on a CPU.
"""
common = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", two_stage=True, loss="bce", cv_model_load="swin_tiny",
    image_size=224, image_norm="imagenet", mo_dnn_layers=8, dnn_layers=0, max_seq_len=10,
    min_seq_len=5, embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7, seed=12345,
)
