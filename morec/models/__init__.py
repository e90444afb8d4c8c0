"""Models know tensors only: item towers, user encoders and the recommenders built from them."""
from __future__ import annotations

from pathlib import Path

import torch

from morec.config import REPO_ROOT, Config, cached_modalities
from morec.errors import InputError
from morec.models.recommender import (SEQUENCE_MODELS, DSSMRecommender, Recommender, SASRecRecommender,
                                      SequentialRecommender)
from morec.models.towers import FeatureTower, FusionTower, IdTower, ItemTower, LayerMixFeatureTower

ITEM_TOWERS = ("id", "text", "vision", "text+vision")
MODELS = SEQUENCE_MODELS + ("dssm",)
FUSIONS = ("none", "add", "cat")


def pretrained_path(cfg: Config) -> Path:
    """Folder of the pretrained encoders (cfg.pretrained_dir; relative to the repository root)."""
    root = Path(cfg.pretrained_dir)
    return root if root.is_absolute() else REPO_ROOT / root


def build_modality_tower(cfg: Config, item_inputs: dict) -> ItemTower:
    """The text, vision or text+vision tower end to end, or the two-stage head over cached features."""
    if cfg.item_tower == "text+vision":
        return build_multimodal_tower(cfg, item_inputs)
    if cfg.two_stage:
        return feature_head(cfg, item_inputs["features"], cfg.ts_layers)
    tower = build_encoder_tower(cfg, item_inputs)
    tower.deduplicate = cfg.dedup_items         # False: every slot of a batch encoded (own dropout mask)
    return tower


def feature_head(cfg: Config, features, ts_layers: str = "last") -> FeatureTower:
    """The two-stage head over cached features (N+1, F), or (N+1, J, F) mixed when ts_layers is all."""
    layers = cfg.mo_dnn_layers if cfg.fusion != "none" else cfg.dnn_layers
    head = LayerMixFeatureTower if ts_layers == "all" else FeatureTower
    return head(features, cfg.embedding_dim, layers, cfg.drop_rate)


def build_multimodal_tower(cfg: Config, item_inputs: dict) -> ItemTower:
    """item_tower "text+vision": a text and a vision branch fused by cfg.mm_fusion
    (morec.models.multimodal). A branch is today's tower end to end (frozen by trainable_layers /
    freeze_paras_before), or the two-stage head over its cached features: both with --two_stage,
    one with --mm_cached_branch text|vision."""
    from morec.models.multimodal import MultiModalTower
    cached = cached_modalities(cfg)
    branches = {}
    for modality, features in (("text", "features"), ("vision", "vision_features")):
        if modality in cached:
            branches[modality] = feature_head(cfg, item_inputs[features], cfg.ts_layers if modality == "text" else "last")
        else:
            branches[modality] = build_encoder_tower(cfg, item_inputs, modality)
            branches[modality].deduplicate = cfg.dedup_items
    return MultiModalTower(branches["text"], branches["vision"], cfg.mm_fusion, cfg.embedding_dim, cfg.drop_rate)


def build_encoder_tower(cfg: Config, item_inputs: dict, modality: str = "") -> ItemTower:
    """The text or vision tower (`modality`, default cfg.item_tower) trained end to end (a
    pretrained encoder + projection)."""
    if (modality or cfg.item_tower) == "vision":
        from morec.models.vision import VisionTower, check_image_size, load_vision_encoder
        encoder, kind = load_vision_encoder(cfg.cv_model_load, pretrained_path(cfg))
        check_image_size(encoder, kind, cfg.image_size)
        return VisionTower(encoder, kind, cfg.embedding_dim, cfg.freeze_paras_before,
                           cfg.trainable_layers, cfg.gradient_checkpointing)
    from morec.models.adapters import Adaptation
    from morec.models.text import TextTower, load_text_encoder, resolve_encoder_dir
    encoder = load_text_encoder(resolve_encoder_dir(cfg.bert_model_load, pretrained_path(cfg)))
    return TextTower(encoder, item_inputs["tokens"], cfg.embedding_dim, cfg.freeze_paras_before,
                     cfg.trainable_layers, cfg.gradient_checkpointing, cfg.pooling, Adaptation.of(cfg))


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
    if cfg.item_tower in ("text", "vision", "text+vision"):
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
    tower.grad_cache_chunk = cfg.inbatch_chunk                  # 0: off (gradient caching, issue 13.4)
    if cfg.model in SEQUENCE_MODELS:
        model = SequentialRecommender(tower, num_items, cfg.loss, popularity, cfg.max_seq_len,
                                      cfg.transformer_block, cfg.num_attention_heads, cfg.drop_rate, cfg.model)
    elif cfg.model == "dssm":
        model = DSSMRecommender(tower, num_items, cfg.loss, popularity, num_users,
                                cfg.dnn_layers, cfg.drop_rate)
    else:
        raise InputError(f"model {cfg.model!r} is not available; choose one of {MODELS}")
    model.filter_false_negatives = cfg.filter_false_negatives
    return model


__all__ = ["build_model", "build_item_tower", "Recommender", "SequentialRecommender", "SASRecRecommender",
           "DSSMRecommender", "IdTower", "ItemTower", "FeatureTower", "LayerMixFeatureTower", "FusionTower",
           "pretrained_path"]
