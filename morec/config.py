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
    freeze_user_encoder: bool = False   # the user encoder's parameters do not train (linear-probe style; sequential models, not dssm)
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
    amp_fp32_loss: bool = False         # under mixed precision: the scores and the loss in fp32 (the encoders keep bf16/fp16)
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
    if run_setting(cfg)["precision"] == "fp32":
        unused = unused | {"amp_fp32_loss"}                # a fp32 run computes its loss in fp32 anyway
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
    from morec.config_checks import validate   # it imports Config from here
    validate(cfg)
    return cfg
