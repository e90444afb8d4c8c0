"""Every run parameter in one dataclass, and the ``--key value`` command line built from it.

Names follow the original MoRec code where it had one (``item_tower``, ``embedding_dim``,
``behaviors`` for the users file, ``news`` for the items file, ...). An experiment script writes a
dict of values (a list means a grid); the command line overrides any of them, type-checked against
the default, in the style of nanoGPT's configurator.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from morec.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Config:
    # --- data (SPEC "Data") ---
    root_data_dir: str = "dataset"      # relative paths are taken from the repository root
    dataset: str = "ml-100k"
    behaviors: str = "users.tsv"        # user \t item item ... (time order)
    news: str = "items.tsv"             # item \t title \t abstract
    max_seq_len: int = 20               # L: 20 for text data sets, 10 for image data sets
    min_seq_len: int = 5
    warm_min_count: int = 0             # warm-item setting: keep items with >= this many train interactions (0: off; paper 20/50/200)

    # --- model ---
    model: str = "sasrec"               # sasrec | gru4rec | nextitnet (next-item user encoders) | dssm | missrec (below)
    item_tower: str = "id"              # id (IDRec) | text | vision | text+vision (MoRec)
    embedding_dim: int = 64
    transformer_block: int = 2          # SASRec blocks; NextItNet: repeats of the dilations 1, 2, 4, 8
    num_attention_heads: int = 2
    dnn_layers: int = 0                 # DSSM: MLP depth of the user and item towers
    drop_rate: float = 0.1

    # --- modality item towers (SPEC "Item towers"): item_tower "text" ---
    bert_model_load: str = "all_minilm_l6_v2"  # text encoder folder under pretrained_dir (pretrained_models/README.md)
    pretrained_dir: str = "pretrained_models"  # encoder folders; relative paths are taken from the repository root
    news_attributes: str = "title"      # title | abstract | title,abstract (each encoded, vectors averaged)
    num_words_title: int = 30           # tokens per title (padding and truncation)
    num_words_abstract: int = 50        # tokens per abstract
    unescape_text: bool = True          # decode HTML entities (&amp;) and collapse stray spaces in item texts (no ml-100k title changes)
    freeze_paras_before: int = 0        # freeze the encoder's first k parameter tensors (0: train all)
    trainable_layers: int = -1          # n >= 0: only the encoder's top n blocks train (-1: off)
    gradient_checkpointing: bool = False  # recompute encoder activations in backward (less memory)
    encoder_dropout: float = -1.0       # text encoder: every dropout probability of its HF config (hidden, attention)
                                        # set to P; 0: off (gradient caching then equals the plain step); -1: the config's
    two_stage: bool = False             # TS: frozen encoder features cached on disk + GELU(Linear) + dnn_layers MLP
    fusion: str = "none"                # none | add | cat: ID embedding fused with the modality vector
    mo_dnn_layers: int = 0              # two-stage fusion: MLP depth of the modality branch (then dnn_layers)
    ts_layers: str = "last"             # two-stage text features: last (the last layer) | all (every layer, scalar mix)
    ts_mix_lr: float = 0.05             # ts_layers all: AdamW lr of the scalar mix (layer weights, gamma), no weight decay
    # --- IISAN side network over every cached layer (morec/models/side_network.py; two_stage true, ts_layers all) ---
    side_network: str = "none"          # none | iisan: gated side adapter networks over the cached layer states (Fu et al., SIGIR 2024)
    san_layers: str = "every_second"    # iisan: the layers its blocks read: every_second (LayerDrop: L, L-2, ..., as IISAN) | all
    san_dim: int = 64                   # iisan: the adapters' bottleneck width (IISAN: 64)
    san_gate_init: float = 0.0          # iisan: every gate's w at the start, gate = sigmoid(w / 0.1) (0: 0.5, as IISAN)
    dedup_items: bool = True            # encode each distinct item of a training batch once (repeats share one
                                        # dropout mask; docs/text_tower.md); false: every slot, as the original
    pooling: str = "auto"               # text: auto (BERT/RoBERTa cls, OPT mean, other encoders cls, decoders last) | cls | mean | last
    peft: str = "none"                  # none | lora | ia3 (through peft) | bitfit (biases) | ln (norm layers): what of the encoder trains
    lora_r: int = 8                     # --peft lora: rank r
    lora_alpha: int = 16                # --peft lora: scaling alpha (the update is alpha / r * B A x)
    lora_dropout: float = 0.0           # --peft lora: dropout on the adapter's input (0.05 is common)
    lora_targets: str = ""              # --peft lora / ia3: module names, comma-separated ("": peft's defaults per model_type)
    peft_layers: int = -1               # --peft: adapt only the encoder's top k blocks (LoRA / IA3 layers_to_transform; -1: all)
    cache_frozen_layers: bool = False   # text E2E with the top k blocks trained: cache the states entering them once per
                                        # item (eval mode) and run only the top k blocks (docs/parameters.md)
    layer_cache_dtype: str = "float16"  # --cache_frozen_layers: float16 | bfloat16 | float32 (stored states)

    # --- item_tower "vision" (SPEC "Item towers"); also fusion / two_stage / freezing above ---
    cv_model_load: str = "resnet50"     # vision encoder folder under pretrained_dir (pretrained_models/README.md)
    image_lmdb: str = "images.lmdb"     # image LMDB in the dataset folder (ml-100k: posters.lmdb, dataset/ml-100k/render_posters.py)
    image_size: int = 224               # images are resized to image_size x image_size (SPEC: 224)
    image_norm: str = "imagenet"        # imagenet (mean/std) | half (0.5/0.5, the original code)
    freeze_bn_stats: bool = False       # vision: BatchNorm normalises with its running statistics in training too and never
                                        # updates them (eval-mode BN); needed for --inbatch_chunk with a ResNet

    # --- item_tower "text+vision": both towers above, their vectors fused ---
    mm_fusion: str = "sum"              # sum | concat | gate (morec/models/multimodal.py)
    cv_fine_tune_lr: float = -1.0       # lr of the vision encoder (-1: fine_tune_lr); the text encoder: fine_tune_lr
    mm_cached_branch: str = "none"      # none | text | vision: that branch reads cached frozen features (two-stage head), the other trains end to end

    # --- transfer (--init_from) ---
    init_from: str = ""                 # a run folder: start from its checkpoint_best.pt (user encoder + modality tower)
    freeze_user_encoder: bool = False   # the user encoder's parameters do not train (linear-probe style; SASRec)
    train_user_fraction: float = 1.0    # train on this fraction of the users (fixed nested subsets); all users are evaluated

    # --- MISSRec (--model missrec, morec/models/missrec.py; docs/missrec.md) ---
    missrec_interests: int = 4          # K interest tokens per prefix, clustered from its modality tokens (1 .. max_seq_len)
    missrec_ids: bool = False           # an item ID table as one more part (their transductive fine-tuning); false: modalities only
    missrec_fusion: str = "user"        # user: user-adaptive weights of the candidate's parts | static: fixed weights
    missrec_temperature: float = 0.07   # scores are the parts' weighted cosines / this
    # --- end MISSRec ---

    # --- loss (SPEC "Losses") ---
    loss: str = "inbatch"               # inbatch (debiased softmax) | bce (sampled negatives)
    neg_num: int = 1                    # BCE negatives per positive (DSSM; SASRec uses 1)
    gather_negatives: bool = False      # DDP in-batch loss: all ranks' items as negatives (else own batch, as the paper)
    extra_negatives: int = 0            # in-batch loss: K more candidates per step, uniform over the catalogue, shared by all rows
    filter_false_negatives: bool = False  # in-batch loss: also drop candidates whose vector equals the row's target's (own items always go)
    inbatch_chunk: int = 0              # in-batch loss, one process: gradient caching, items encoded in chunks of N (0: off)

    # --- optimisation (SPEC "Training") ---
    batch_size: int = 64
    epoch: int = 100
    lr: float = 1e-3
    l2_weight: float = 0.1
    fine_tune_lr: float = 1e-4          # encoder parameter group (modality towers)
    fine_tune_l2_weight: float = 0.01
    max_grad_norm: float = 0.0          # clip the gradient norm of each optimizer step to this (0: no clipping, the paper)
    lr_schedule: str = "none"           # none (constant lr, the paper) | cosine (to 0 at the end of `epoch` epochs, which then joins the label)
    warmup_steps: int = 0               # linear warm-up of the lr over this many optimizer steps (0: none), then lr_schedule
    accumulation_steps: int = 1         # micro-batches per optimizer step (effective batch = batch_size x this)
    skip_nonfinite: bool = False        # skip a batch whose loss or gradient is NaN/inf (else stop)
    patience: int = 10                  # stop after this many consecutive non-improving evaluations (SPEC "Training";
                                        # the original's `count > gap` is patience = gap + 1); ID and MoRec scripts of a folder share it
    tie_break_ndcg: bool = False        # best checkpoint: valid HR@10, then NDCG@10 on ties
    seed: int = 12345

    # --- evaluation ---
    eval_batch_size: int = 512          # users per forward pass of the user encoder
    eval_chunk_elems: int = 2 ** 24     # users x items scores held at once while ranking
    ties: str = "expected"              # expected (uniformly random tie-breaking, SPEC) | optimistic (rank 1+h) | pessimistic (1+h+t)
    eval_amp: bool = False              # encode the catalogue under autocast (bf16/fp16) at evaluation; default fp32 for every tower
    repeat_targets: str = "miss"        # a target also in the user's history: miss (removed with the history, SPEC) | rank (no history removed) | skip (user left out)
    cold_start_count: int = 1           # test also reports the cold-start view: targets with < this many train interactions (1: unseen; 0: off)

    # --- run control (not part of the run label) ---
    label: str = ""                     # run folder name; derived from the values when empty
    runs_dir: str = ""                  # where run folders go; empty: <script folder>/runs
    resume: bool = False                # continue from runs/<label>/checkpoint_last.pt
    overwrite: bool = False             # start over even if runs/<label>/ holds a checkpoint
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    nproc_per_node: int = 1             # > 1: the script starts itself under torchrun (DDP; per-GPU batch_size)
    nnodes: int = 1                     # > 1: multi-node; every node runs the script with the same rdzv_endpoint
    rdzv_endpoint: str = ""             # host:port of the rendezvous for nnodes > 1 (e.g. the first node)
    amp: bool = True                    # mixed precision on CUDA; on the CPU only with cpu_amp
    amp_dtype: str = "bf16"             # bf16 | fp16 (fp16 uses a GradScaler)
    cpu_amp: bool = False               # opt-in: bf16 autocast for training on a CPU with bf16 instructions (needs amp, bf16)
    compile_model: bool = False         # torch.compile the model for training
    deterministic: bool = False         # deterministic algorithms (torch.use_deterministic_algorithms, cuDNN deterministic, no cuDNN benchmark)
    sync_bn: bool = False               # vision towers under DDP on CUDA: BatchNorm statistics over every rank's batch (SyncBatchNorm)
    num_workers: int = 0
    progress: bool = True               # tqdm bars (only shown on a terminal)
    log_every: int = 0                  # no terminal (log file, SLURM): a progress line every N optimizer steps (0: about every 30 s)
    cache_dir: str = "cache"            # token and two-stage feature caches; relative to the repository root
    prepared_data: bool = False         # map the users file's prepared form under cache_dir/prepared (built once; morec.data.prepared)

    def data_dir(self) -> Path:
        root = Path(self.root_data_dir)
        return (root if root.is_absolute() else REPO_ROOT / root) / self.dataset

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Fields that steer a run but do not change what it computes: kept out of the run label so that
# `train --epoch 3` and `test` (or a resumed run) find the same folder. The world size and
# precision they imply do change the numbers: run_setting() puts them in the label and in
# config.json ("setting"). epoch and patience are recorded in config.json.
RUN_CONTROL = {"label", "runs_dir", "resume", "overwrite", "device", "amp", "amp_dtype", "cpu_amp", "compile_model", "deterministic",
               "nproc_per_node", "nnodes", "rdzv_endpoint", "num_workers", "progress", "log_every", "skip_nonfinite",
               "epoch", "patience", "eval_batch_size", "eval_chunk_elems", "cache_dir", "cold_start_count",
               "prepared_data"}
LABEL_PREFIX = [("model", ""), ("item_tower", ""), ("loss", ""), ("embedding_dim", "d"),
                ("batch_size", "bs"), ("lr", "lr"), ("l2_weight", "l2"), ("drop_rate", "dr"),
                ("max_seq_len", "L"), ("seed", "s")]


# Fields that only a modality item tower reads: an ID run's label ignores them all, a text run's
# the vision ones and a vision run's the text ones (a study or grid may set them for every run).
TEXT_FIELDS = {"bert_model_load", "news_attributes", "num_words_title", "num_words_abstract", "pooling",
               "unescape_text", "encoder_dropout"}
VISION_FIELDS = {"cv_model_load", "image_lmdb", "image_size", "image_norm", "freeze_bn_stats"}
ENCODER_FIELDS = {"pretrained_dir", "dedup_items", "freeze_paras_before", "trainable_layers", "gradient_checkpointing",
                  "two_stage", "fusion", "mo_dnn_layers", "fine_tune_lr", "fine_tune_l2_weight",
                  "peft", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "ts_layers", "ts_mix_lr",
                  "peft_layers", "cache_frozen_layers", "layer_cache_dtype"}
ENCODER_FIELDS |= {"side_network", "san_layers", "san_dim", "san_gate_init"}     # IISAN side network
MULTIMODAL_FIELDS = {"mm_fusion", "cv_fine_tune_lr", "mm_cached_branch"}   # only item_tower "text+vision" reads them
UNUSED_BY_TOWER = {"id": TEXT_FIELDS | VISION_FIELDS | ENCODER_FIELDS | MULTIMODAL_FIELDS,
                   "text": VISION_FIELDS | MULTIMODAL_FIELDS, "vision": TEXT_FIELDS | MULTIMODAL_FIELDS,
                   "text+vision": set()}
# The modalities each item tower reads (text: tokens; vision: the image LMDB's pixels).
TOWER_MODALITIES = {"id": (), "text": ("text",), "vision": ("vision",), "text+vision": ("text", "vision")}


def cached_modalities(cfg: "Config") -> set[str]:
    """The modalities of cfg's item tower read from cached frozen features by a two-stage head:
    all of them with two_stage, else the text+vision branch named by mm_cached_branch (if any)."""
    modalities = set(TOWER_MODALITIES.get(cfg.item_tower, ()))
    return modalities if cfg.two_stage else modalities & {cfg.mm_cached_branch}

# Fields a user encoder does not read (GRU4Rec: one GRU layer; NextItNet: no attention), left out
# of its runs' labels likewise.
UNUSED_BY_MODEL = {"gru4rec": {"transformer_block", "num_attention_heads"}, "nextitnet": {"num_attention_heads"}}
# --- MISSRec: only --model missrec reads its fields; it reads no mm_fusion (its own candidate fusion) ---
MISSREC_FIELDS = {"missrec_interests", "missrec_ids", "missrec_fusion", "missrec_temperature"}
UNUSED_BY_MODEL = {**{m: UNUSED_BY_MODEL.get(m, set()) | MISSREC_FIELDS for m in ("sasrec", "gru4rec", "nextitnet", "dssm")},
                   "missrec": {"mm_fusion"}}
# --- end MISSRec ---


DEFAULT_SETTING = {"world_size": 1, "precision": "fp32"}


def run_setting(cfg: Config) -> dict:
    """How the run computes, beyond its values: {"world_size": W, "precision": "fp32"|"bf16"|"fp16"}.

    These change the numbers (per-rank batches and in-batch negatives, AMP rounding), so runs that
    differ in them must not share a label or a table row. Precision is fp32 unless `amp` is on and
    the device resolves to CUDA ("auto" is CUDA iff torch.cuda.is_available()), or to the CPU with
    the `cpu_amp` opt-in (bf16; morec.parts.check_cpu_bf16 refuses a CPU without bf16 instructions)."""
    import torch
    on_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    return {"world_size": cfg.nproc_per_node * cfg.nnodes,
            "precision": cfg.amp_dtype if cfg.amp and (on_cuda or cfg.cpu_amp) else "fp32"}


def setting_tag(setting: dict) -> list[str]:
    """Label parts of a setting: none for one fp32 process (so CPU labels stay as they were)."""
    return [] if setting == DEFAULT_SETTING else [f"w{setting['world_size']}", setting["precision"]]


def run_control(cfg: Config) -> set[str]:
    """The RUN_CONTROL fields that do not change what `cfg` computes: all of them, except `epoch`
    under --lr_schedule cosine (the schedule's length, so it changes every step's lr)."""
    return RUN_CONTROL - {"epoch"} if cfg.lr_schedule == "cosine" else RUN_CONTROL


def run_label(cfg: Config) -> str:
    """Readable label plus a hash of the defining values that differ from the defaults.

    Hashing only non-default values keeps old labels valid when a new parameter is added; values
    the run's item tower does not read are left out. World size and precision (run_setting) are
    added as `-wW-PRECISION` unless they are 1 and fp32."""
    defaults = Config().to_dict()
    unused = run_control(cfg) | UNUSED_BY_TOWER.get(cfg.item_tower, set()) | UNUSED_BY_MODEL.get(cfg.model, set())
    if cfg.item_tower == "id" and (cfg.two_stage or cfg.fusion != "none"):
        unused = unused - {"two_stage", "fusion"}          # an invalid run: keep it apart (it fails later)
    defining = {k: v for k, v in cfg.to_dict().items() if k not in unused and v != defaults[k]}
    digest = hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:8]
    parts = [f"{short}{getattr(cfg, name)}" for name, short in LABEL_PREFIX]
    return "-".join([cfg.dataset] + parts + setting_tag(run_setting(cfg)) + [digest])


def _parse_value(name: str, text: str, default):
    """Turn a command-line string into the type of the field's default."""
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise InputError(f"--{name} expects true/false, got {text!r}")
    try:
        return type(default)(text)
    except ValueError:
        raise InputError(f"--{name} expects a {type(default).__name__}, got {text!r}") from None


