"""Parameter-efficient fine-tuning of a pretrained item encoder (`--peft`).

    none    every encoder parameter that freezing leaves trainable trains (full fine-tuning)
    lora    LoRA (Hu et al., ICLR 2022): W x + (alpha / r) B A x on the target linear layers, A and
            B trained, W frozen; through the `peft` library (peft.inject_adapter_in_model)
    ia3     IA3 (Liu et al., NeurIPS 2022): learned vectors scaling the target layers' outputs
            (feed-forward layers: their inputs); through `peft`
    bitfit  BitFit (Ben Zaken et al., ACL 2022): only the encoder's bias terms train
    ln      only the encoder's normalisation layers (LayerNorm, RMSNorm: weight and bias) train

`--peft_layers k` restricts any mode to the top k transformer blocks (LoRA / IA3 through peft's
`layers_to_transform`; BitFit / LayerNorm: the biases / norms of those blocks and of the final
norm after them), e.g. for the layer cache (morec/models/cached_text.py); -1: every block.
`--lora_targets` names the adapted modules (comma-separated; a name matches a module whose name
is it or ends with "." + it, as in peft); empty: peft's defaults for the model_type (BERT query,
value; Llama / Qwen2 q_proj, v_proj; GPT-2 c_attn; IA3 adds the feed-forward output). Every
named target must match a module, else the run is refused.

Adapters live inside the encoder (peft injects them in place), so they are among
TextTower.encoder_parameters() and train with the `fine_tune_lr` group. Under any mode but
`none`, checkpoints leave out the frozen pretrained tensors (`frozen_encoder_keys`): they are
reloaded from the encoder folder, and a digest of them (`reloaded_digest`) saved with the
checkpoint makes resume and test refuse an encoder folder whose weights have changed.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn as nn

from morec.errors import InputError
from morec.specs import Adaptation     # how the encoder is fine-tuned (a typed value of the run)

PEFT_MODES = ("none", "lora", "ia3", "bitfit", "ln")


def adapt_encoder(encoder: nn.Module, adaptation: Adaptation) -> nn.Module:
    """Apply `adaptation` to `encoder` in place (after freezing); returns it. Every mode but
    `none` freezes all pretrained parameters first, then lets only its own set train."""
    if adaptation.mode not in PEFT_MODES:
        raise InputError(f"peft {adaptation.mode!r} is not available; choose one of {', '.join(PEFT_MODES)}")
    if adaptation.mode == "none":
        return encoder
    encoder.requires_grad_(False)
    within = in_top_blocks(encoder, adaptation.layers)
    if adaptation.mode in ("lora", "ia3"):
        inject_peft(encoder, adaptation)
    elif adaptation.mode == "bitfit":
        train_only(encoder, [p for name, p in encoder.named_parameters() if name.rpartition(".")[2] == "bias"
                             and not name.startswith("pooler.") and within(name)], "bias")
    else:
        train_only(encoder, [p for name, module in encoder.named_modules() if is_norm(module) and not name.startswith("pooler")
                             for own, p in module.named_parameters(recurse=False) if within(f"{name}.{own}")],
                   "normalisation layer (LayerNorm / RMSNorm)")
    return encoder


def top_block_numbers(encoder: nn.Module, layers: int) -> list[int]:
    """The numbers of the top `layers` transformer blocks (--peft_layers); refused beyond the encoder's."""
    from morec.models.text import block_layout
    prefix, _ = block_layout(encoder)
    count = len(encoder.get_submodule(prefix.rstrip(".")))
    if not 1 <= layers <= count:
        raise InputError(f"--peft_layers {layers}: the encoder has {count} blocks; choose 1 .. {count} (or -1: all)")
    return list(range(count - layers, count))


def in_top_blocks(encoder: nn.Module, layers: int):
    """name -> whether the parameter or module `name` lies in the top `layers` blocks or after them
    (a final norm); every name when `layers` is -1."""
    if layers == -1:
        return lambda name: True
    from morec.models.text import block_layout
    prefix, after = block_layout(encoder)
    top = tuple(f"{prefix}{block}." for block in top_block_numbers(encoder, layers))
    return lambda name: name.startswith(top + after)


