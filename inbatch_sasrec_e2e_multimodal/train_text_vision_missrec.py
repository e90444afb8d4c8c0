"""MISSRec (Wang et al., ACM MM 2023) on titles and posters, without pre-training: all-MiniLM-L6-v2
and ResNet50 are frozen and each item's two features cached once (two-stage); the user encoder
clusters a history's text and image tokens into interest tokens (encoder) and relates the item
tokens to them (decoder); candidates are scored with user-adaptive weights of their text and image
parts (docs/missrec.md, morec/models/missrec.py). The one script of this folder whose user
encoder is not SASRec: MISSRec is a whole system, compared as such.

Edit the values below (a list is a grid) or override any of them:
    python inbatch_sasrec_e2e_multimodal/train_text_vision_missrec.py --missrec_ids false,true
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    model="missrec", item_tower="text+vision", two_stage=True,
)

if __name__ == "__main__":
    main(params, "train", __file__)
