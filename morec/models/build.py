"""The model factory: the recommender of a run from its typed values (morec.specs), built by
morec.resolve from the Config at the top; nothing here reads the Config."""
from __future__ import annotations

import torch

from morec.errors import InputError
from morec.models.recommender import SEQUENCE_MODELS, DSSMRecommender, Recommender, SequentialRecommender
from morec.models.towers import (FeatureTower, FusionTower, IdTower, ItemTower, LayerMixFeatureTower,
                                 refuse_batch_statistics)
from morec.specs import ModelSpec, TowerSpec

ITEM_TOWERS = ("id", "text", "vision", "text+vision")
MODELS = SEQUENCE_MODELS + ("dssm",)
MODELS += ("missrec",)                                    # MISSRec (morec/models/missrec.py)
FUSIONS = ("none", "add", "cat")


def build_modality_tower(spec: TowerSpec, item_inputs: dict) -> ItemTower:
    """The text, vision or text+vision tower end to end, or the two-stage head over cached features."""
    if spec.side.kind == "iisan":                                   # side adapter networks over cached layers
        return build_side_network_tower(spec, item_inputs)
    if spec.kind == "text+vision":
        return build_multimodal_tower(spec, item_inputs)
    if spec.two_stage:
        return feature_head(spec, item_inputs["features"], spec.ts_layers)
    tower = build_encoder_tower(spec, item_inputs)
    tower.deduplicate = spec.dedup_items        # False: every slot of a batch encoded (own dropout mask)
    return tower


def feature_head(spec: TowerSpec, features, ts_layers: str = "last") -> FeatureTower:
    """The two-stage head over cached features (N+1, F), or (N+1, J, F) mixed when ts_layers is all."""
    layers = spec.mo_dnn_layers if spec.fusion != "none" else spec.dnn_layers
    head = LayerMixFeatureTower if ts_layers == "all" else FeatureTower
    return head(features, spec.dim, layers, spec.drop_rate)


def build_side_network_tower(spec: TowerSpec, item_inputs: dict) -> ItemTower:
    """--side_network iisan (morec.models.side_network): the intra-modal SAN of the tower's one
    modality over its all-layer cache "features" (N+1, J, H), or for text+vision the text and
    vision SANs and the inter-modal SAN over "features" and "vision_features" (N+1, J', H')."""
    from morec.models.side_network import SideNetworkMultiModalTower, SideNetworkTower
    side = spec.side
    layers = spec.mo_dnn_layers if spec.fusion != "none" else spec.dnn_layers
    san = dict(san_layers=side.layers, bottleneck=side.bottleneck, gate_init=side.gate_init)
    if spec.kind == "text+vision":
        return SideNetworkMultiModalTower(item_inputs["features"], item_inputs["vision_features"], spec.dim, layers,
                                          spec.drop_rate, **san)
    return SideNetworkTower(item_inputs["features"], spec.dim, layers, spec.drop_rate, **san)


def build_multimodal_tower(spec: TowerSpec, item_inputs: dict) -> ItemTower:
    """item_tower "text+vision": a text and a vision branch fused by spec.mm_fusion
    (morec.models.multimodal). A branch is today's tower end to end (frozen by trainable_layers /
    freeze_paras_before), or the two-stage head over its cached features: both with --two_stage,
    one with --mm_cached_branch text|vision (spec.cached)."""
    from morec.models.multimodal import MultiModalTower
    branches = {}
    for modality, features in (("text", "features"), ("vision", "vision_features")):
        if modality in spec.cached:
            layers = spec.ts_layers if modality == "text" else "last"
            branches[modality] = feature_head(spec, item_inputs[features], layers)
        else:
            branches[modality] = build_encoder_tower(spec, item_inputs, modality)
            branches[modality].deduplicate = spec.dedup_items
    return MultiModalTower(branches["text"], branches["vision"], spec.mm_fusion, spec.dim, spec.drop_rate)