def parse_overrides(argv: list[str]) -> dict:
    """Parse ``--key value``, ``--key=value`` and bare boolean ``--flag`` into a dict.

    A value with commas (``--lr 1e-3,1e-4``) becomes a list: a grid over that field.
    """
    defaults = {f.name: f.default for f in fields(Config)}
    overrides: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise InputError(f"unexpected argument {arg!r}; use --key value")
        key, has_eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in defaults:
            raise InputError(f"unknown parameter --{key}; known: {', '.join(sorted(defaults))}")
        if not has_eq:
            if isinstance(defaults[key], bool) and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
                text = "true"
            elif i + 1 < len(argv):
                i += 1
                text = argv[i]
            else:
                raise InputError(f"--{key} needs a value")
        values = [_parse_value(key, t, defaults[key]) for t in text.split(",")] \
            if "," in text and not isinstance(defaults[key], str) else [_parse_value(key, text, defaults[key])]
        overrides[key] = values if len(values) > 1 else values[0]
        i += 1
    return overrides


def make_config(values: dict) -> Config:
    """Build a Config from plain values, checking names, types and values (`validate`)."""
    defaults = {f.name: f.default for f in fields(Config)}
    for key, value in values.items():
        if key not in defaults:
            raise InputError(f"unknown parameter {key!r}")
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InputError(f"parameter {key} = {value!r} should be a {expected.__name__}")
    cfg = Config(**values)
    validate(cfg)
    return cfg


