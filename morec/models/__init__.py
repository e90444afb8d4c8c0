"""Models know tensors only: item towers, user encoders and the recommenders built from them."""
from __future__ import annotations

from pathlib import Path

import torch

from morec.config import REPO_ROOT, Config
from morec.errors import InputError
from morec.models.recommender import DSSMRecommender, Recommender, SASRecRecommender
from morec.models.towers import FeatureTower, FusionTower, IdTower, ItemTower, LayerMixFeatureTower

ITEM_TOWERS = ("id", "text", "vision")
MODELS = ("sasrec", "dssm")
FUSIONS = ("none", "add", "cat")


def pretrained_path(cfg: Config) -> Path:
    """Folder of the pretrained encoders (cfg.pretrained_dir; relative to the repository root)."""
    root = Path(cfg.pretrained_dir)
    return root if root.is_absolute() else REPO_ROOT / root


def build_modality_tower(cfg: Config, item_inputs: dict) -> ItemTower:
    """The text or vision tower end to end, or the two-stage head over cached features."""
    if cfg.two_stage:
        layers = cfg.mo_dnn_layers if cfg.fusion != "none" else cfg.dnn_layers
        head = LayerMixFeatureTower if cfg.ts_layers == "all" else FeatureTower
        return head(item_inputs["features"], cfg.embedding_dim, layers, cfg.drop_rate)
    tower = build_encoder_tower(cfg, item_inputs)
    tower.deduplicate = cfg.dedup_items         # False: every slot of a batch encoded (own dropout mask)
    return tower


def build_encoder_tower(cfg: Config, item_inputs: dict) -> ItemTower:
    """The text or vision tower trained end to end (a pretrained encoder + projection)."""
    if cfg.item_tower == "vision":
        from morec.models.vision import VisionTower, check_image_size, load_vision_encoder
        encoder, kind = load_vision_encoder(cfg.cv_model_load, pretrained_path(cfg))
        check_image_size(encoder, kind, cfg.image_size)
        return VisionTower(encoder, kind, cfg.embedding_dim, cfg.freeze_paras_before,
                           cfg.trainable_layers, cfg.gradient_checkpointing)
    from morec.models.text import TextTower, load_text_encoder, resolve_encoder_dir
    encoder = load_text_encoder(resolve_encoder_dir(cfg.bert_model_load, pretrained_path(cfg)))
    return TextTower(encoder, item_inputs["tokens"], cfg.embedding_dim, cfg.freeze_paras_before,
                     cfg.trainable_layers, cfg.gradient_checkpointing)


def build_item_tower(cfg: Config, num_items: int, item_inputs: dict | None = None) -> ItemTower:
    """`item_inputs`: {} for IDs and vision end to end (the batches bring pixels); {"tokens":
    [(ids, mask) per attribute]} for text end to end; {"features": (N+1, F) tensor} for two-stage
    (see morec.features.item_tower_inputs)."""
    if cfg.fusion not in FUSIONS:
        raise InputError(f"fusion {cfg.fusion!r} is not available; choose one of {FUSIONS}")
    if cfg.item_tower == "id":
        if cfg.two_stage or cfg.fusion != "none":
            raise InputError("two_stage and fusion need a modality item tower: set --item_tower text or vision")
        mlp_layers = cfg.dnn_layers if cfg.model == "dssm" else 0   # DSSM: the item tower's own MLP
        return IdTower(num_items, cfg.embedding_dim, mlp_layers, cfg.drop_rate)
    if cfg.item_tower in ("text", "vision"):
        modality = build_modality_tower(cfg, item_inputs or {})
        if cfg.fusion == "none":
            return modality
        id_tower = IdTower(num_items, cfg.embedding_dim)
        return FusionTower(id_tower, modality, cfg.fusion, cfg.dnn_layers if cfg.two_stage else 0,
                           cfg.drop_rate)
    raise InputError(f"item_tower {cfg.item_tower!r} is not available; choose one of {ITEM_TOWERS}")


def build_model(cfg: Config, num_items: int, num_users: int, popularity: torch.Tensor,
                item_inputs: dict | None = None) -> Recommender:
    """The recommender of a run; `popularity` (N+1,) feeds the in-batch loss correction;
    `item_inputs` holds what a modality tower needs (tokens or cached features)."""
    tower = build_item_tower(cfg, num_items, item_inputs)
    if cfg.model == "sasrec":
        return SASRecRecommender(tower, num_items, cfg.loss, popularity, cfg.max_seq_len,
                                 cfg.transformer_block, cfg.num_attention_heads, cfg.drop_rate)
    if cfg.model == "dssm":
        return DSSMRecommender(tower, num_items, cfg.loss, popularity, num_users,
                               cfg.dnn_layers, cfg.drop_rate)
    raise InputError(f"model {cfg.model!r} is not available; choose one of {MODELS}")


__all__ = ["build_model", "build_item_tower", "Recommender", "SASRecRecommender",
           "DSSMRecommender", "IdTower", "ItemTower", "FeatureTower", "LayerMixFeatureTower", "FusionTower",
           "pretrained_path"]
