"""Models know tensors only: item towers, user encoders and the recommenders built from them."""
from __future__ import annotations

import torch

from morec.config import Config
from morec.errors import InputError
from morec.models.recommender import DSSMRecommender, Recommender, SASRecRecommender
from morec.models.towers import IdTower, ItemTower

ITEM_TOWERS = ("id",)
MODELS = ("sasrec", "dssm")


def build_item_tower(cfg: Config, num_items: int) -> ItemTower:
    if cfg.item_tower == "id":
        mlp_layers = cfg.dnn_layers if cfg.model == "dssm" else 0   # DSSM: the item tower's own MLP
        return IdTower(num_items, cfg.embedding_dim, mlp_layers, cfg.drop_rate)
    raise InputError(f"item_tower {cfg.item_tower!r} is not available; choose one of {ITEM_TOWERS}")


def build_model(cfg: Config, num_items: int, num_users: int, popularity: torch.Tensor) -> Recommender:
    """The recommender of a run; `popularity` (N+1,) feeds the in-batch loss correction."""
    tower = build_item_tower(cfg, num_items)
    if cfg.model == "sasrec":
        return SASRecRecommender(tower, num_items, cfg.loss, popularity, cfg.max_seq_len,
                                 cfg.transformer_block, cfg.num_attention_heads, cfg.drop_rate)
    if cfg.model == "dssm":
        return DSSMRecommender(tower, num_items, cfg.loss, popularity, num_users,
                               cfg.dnn_layers, cfg.drop_rate)
    raise InputError(f"model {cfg.model!r} is not available; choose one of {MODELS}")


__all__ = ["build_model", "build_item_tower", "Recommender", "SASRecRecommender",
           "DSSMRecommender", "IdTower", "ItemTower"]