def is_norm(module: nn.Module) -> bool:
    """nn.LayerNorm and the models' own norm classes (LlamaRMSNorm, T5LayerNorm, ...)."""
    name = type(module).__name__
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("LayerNorm", "RMSNorm"))


def train_only(encoder: nn.Module, params: list[nn.Parameter], what: str) -> None:
    if not params:
        raise InputError(f"{type(encoder).__name__} has no {what} parameters, so --peft would train "
                         "nothing in the encoder; choose another --peft")
    for param in params:
        param.requires_grad_(True)


def module_names(encoder: nn.Module) -> list[str]:
    return [name for name, _ in encoder.named_modules() if name]


def check_targets(encoder: nn.Module, targets: list[str]) -> None:
    """Every target names at least one module (peft itself only refuses when none matches)."""
    names = module_names(encoder)
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        linear = sorted({n.rpartition(".")[2] for n, m in encoder.named_modules()
                         if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"})
        raise InputError(f"--lora_targets {','.join(unmatched)} match no module of "
                         f"{type(encoder).__name__}; its linear layers are named {', '.join(linear)}")


def inject_peft(encoder: nn.Module, adaptation: Adaptation) -> None:
    """LoRA / IA3 layers injected into `encoder` by peft (base weights frozen, adapters trainable)."""
    import peft
    targets = adaptation.target_list()
    if targets:
        check_targets(encoder, targets)
    restrict = {}
    if adaptation.layers != -1:          # only the top blocks: peft's layers_to_transform
        from morec.models.text import block_layout
        restrict = dict(layers_to_transform=top_block_numbers(encoder, adaptation.layers),
                        layers_pattern=block_layout(encoder)[0].rstrip(".").rpartition(".")[2])
    if adaptation.mode == "lora":
        config = peft.LoraConfig(r=adaptation.r, lora_alpha=adaptation.alpha, lora_dropout=adaptation.dropout,
                                 target_modules=targets, bias="none", **restrict)
    else:
        config = peft.IA3Config(target_modules=targets, feedforward_modules=ia3_feedforward(encoder, targets),
                                **restrict)
    try:
        peft.inject_adapter_in_model(config, encoder)
    except ValueError as err:
        raise InputError(f"--peft {adaptation.mode} on {type(encoder).__name__} "
                         f"(model_type {encoder.config.model_type!r}): {err}; name the layers to adapt "
                         "with --lora_targets, e.g. q_proj,v_proj") from None
    if not any(p.requires_grad for p in encoder.parameters()):
        raise InputError(f"--peft {adaptation.mode} added no trainable parameter to {type(encoder).__name__}")


def ia3_feedforward(encoder: nn.Module, targets: list[str] | None) -> list[str] | None:
    """IA3 scales the inputs of feed-forward layers: peft's defaults for the model_type, kept to
    the given targets (None: peft chooses both)."""
    if targets is None:
        return None
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD
    defaults = FEEDFORWARD.get(encoder.config.model_type, [])
    return [t for t in targets if t in defaults]


# ----------------------------------------------------------------------------- checkpoints

def frozen_encoder_keys(tower: nn.Module, encoder_attr: str = "encoder") -> set[str]:
    """state_dict names (relative to `tower`) of the encoder's frozen parameters and its buffers."""
    encoder = getattr(tower, encoder_attr)
    trained = {name for name, p in encoder.named_parameters() if p.requires_grad}
    return {f"{encoder_attr}.{name}" for name in encoder.state_dict() if name not in trained}


def reloaded_keys(model: nn.Module) -> set[str]:
    """state_dict names of `model` that checkpoints leave out (every submodule's checkpoint_skips)."""
    keys = set()
    for prefix, module in model.named_modules():
        skips = getattr(module, "checkpoint_skips", None)
        if callable(skips):
            keys |= {f"{prefix}.{key}" if prefix else key for key in skips()}
    return keys


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint holds: model.state_dict() less the reloaded frozen tensors."""
    skipped = reloaded_keys(model)
    return {key: value for key, value in model.state_dict().items() if key not in skipped}


def reloaded_digest(model: nn.Module) -> str | None:
    """sha1 of the tensors checkpoints leave out (names, dtypes, shapes, bytes); None if none is."""
    keys = reloaded_keys(model)
    if not keys:
        return None
    state = model.state_dict()
    digest = hashlib.sha1()
    for key in sorted(keys):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