def build_encoder_tower(spec: TowerSpec, item_inputs: dict, modality: str = "") -> ItemTower:
    """The text or vision tower (`modality`, default spec.kind) trained end to end (a
    pretrained encoder + projection)."""
    if (modality or spec.kind) == "vision":
        from morec.models.vision import VisionTower, check_image_size, load_vision_encoder
        vision = spec.vision
        encoder, kind = load_vision_encoder(vision.name, vision.root)
        check_image_size(encoder, kind, vision.image_size)
        return VisionTower(encoder, kind, spec.dim, vision.freeze_paras_before,
                           vision.trainable_layers, vision.gradient_checkpointing, vision.freeze_bn_stats)
    from morec.models.text import TextTower, load_text_encoder, resolve_encoder_dir
    text = spec.text
    encoder = load_text_encoder(resolve_encoder_dir(text.name, text.root), text.dropout)
    options = dict(freeze_paras_before=text.freeze_paras_before, trainable_layers=text.trainable_layers,
                   gradient_checkpointing=text.gradient_checkpointing, pooling=text.pooling,
                   adaptation=text.adaptation)
    if text.cache_frozen_layers:           # the frozen blocks' output read from the layer cache
        from morec.models.cached_text import CachedTextTower
        return CachedTextTower(encoder, item_inputs["tokens"], item_inputs["layer_states"], text.top_blocks,
                               spec.dim, **options)
    return TextTower(encoder, item_inputs["tokens"], spec.dim, **options)


def build_item_tower(spec: TowerSpec, num_items: int, item_inputs: dict | None = None) -> ItemTower:
    """`item_inputs`: {} for IDs and vision end to end (the batches bring pixels); {"tokens":
    [(ids, mask) per attribute]} for text end to end; {"features": (N+1, F) tensor} for two-stage
    (see morec.features.item_tower_inputs)."""
    if spec.fusion not in FUSIONS:
        raise InputError(f"fusion {spec.fusion!r} is not available; choose one of {FUSIONS}")
    if spec.kind == "id":
        if spec.two_stage or spec.fusion != "none":
            raise InputError("two_stage and fusion need a modality item tower: set --item_tower text or vision")
        return IdTower(num_items, spec.dim, spec.id_mlp_layers, spec.drop_rate)
    if spec.kind in ("text", "vision", "text+vision"):
        modality = build_modality_tower(spec, item_inputs or {})
        if spec.fusion == "none":
            return modality
        id_tower = IdTower(num_items, spec.dim)
        return FusionTower(id_tower, modality, spec.fusion, spec.dnn_layers if spec.two_stage else 0,
                           spec.drop_rate)
    raise InputError(f"item_tower {spec.kind!r} is not available; choose one of {ITEM_TOWERS}")


def build_model(spec: ModelSpec, num_items: int, num_users: int, popularity: torch.Tensor,
                item_inputs: dict | None = None) -> Recommender:
    """The recommender of a run; `popularity` (N+1,) feeds the in-batch loss correction;
    `item_inputs` holds what a modality tower needs (tokens or cached features)."""
    # --- MISSRec: its own item parts and user encoder (morec/models/missrec.py) ---
    if spec.user_encoder == "missrec":
        from morec.models.missrec import build_missrec
        model = build_missrec(spec, num_items, popularity, item_inputs)
        model.item_tower.grad_cache_chunk = spec.loss.grad_cache_chunk
        model.filter_false_negatives, model.fp32_loss = spec.loss.filter_false_negatives, spec.loss.fp32
        return model
    # --- end MISSRec ---
    tower = build_item_tower(spec.tower, num_items, item_inputs)
    tower.grad_cache_chunk = spec.loss.grad_cache_chunk       # 0: off (in-batch gradient caching)
    if tower.grad_cache_chunk > 0:
        refuse_batch_statistics(tower)                        # BatchNorm in train mode: not exact
    loss = spec.loss.kind
    if spec.user_encoder in SEQUENCE_MODELS:
        model = SequentialRecommender(tower, num_items, loss, popularity, spec.max_seq_len, spec.blocks,
                                      spec.heads, spec.drop_rate, spec.user_encoder)
    elif spec.user_encoder == "dssm":
        model = DSSMRecommender(tower, num_items, loss, popularity, num_users, spec.dnn_layers, spec.drop_rate)
    else:
        raise InputError(f"model {spec.user_encoder!r} is not available; choose one of {MODELS}")
    model.filter_false_negatives, model.fp32_loss = spec.loss.filter_false_negatives, spec.loss.fp32
    return model
