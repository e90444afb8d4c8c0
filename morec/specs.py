"""The typed values each part of a run reads, instead of the whole Config.

`morec.resolve` builds them from a Config at the top (the training loop, the scripts, the
tests); the parts below take them:
    morec.models.build    ModelSpec (TowerSpec, EncoderSpec, Adaptation, LossSpec): the factory
    morec.features        ItemInputSpec, ImageSpec: tokens, cached features, item images
    morec.data.identity   DataSpec: the files that identify a run's data
    morec.memory          MemorySpec: the memory estimate
    morec.transfer        TransferSpec: --init_from

This module imports nothing from morec, so `morec.models` and `morec.data` can use these types
without importing the Config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataSpec:
    """Where a run's data lies: the dataset folder and the files in it that the run reads."""
    dataset: str            # the dataset's folder name (also names its caches)
    folder: Path            # the dataset folder (root_data_dir / dataset)
    users: str              # users tsv in `folder` (Config.behaviors)
    items: str              # items tsv in `folder` (Config.news)
    image_lmdb: str         # image LMDB in `folder`
    reads_images: bool      # the item tower reads the LMDB's pixels (vision, text+vision)

    @property
    def users_file(self) -> Path:
        return self.folder / self.users

    @property
    def items_file(self) -> Path:
        return self.folder / self.items

    @property
    def lmdb_file(self) -> Path:
        return self.folder / self.image_lmdb


@dataclass(frozen=True)
class Adaptation:
    """How the encoder is fine-tuned (Config fields peft, lora_r, lora_alpha, lora_dropout,
    lora_targets; see morec.models.adapters)."""
    mode: str = "none"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: str = ""
    layers: int = -1                   # adapt only the top k transformer blocks (-1: all)

    def target_list(self) -> list[str] | None:
        names = [name.strip() for name in self.targets.split(",") if name.strip()]
        return names or None


@dataclass(frozen=True)
class EncoderSpec:
    """One pretrained encoder: the folder it is loaded from and how much of it trains."""
    name: str                          # folder name under `root` (bert_model_load / cv_model_load)
    root: Path                         # the pretrained encoders' folder (pretrained_dir, resolved)
    pooling: str = "auto"              # text: auto | cls | mean | last
    image_size: int = 224              # vision: the side of the input images
    freeze_paras_before: int = 0       # freeze the first k parameter tensors
    trainable_layers: int = -1         # only the top n blocks train (-1: off)
    gradient_checkpointing: bool = False
    dropout: float = -1.0              # text: every dropout probability of the HF config (-1: the config's)
    freeze_bn_stats: bool = False      # vision: BatchNorm uses its running statistics, never updated
    adaptation: Adaptation = Adaptation()   # text: parameter-efficient fine-tuning
    cache_frozen_layers: bool = False  # text: the frozen blocks' output read from the layer cache (morec.layer_cache)
    layer_cache_dtype: str = "float16"  # text: float16 | bfloat16 | float32, the cached states' dtype

    @property
    def top_blocks(self) -> int:
        """The top blocks that train (--peft_layers under --peft, else --trainable_layers; < 1: none)."""
        return self.adaptation.layers if self.adaptation.mode != "none" else self.trainable_layers


@dataclass(frozen=True)
class SideNetworkSpec:
    """--side_network: a side adapter network over the cached per-layer states (IISAN;
    morec.models.side_network)."""
    kind: str = "none"                 # none | iisan
    layers: str = "every_second"       # san_layers: every_second (LayerDrop) | all
    bottleneck: int = 64               # san_dim: the adapters' width
    gate_init: float = 0.0             # san_gate_init: w of every gate at the start (g = sigmoid(w / 0.1))


