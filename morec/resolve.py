"""The Config resolved into the typed values each part of a run reads (morec.specs).

This is the one place that reads a Config for the parts below the training loop: relative paths
are made absolute, the config's rules (which modalities are cached, which values must agree for a
transfer, the ID tower's MLP of DSSM) are applied, and the modality values are checked. The
training loop, the scripts and the tests call these functions; the model factory, the item inputs,
the data identity, the memory check and the transfer take their results.
"""
from __future__ import annotations

from pathlib import Path

from morec.config import REPO_ROOT, TOWER_MODALITIES, Config, cached_modalities
from morec.errors import InputError
from morec.specs import MissRecSpec  # MISSRec
from morec.specs import (RunSpecs, Adaptation, DataSpec, EncoderSpec, ImageSpec, ItemInputSpec, LossSpec, MemorySpec, ModelSpec,
                         TowerSpec, TransferSpec)
from morec.specs import SideNetworkSpec

ENCODER_VALUES = {"text": "bert_model_load", "vision": "cv_model_load"}   # the encoder folder of a modality


def from_repo_root(path: str) -> Path:
    """`path`, relative paths taken from the repository root."""
    root = Path(path)
    return root if root.is_absolute() else REPO_ROOT / root


def data_spec(cfg: Config) -> DataSpec:
    """The dataset folder and the files of it the run reads."""
    return DataSpec(dataset=cfg.dataset, folder=cfg.data_dir(), users=cfg.behaviors, items=cfg.news,
                    image_lmdb=cfg.image_lmdb, reads_images=cfg.item_tower in ("vision", "text+vision"))


def encoder_spec(cfg: Config, modality: str) -> EncoderSpec:
    """The text or vision encoder of cfg: its folder, and what of it trains."""
    adaptation = Adaptation(cfg.peft, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.peft_layers)
    return EncoderSpec(name=getattr(cfg, ENCODER_VALUES[modality]), root=from_repo_root(cfg.pretrained_dir),
                       pooling=cfg.pooling, image_size=cfg.image_size, freeze_paras_before=cfg.freeze_paras_before,
                       trainable_layers=cfg.trainable_layers, gradient_checkpointing=cfg.gradient_checkpointing,
                       dropout=cfg.encoder_dropout, freeze_bn_stats=cfg.freeze_bn_stats, adaptation=adaptation,
                       cache_frozen_layers=cfg.cache_frozen_layers and modality == "text",
                       layer_cache_dtype=cfg.layer_cache_dtype)


def tower_spec(cfg: Config) -> TowerSpec:
    """The item tower of cfg."""
    return TowerSpec(kind=cfg.item_tower, dim=cfg.embedding_dim, drop_rate=cfg.drop_rate,
                     id_mlp_layers=cfg.dnn_layers if cfg.model == "dssm" else 0,   # DSSM: the item tower's own MLP
                     dnn_layers=cfg.dnn_layers, mo_dnn_layers=cfg.mo_dnn_layers, fusion=cfg.fusion,
                     two_stage=cfg.two_stage, cached=frozenset(cached_modalities(cfg)), ts_layers=cfg.ts_layers,
                     dedup_items=cfg.dedup_items, mm_fusion=cfg.mm_fusion,
                     text=encoder_spec(cfg, "text"), vision=encoder_spec(cfg, "vision"),
                     side=side_network_spec(cfg))


def side_network_spec(cfg: Config) -> SideNetworkSpec:
    """--side_network and its values (IISAN, morec.models.side_network)."""
    return SideNetworkSpec(kind=cfg.side_network, layers=cfg.san_layers, bottleneck=cfg.san_dim,
                           gate_init=cfg.san_gate_init)


def loss_spec(cfg: Config) -> LossSpec:
    return LossSpec(kind=cfg.loss, neg_num=cfg.neg_num, filter_false_negatives=cfg.filter_false_negatives,
                    grad_cache_chunk=cfg.inbatch_chunk, extra_negatives=cfg.extra_negatives,
                    fp32=cfg.amp_fp32_loss)


def model_spec(cfg: Config) -> ModelSpec:
    """The recommender of cfg (morec.models.build.build_model)."""
    return ModelSpec(user_encoder=cfg.model, max_seq_len=cfg.max_seq_len, blocks=cfg.transformer_block,
                     heads=cfg.num_attention_heads, dnn_layers=cfg.dnn_layers, drop_rate=cfg.drop_rate,
                     loss=loss_spec(cfg), tower=tower_spec(cfg),
                     missrec=missrec_spec(cfg))                                       # MISSRec


