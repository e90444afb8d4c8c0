"""Multi-modal MoRec, two-stage (issue 16): the text and the vision encoder are frozen and run
once, before training: each item's title features (all-MiniLM-L6-v2) and poster features
(ResNet50, global-average pooled) are cached; in training a head over each branch's features
(GELU(Linear) + dnn_layers) gives e_text and e_image, fused by --mm_fusion (sum, concat, gate;
morec/models/multimodal.py). The encoders never run in training: a CPU-sized multi-modal run.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_text_vision_2stage.py --mm_fusion sum,concat,gate
On ml-100k the posters are generated (dataset/ml-100k/render_posters.py; README_posters.md).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="text+vision", two_stage=True, loss="inbatch", mm_fusion="gate",
    bert_model_load="all_minilm_l6_v2", news_attributes="title", num_words_title=30,
    cv_model_load="resnet50", image_size=224, image_norm="imagenet",
    dnn_layers=2,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
