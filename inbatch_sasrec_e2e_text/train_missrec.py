"""MISSRec (Wang et al., ACM MM 2023) on the titles, without pre-training: all-MiniLM-L6-v2 is frozen
and each item's feature cached once (two-stage); the user encoder clusters a history's item tokens
into interest tokens, reads them with a Transformer encoder and relates the item tokens to them
with a decoder; candidates are scored with user-adaptive weights of their parts (docs/missrec.md,
morec/models/missrec.py, where it differs from the paper's code). The one script of this folder
whose user encoder is not SASRec: MISSRec is a whole system, compared as such.

Edit the values below (a list is a grid: one run per combination) or override any of them:
    python inbatch_sasrec_e2e_text/train_missrec.py --missrec_interests 2,4 --missrec_ids false,true
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main, shared_block

params = dict(
    shared_block(__file__),             # common.py: the values every script here shares
    model="missrec", item_tower="text", two_stage=True, bert_model_load="all_minilm_l6_v2",
)

if __name__ == "__main__":
    main(params, "train", __file__)