@dataclass(frozen=True)
class TowerSpec:
    """The item tower: its kind, the encoders of its modalities, its heads and its fusion."""
    kind: str                  # id | text | vision | text+vision
    dim: int                   # embedding_dim
    drop_rate: float
    id_mlp_layers: int         # MLP depth of an ID tower alone (DSSM: dnn_layers; sequence models: 0)
    dnn_layers: int            # two-stage head (and ID+two-stage fusion) MLP depth
    mo_dnn_layers: int         # two-stage head MLP depth when fused with IDs
    fusion: str                # none | add | cat: ID embedding fused with the modality vector
    two_stage: bool            # frozen encoder features cached on disk + head
    cached: frozenset[str]     # modalities read from cached features (two-stage heads)
    ts_layers: str             # last | all: the cached text features' layers
    dedup_items: bool          # encode each distinct item of a batch once
    mm_fusion: str             # text+vision: sum | concat | gate
    text: EncoderSpec
    vision: EncoderSpec
    side: SideNetworkSpec = SideNetworkSpec()   # --side_network (IISAN): none by default


@dataclass(frozen=True)
class LossSpec:
    """The training loss and what the model does for it."""
    kind: str                      # inbatch | bce
    neg_num: int                   # BCE negatives per positive
    filter_false_negatives: bool   # in-batch: also drop candidates whose vector equals the target's
    grad_cache_chunk: int          # in-batch gradient caching: items per chunk (0: off)
    extra_negatives: int = 0       # in-batch: K more candidate columns shared by every row
    fp32: bool = False             # scores and loss in fp32 under autocast (--amp_fp32_loss)


# --- MISSRec (morec/models/missrec.py) ---
@dataclass(frozen=True)
class MissRecSpec:
    """--model missrec: interest tokens per prefix, ID table, candidate fusion, temperature."""
    interests: int = 4             # missrec_interests: K interest tokens per prefix (1 .. max_seq_len)
    ids: bool = False              # missrec_ids: an item ID table as one more part
    fusion: str = "user"           # missrec_fusion: user (user-adaptive part weights) | static
    temperature: float = 0.07      # missrec_temperature: scores are weighted cosines / temperature
# --- end MISSRec ---


@dataclass(frozen=True)
class ModelSpec:
    """The recommender: user encoder, item tower and loss."""
    user_encoder: str          # sasrec | gru4rec | nextitnet | dssm (Config.model)
    max_seq_len: int
    blocks: int                # transformer_block
    heads: int                 # num_attention_heads
    dnn_layers: int            # DSSM: MLP depth of the user tower
    drop_rate: float
    loss: LossSpec
    tower: TowerSpec
    missrec: MissRecSpec = MissRecSpec()   # --model missrec only


@dataclass(frozen=True)
class MemorySpec:
    """What the memory estimate reads: the model, the run's batch sizes and its device."""
    model: ModelSpec
    batch_size: int
    eval_batch_size: int
    eval_chunk_elems: int
    device: str                # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class ImageSpec:
    """The item images: the dataset's LMDB (`data.lmdb_file`) and how its pixels are prepared."""
    data: DataSpec
    size: int                  # images are resized to size x size
    norm: str                  # imagenet | half


@dataclass(frozen=True)
class ItemInputSpec:
    """What the item tower reads besides the batches (tokens, cached features, images) and where
    it is cached."""
    tower: TowerSpec                           # kind, encoders, cached modalities, ts_layers, fusion
    modalities: tuple[str, ...]                # the modalities the tower reads ("text", "vision")
    data: DataSpec
    cache_dir: Path                            # token and feature caches (resolved)
    attributes: tuple[tuple[str, int], ...]    # text: ((attribute, tokens), ...)
    images: ImageSpec
    num_workers: int                           # DataLoader workers of a feature extraction
    unescape_text: bool = True                 # texts through morec.data.text.clean_text (entities, spaces)


@dataclass(frozen=True)
class TransferSpec:
    """--init_from: the source run folder and the values that must agree with it."""
    given: str                 # init_from as given (for messages)
    run_dir: Path              # the source run folder (resolved)
    fusion: str                # this run's fusion (tensor names differ with an ID fusion)
    must_agree: tuple[tuple[str, object, object], ...]   # (Config field, value here, its default): the
                                                          # encoders' identity, compared with the source's config.json


@dataclass(frozen=True)
class RunSpecs:
    """What one run's setup reads, resolved once from its Config (morec.resolve.run_specs)."""
    data: DataSpec
    model: ModelSpec
    memory: MemorySpec
    item_inputs: ItemInputSpec
    transfer: TransferSpec