# ----------------------------------------------------------------------------- validation

def _at_least(low: int):
    return lambda value: None if value >= low else f"must be at least {low}"


def _positive_finite(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _non_negative_finite(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


def _one_of(*choices: str):
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _any(_value) -> None:
    return None


def _folder_name(value: str) -> str | None:
    if value in ("", ".", "..") or "/" in value or "\0" in value:
        return "must be a plain folder name (no '/')"
    return None


def _dataset_name(value: str) -> str | None:
    if _folder_name(value) is None:
        return None
    parent, _, name = value.rstrip("/").rpartition("/")
    if name and not parent and value.endswith("/"):        # a shell's tab completion adds the slash
        return f"must be a folder name, not a path: drop the trailing slash (--dataset {name})"
    hint = f": pass --root_data_dir {parent} --dataset {name}" if parent and name else ""
    return f"must be a folder name under --root_data_dir, not a path{hint}"


def _label(value: str) -> str | None:
    return None if value == "" else _folder_name(value)


def _drop_rate(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1) (the probability of dropping a unit)"


def _dropout_or_unset(value: float) -> str | None:
    return None if value == -1 or 0 <= value < 1 else "must be -1 (the encoder config's) or in [0, 1)"


def _seed(value: int) -> str | None:
    return None if 0 <= value < 2 ** 48 else "must be in 0 .. 2**48 - 1"


def _device(value: str) -> str | None:
    kind, colon, index = value.partition(":")
    if value in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def _endpoint(value: str) -> str | None:
    host, colon, port = value.rpartition(":")
    return None if value == "" or (host and colon and port.isdigit()) else "must be HOST:PORT"


def _lr_or_unset(value: float) -> str | None:
    return None if value == -1 or (math.isfinite(value) and value >= 0) else "must be -1 (use fine_tune_lr) or >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1] (the fraction of users whose train part is used)"


def _module_names(value: str) -> str | None:
    parts = [part.strip() for part in value.split(",")]
    if value and (not all(parts) or any(" " in part for part in parts)):
        return "must be module names separated by commas, e.g. q_proj,v_proj (empty: peft's defaults)"
    return None


def _news_attributes(value: str) -> str | None:
    parts = [part.strip() for part in value.split(",")]
    if not all(parts) or len(set(parts)) != len(parts) or not set(parts) <= {"title", "abstract"}:
        return "must be title, abstract or title,abstract"
    return None


# One rule per Config field (tests/test_config.py checks that none lacks one): a function of the
# value returning what is wrong, or None. Types are checked by make_config / validate first.
RULES = {
    "root_data_dir": _not_empty, "dataset": _dataset_name, "behaviors": _not_empty, "news": _not_empty,
    "max_seq_len": _at_least(1), "min_seq_len": _at_least(3), "warm_min_count": _at_least(0),
    "model": _one_of("sasrec", "gru4rec", "nextitnet", "dssm", "missrec"), "item_tower": _one_of("id", "text", "vision", "text+vision"),
    "embedding_dim": _at_least(1), "transformer_block": _at_least(1), "num_attention_heads": _at_least(1),
    "dnn_layers": _at_least(0), "drop_rate": _drop_rate,
    "bert_model_load": _folder_name, "pretrained_dir": _not_empty, "news_attributes": _news_attributes,
    "num_words_title": _at_least(1), "num_words_abstract": _at_least(1), "unescape_text": _any, "freeze_paras_before": _at_least(0),
    "trainable_layers": _at_least(-1), "gradient_checkpointing": _any, "two_stage": _any,
    "fusion": _one_of("none", "add", "cat"), "mo_dnn_layers": _at_least(0), "ts_layers": _one_of("last", "all"),
    "ts_mix_lr": _positive_finite,
    "cv_model_load": _folder_name, "image_lmdb": _not_empty, "image_size": _at_least(1),
    "image_norm": _one_of("imagenet", "half"), "freeze_bn_stats": _any, "encoder_dropout": _dropout_or_unset,
    "loss": _one_of("inbatch", "bce"), "neg_num": _at_least(1), "gather_negatives": _any,
    "extra_negatives": _at_least(0), "filter_false_negatives": _any, "inbatch_chunk": _at_least(0),
    "batch_size": _at_least(1), "epoch": _at_least(1), "lr": _positive_finite, "l2_weight": _non_negative_finite,
    "fine_tune_lr": _non_negative_finite, "fine_tune_l2_weight": _non_negative_finite,
    "max_grad_norm": _non_negative_finite, "lr_schedule": _one_of("none", "cosine"), "warmup_steps": _at_least(0),
    "accumulation_steps": _at_least(1), "skip_nonfinite": _any,
    "patience": _at_least(1), "tie_break_ndcg": _any, "seed": _seed,
    "eval_batch_size": _at_least(1), "eval_chunk_elems": _at_least(1), "cold_start_count": _at_least(0),
    "label": _label, "runs_dir": _any, "resume": _any, "overwrite": _any, "device": _device,
    "nproc_per_node": _at_least(1), "nnodes": _at_least(1), "rdzv_endpoint": _endpoint, "amp": _any,
    "amp_dtype": _one_of("bf16", "fp16"), "cpu_amp": _any, "compile_model": _any, "deterministic": _any, "sync_bn": _any,
    "num_workers": _at_least(0),
    "progress": _any, "log_every": _at_least(0), "cache_dir": _not_empty, "prepared_data": _any,
    # fields of the evaluation and data branches (checked when present)
    "mm_fusion": _one_of("sum", "concat", "gate"), "cv_fine_tune_lr": _lr_or_unset,
    "mm_cached_branch": _one_of("none", "text", "vision"),
    "init_from": _any, "freeze_user_encoder": _any, "train_user_fraction": _fraction,
    "ties": _one_of("expected", "optimistic", "pessimistic"), "repeat_targets": _one_of("miss", "rank", "skip"), "eval_amp": _any, "dedup_items": _any,
    "pooling": _one_of("auto", "cls", "mean", "last"), "peft": _one_of("none", "lora", "ia3", "bitfit", "ln"),
    "lora_r": _at_least(1), "lora_alpha": _at_least(1), "lora_dropout": _drop_rate, "lora_targets": _module_names,
    "peft_layers": _at_least(-1), "cache_frozen_layers": _any, "layer_cache_dtype": _one_of("float16", "bfloat16", "float32"),
}
# --- IISAN side network (morec/models/side_network.py) ---
RULES.update({"side_network": _one_of("none", "iisan"), "san_layers": _one_of("every_second", "all"),
              "san_dim": _at_least(1),
              "san_gate_init": lambda value: None if math.isfinite(value) else "must be a finite number"})


def _combination_problems(cfg: Config) -> list[str]:
    """What is wrong with values that are fine alone but not together."""
    problems = []
    problems += _missrec_problems(cfg)                                   # MISSRec
    if cfg.model == "sasrec" and cfg.embedding_dim % max(cfg.num_attention_heads, 1):
        problems.append(f"--embedding_dim {cfg.embedding_dim} must be divisible by "
                        f"--num_attention_heads {cfg.num_attention_heads}")
    if cfg.item_tower == "id" and (cfg.two_stage or cfg.fusion != "none"):
        problems.append("--two_stage and --fusion need a modality item tower: set --item_tower text or vision")
    if cfg.mm_cached_branch != "none" and (cfg.item_tower != "text+vision" or cfg.two_stage):
        problems.append(f"--mm_cached_branch {cfg.mm_cached_branch} makes one branch of --item_tower text+vision "
                        "two-stage while the other trains end to end: it needs --item_tower text+vision and "
                        "--two_stage false (--two_stage true caches both branches)")
    if cfg.freeze_user_encoder and cfg.model == "dssm":
        problems.append("--freeze_user_encoder needs a sequential model (sasrec, gru4rec, nextitnet): DSSM's user "
                        "tower is a user-ID table, which must train")
    if cfg.train_user_fraction < 1 and cfg.model == "dssm":
        problems.append("--train_user_fraction < 1 needs a sequential model (sasrec, gru4rec, nextitnet): DSSM's "
                        "batches index users by row")
    for name, on in (("inbatch_chunk", cfg.inbatch_chunk > 0), ("extra_negatives", cfg.extra_negatives > 0),
                     ("filter_false_negatives", cfg.filter_false_negatives)):
        if on and cfg.loss != "inbatch":
            problems.append(f"--{name} belongs to the in-batch loss; with --loss {cfg.loss} leave it unset "
                            f"(or set --loss inbatch)")
    if cfg.inbatch_chunk > 0 and cfg.nproc_per_node * cfg.nnodes > 1:
        problems.append("--inbatch_chunk (gradient caching) runs in one process: use it without "
                        "--nproc_per_node / --nnodes, or set --inbatch_chunk 0")
    problems += _peft_problems(cfg) + _layer_cache_problems(cfg)
    problems += _side_network_problems(cfg)
    unset = Config()
    for name in ("encoder_dropout", "freeze_bn_stats"):
        if cfg.two_stage and getattr(cfg, name) != getattr(unset, name):
            problems.append(f"--{name} {getattr(cfg, name)} sets how an encoder trains, but with --two_stage the "
                            "encoder runs once in eval mode and never trains: drop it (or set --two_stage false)")
    if cfg.sync_bn and ("vision" not in TOWER_MODALITIES.get(cfg.item_tower, ()) or "vision" in cached_modalities(cfg)):
        problems.append("--sync_bn synchronises the BatchNorm of a vision encoder trained end to end under DDP: it "
                        "needs --item_tower vision or text+vision without a cached (two-stage) vision branch")
    if cfg.ts_layers == "all" and not (cfg.two_stage or "text" in cached_modalities(cfg)):
        problems.append("--ts_layers all caches every text encoder layer for the two-stage head: add --two_stage "
                        "true, or --mm_cached_branch text with --item_tower text+vision (end to end, the encoder "
                        "runs in training and --ts_layers does not apply)")
    elif cfg.ts_layers == "all" and cfg.item_tower == "vision" and cfg.side_network == "none":
        problems.append("--ts_layers all is for text encoders (equal-width layers); a vision encoder's stages "
                        "differ in width: use --ts_layers last with --item_tower vision")
    if cfg.cpu_amp and not (cfg.amp and cfg.amp_dtype == "bf16"):
        problems.append(f"--cpu_amp true trains under bf16 autocast on the CPU, but --amp is {cfg.amp} and "
                        f"--amp_dtype {cfg.amp_dtype}: use --amp true --amp_dtype bf16 with it, or drop --cpu_amp")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume and --overwrite contradict each other: pass one of them")
    if cfg.nnodes > 1 and not cfg.rdzv_endpoint:
        problems.append("--nnodes > 1 needs --rdzv_endpoint HOST:PORT (the same on every node)")
    return problems


# --- MISSRec ---
RULES.update({"missrec_interests": _at_least(1), "missrec_ids": _any, "missrec_fusion": _one_of("user", "static"),
              "missrec_temperature": _positive_finite})


def _missrec_problems(cfg: Config) -> list[str]:
    """--model missrec reads cached features (two-stage) of a modality tower, adds IDs itself,
    and forms at most max_seq_len interests; its fields do nothing for another model."""
    if cfg.model != "missrec":
        unset = Config()
        given = [f"--{name} {str(getattr(cfg, name)).lower()}" for name in sorted(MISSREC_FIELDS)
                 if getattr(cfg, name) != getattr(unset, name)]
        return [f"{', '.join(given)} only apply with --model missrec (it is {cfg.model})"] if given else []
    problems = []
    if cfg.item_tower == "id" or not cfg.two_stage:
        problems.append("--model missrec reads cached item features: set --item_tower text, vision or text+vision "
                        "and --two_stage true")
    if cfg.fusion != "none":
        problems.append(f"--model missrec adds item IDs itself: use --missrec_ids true instead of --fusion {cfg.fusion}")
    if cfg.missrec_interests > cfg.max_seq_len:
        problems.append(f"--missrec_interests {cfg.missrec_interests} exceeds --max_seq_len {cfg.max_seq_len}: "
                        "a prefix has at most max_seq_len items; set it to 1 .. max_seq_len")
    if cfg.embedding_dim % max(cfg.num_attention_heads, 1):
        problems.append(f"--embedding_dim {cfg.embedding_dim} must be divisible by "
                        f"--num_attention_heads {cfg.num_attention_heads}")
    return problems
# --- end MISSRec ---


def _peft_problems(cfg: Config) -> list[str]:
    """--peft adapts the encoder of a text tower trained end to end, and sets alone what trains."""
    problems = []
    if cfg.peft != "none" and cfg.item_tower != "text":
        problems.append(f"--peft {cfg.peft} adapts a text encoder, but --item_tower is {cfg.item_tower}: "
                        "set --item_tower text, or --peft none")
    elif cfg.peft != "none" and cfg.two_stage:
        problems.append(f"--peft {cfg.peft} with --two_stage: the two-stage encoder is frozen and never "
                        "runs in training; drop one of them")
    clashing = [(name, getattr(cfg, name), off) for name, off, on in
                (("freeze_paras_before", 0, cfg.freeze_paras_before > 0), ("trainable_layers", -1, cfg.trainable_layers >= 0))
                if on]
    if cfg.peft != "none" and clashing:
        problems.append(f"--peft {cfg.peft} decides which encoder parameters train, so "
                        f"{' and '.join(f'--{name} {value}' for name, value, _ in clashing)} must be off: override with "
                        f"{' '.join(f'--{name} {off}' for name, _, off in clashing)} (or use --peft none)")
    lora_only = _changed_from_default(cfg, ("lora_r", "lora_alpha", "lora_dropout"))
    if lora_only and cfg.peft != "lora":
        problems.append(f"{', '.join(lora_only)} only apply with --peft lora (it is {cfg.peft})")
    if cfg.peft_layers != -1 and cfg.peft == "none":
        problems.append(f"--peft_layers {cfg.peft_layers} restricts --peft to the top blocks, but --peft is none: "
                        "set --peft, or --trainable_layers instead")
    if cfg.lora_targets and cfg.peft not in ("lora", "ia3"):
        problems.append(f"--lora_targets {cfg.lora_targets} only applies with --peft lora or ia3 (it is {cfg.peft})")
    return problems


def _changed_from_default(cfg: Config, names: tuple[str, ...]) -> list[str]:
    """"--NAME VALUE" for each of `names` that `cfg` sets away from its default."""
    defaults = Config()
    return [f"--{name} {getattr(cfg, name)}" for name in names if getattr(cfg, name) != getattr(defaults, name)]


def _side_network_problems(cfg: Config) -> list[str]:
    """--side_network iisan reads the all-layer cache of a two-stage modality tower; its values
    (san_*) only apply with it."""
    problems = []
    if cfg.side_network != "none" and cfg.item_tower == "id":
        problems.append(f"--side_network {cfg.side_network} adapts a modality encoder's cached layers: set "
                        "--item_tower text, vision or text+vision (with --two_stage true --ts_layers all)")
    elif cfg.side_network != "none" and not (cfg.two_stage and cfg.ts_layers == "all"):
        problems.append(f"--side_network {cfg.side_network} reads every layer's cached state and the encoder never "
                        f"runs in training: it needs --two_stage true and --ts_layers all (they are --two_stage "
                        f"{str(cfg.two_stage).lower()} --ts_layers {cfg.ts_layers})")
    only = _changed_from_default(cfg, ("san_layers", "san_dim", "san_gate_init"))
    if only and cfg.side_network == "none":
        problems.append(f"{', '.join(only)} only apply with --side_network iisan (it is none)")
    return problems


def _layer_cache_problems(cfg: Config) -> list[str]:
    """--cache_frozen_layers needs a text tower end to end whose top k >= 1 blocks alone train."""
    top = cfg.peft_layers if cfg.peft != "none" else cfg.trainable_layers
    if not cfg.cache_frozen_layers:
        return [] if cfg.layer_cache_dtype == "float16" else [
            f"--layer_cache_dtype {cfg.layer_cache_dtype} only applies with --cache_frozen_layers true"]
    if cfg.item_tower != "text" or cfg.two_stage:
        return [f"--cache_frozen_layers caches the frozen blocks of a text encoder trained end to end: it needs "
                f"--item_tower text and --two_stage false (it is --item_tower {cfg.item_tower}, --two_stage "
                f"{str(cfg.two_stage).lower()})"]
    if top < 1:
        which = f"--peft_layers {cfg.peft_layers}" if cfg.peft != "none" else f"--trainable_layers {cfg.trainable_layers}"
        how = "--peft_layers k" if cfg.peft != "none" else "--trainable_layers k"
        return [f"--cache_frozen_layers caches the states entering the top k trained blocks, but {which} sets no "
                f"top blocks: set {how} with k >= 1 (or --cache_frozen_layers false)"]
    if cfg.freeze_paras_before > 0:
        return ["--cache_frozen_layers: the top k blocks decide what trains; set --freeze_paras_before 0"]
    return []


def validate(cfg: Config) -> None:
    """Refuse values that make no sense, before anything is written: every problem
    of `cfg` in one InputError, each naming the parameter, its value and what it must be."""
    defaults = Config().to_dict()
    problems = []
    for name, value in cfg.to_dict().items():
        expected = type(defaults[name])
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(f"--{name} {value!r} should be a {expected.__name__}")
            continue
        problem = RULES.get(name, _any)(value)
        if problem:
            problems.append(f"--{name} {value!r} {problem}")
    if not problems:
        problems = _combination_problems(cfg)
    if problems:
        raise InputError("; ".join(problems))
