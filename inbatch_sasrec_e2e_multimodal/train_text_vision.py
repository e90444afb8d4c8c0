"""Multi-modal MoRec (issue 16): SASRec whose item tower encodes each item's title with
all-MiniLM-L6-v2 AND its poster with ResNet50 (each with its top 2 blocks / stages fine-tuned)
and fuses the two vectors (--mm_fusion, morec/models/multimodal.py):
    sum     e = e_text + e_image
    concat  e = GELU(Linear(Dropout([e_text; e_image])))
    gate    e = g * e_text + (1 - g) * e_image,  g = sigmoid(W [e_text; e_image] + b) per dimension
The text encoder trains with fine_tune_lr, the vision encoder with cv_fine_tune_lr (-1: the same).
Add the ID vector on top with --fusion add|cat.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_text_vision.py --mm_fusion sum,concat,gate --epoch 3
On ml-100k the posters are generated (dataset/ml-100k/render_posters.py; README_posters.md).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="text+vision", loss="inbatch", mm_fusion="gate",
    bert_model_load="all_minilm_l6_v2", news_attributes="title", num_words_title=30,
    cv_model_load="resnet50", image_size=224, image_norm="imagenet",
    freeze_paras_before=0, trainable_layers=2,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    fine_tune_lr=1e-4, cv_fine_tune_lr=-1.0, fine_tune_l2_weight=0.01,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