# --- MISSRec (morec/models/missrec.py) ---
def missrec_spec(cfg: Config) -> MissRecSpec:
    """--model missrec's own values."""
    return MissRecSpec(interests=cfg.missrec_interests, ids=cfg.missrec_ids, fusion=cfg.missrec_fusion,
                       temperature=cfg.missrec_temperature)
# --- end MISSRec ---


def memory_spec(cfg: Config, model: ModelSpec | None = None) -> MemorySpec:
    """What the memory estimate of cfg's run reads (morec.memory.check_memory); `model`: cfg's, if resolved."""
    return MemorySpec(model=model or model_spec(cfg), batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                      eval_chunk_elems=cfg.eval_chunk_elems, device=cfg.device)


def item_input_spec(cfg: Config) -> ItemInputSpec:
    """What cfg's item tower reads besides the batches (morec.features), after checking the
    modality values."""
    check_modality_config(cfg)
    modalities = TOWER_MODALITIES.get(cfg.item_tower, ())
    return ItemInputSpec(tower=tower_spec(cfg), modalities=modalities, data=data_spec(cfg),
                         cache_dir=from_repo_root(cfg.cache_dir),
                         attributes=text_attributes(cfg) if "text" in modalities else (),
                         images=image_spec(cfg), num_workers=cfg.num_workers, unescape_text=cfg.unescape_text)


def image_spec(cfg: Config) -> ImageSpec:
    """The item images of cfg's dataset (morec.features.item_images)."""
    return ImageSpec(data=data_spec(cfg), size=cfg.image_size, norm=cfg.image_norm)


def text_attributes(cfg: Config) -> tuple[tuple[str, int], ...]:
    """((attribute, tokens), ...) of the text tower: each attribute with its token width."""
    from morec.data.text import parse_attributes
    widths = {"title": cfg.num_words_title, "abstract": cfg.num_words_abstract}
    return tuple((name, widths[name]) for name in parse_attributes(cfg.news_attributes))


def check_modality_config(cfg: Config) -> None:
    """The values of the modality fields, checked before anything is loaded."""
    from morec.models.build import FUSIONS
    if cfg.fusion not in FUSIONS:
        raise InputError(f"fusion {cfg.fusion!r} is not available; choose one of {FUSIONS}")
    if cfg.item_tower == "id" and (cfg.two_stage or cfg.fusion != "none"):
        raise InputError("two_stage and fusion need a modality item tower: set --item_tower text or vision")
    for name in ("freeze_paras_before", "dnn_layers", "mo_dnn_layers"):
        if getattr(cfg, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.trainable_layers < -1:
        raise InputError(f"trainable_layers must be -1 (off) or >= 0, got {cfg.trainable_layers}")
    if "text" in TOWER_MODALITIES.get(cfg.item_tower, ()):
        from morec.data.text import parse_attributes
        parse_attributes(cfg.news_attributes)
        for name in ("num_words_title", "num_words_abstract"):
            if getattr(cfg, name) < 2:
                raise InputError(f"{name} must be at least 2 (the special tokens), got {getattr(cfg, name)}")
    if "vision" in TOWER_MODALITIES.get(cfg.item_tower, ()):
        from morec.data.images import NORMS
        if cfg.image_norm not in NORMS:
            raise InputError(f"image_norm {cfg.image_norm!r} is not available; choose one of {sorted(NORMS)}")
        if cfg.image_size < 16:
            raise InputError(f"image_size must be at least 16, got {cfg.image_size}")


def same_encoder_values(cfg: Config) -> list[str]:
    """The config values that must agree between a transfer's source and target (the encoders' identity)."""
    return (["model", "item_tower", "two_stage", "embedding_dim"]
            + (["mm_cached_branch"] if cfg.item_tower == "text+vision" else [])
            + [ENCODER_VALUES[m] for m in TOWER_MODALITIES[cfg.item_tower]]
            + (["missrec_interests"] if cfg.model == "missrec" else []))   # what its encoder was trained on


def transfer_spec(cfg: Config) -> TransferSpec:
    """--init_from of cfg: the source run folder and the values it must share (morec.transfer)."""
    defaults = Config()                     # a field newer than the source run: its default there
    agree = tuple((name, getattr(cfg, name), getattr(defaults, name)) for name in same_encoder_values(cfg))
    return TransferSpec(given=cfg.init_from, run_dir=Path(cfg.init_from).expanduser().resolve(),
                        fusion=cfg.fusion, must_agree=agree)


def run_specs(cfg: Config) -> RunSpecs:
    """Every typed value a run's setup needs, from one Config (train.train_in_folder, test_in_folder)."""
    model = model_spec(cfg)
    return RunSpecs(data=data_spec(cfg), model=model, memory=memory_spec(cfg, model),
                    item_inputs=item_input_spec(cfg), transfer=transfer_spec(cfg))
