"""ID + image fusion (ADD), two-stage: frozen, cached Swin-T features pass
through GELU(Linear(feature)) and mo_dnn_layers MLP layers, are fused with the ID embedding
(e = e_id + e_image), then dnn_layers MLP layers; SASRec with BCE.

Edit the values below (a list is a grid) or override any of them:
    python bce_vision/id_plus_mo-2stage/train_swin_add.py --dnn_layers 0,2,4,6
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).
Paper settings on HM (original release): swin_tiny, images 224 x 224, mo_dnn_layers 8, dnn_layers in
[2, 4, 6, 0], embedding_dim 512, batch_size 64, lr 1e-4, l2_weight 0.01, drop_rate 0.1, epoch 150.
Defaults below: ml-100k, CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", two_stage=True, fusion="add", loss="bce",
    cv_model_load="swin_tiny", image_size=224, image_norm="imagenet",
    mo_dnn_layers=8, dnn_layers=0,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
