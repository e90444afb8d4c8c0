"""Two-stage (TS) vision MoRec: ResNet50 (torchvision, pretrained_models/resnet50/) is frozen, the pooled 2048-d vector of every item is
extracted once and cached (cache/features/, memory-mapped), and SASRec trains on
GELU(Linear(feature)) followed by dnn_layers = 8 x [Dropout, Linear, GELU], with BCE.

Edit the values below (a list is a grid) or override any of them:
    python bce_vision/main-2stage/train_resnet50_dnn8.py --dnn_layers 0,2,4,6,8,10,12
Features can be extracted ahead (e.g. on a GPU node):
    python scripts/extract_features.py --item_tower vision --cv_model_load resnet50 --image_lmdb posters.lmdb
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).
Paper settings on HM (original release): images 224 x 224, dnn_layers 8 (swept 0-12),
embedding_dim 512, batch_size 512, lr 1e-4, l2_weight 0.01, drop_rate 0.1, epoch 150.
Defaults below: ml-100k, CPU.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", two_stage=True, loss="bce",
    cv_model_load="resnet50", image_size=224, image_norm="imagenet",
    dnn_layers=8,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=11,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
