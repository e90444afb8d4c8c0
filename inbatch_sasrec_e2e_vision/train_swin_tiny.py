"""Vision MoRec trained with the in-batch debiased softmax loss: SASRec whose item tower is
Swin-T (HF microsoft/swin-tiny-patch4-window7-224, pretrained_models/swin_tiny/), fine-tuned end to end (the paper's follow-up setting).

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_vision/train_swin_tiny.py --epoch 3 [--cv_model_load NAME] [--num_workers 4]
On ml-100k the images are the generated posters of dataset/ml-100k/render_posters.py (run it
once; they are not real posters: README_posters.md). Switch to HM with
    --dataset HM --behaviors hm_50w_users.tsv --news hm_50w_items.tsv --image_lmdb hm_50w_images.lmdb
(dataset/HM/README.md).
Paper settings on HM: max_seq_len 10, images 224 x 224, embedding_dim 512, freeze_paras_before 0.
Paper results (SASRec, in-batch debiased, HM): IDRec HR@10 11.94 / NDCG@10 7.75, ResNet50
11.90 / 7.46, Swin-B 12.26 / 7.70.
Defaults below: ml-100k; a GPU is advised.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main

params = dict(
    dataset="ml-100k", behaviors="users.tsv", news="items.tsv", image_lmdb="posters.lmdb",
    model="sasrec", item_tower="vision", loss="inbatch",
    cv_model_load="swin_tiny", image_size=224, image_norm="imagenet",
    freeze_paras_before=0, trainable_layers=-1,
    max_seq_len=10, min_seq_len=5,
    embedding_dim=64, transformer_block=2, num_attention_heads=2, drop_rate=0.1,
    batch_size=64, lr=1e-3, l2_weight=0.1, fine_tune_lr=1e-4, fine_tune_l2_weight=0.01,
    epoch=100, patience=7,
    seed=12345,
)

if __name__ == "__main__":
    main(params, "train", __file__)
