"""Layer-cached partial fine-tuning of a text tower (`--cache_frozen_layers true`).

With only the top k of an encoder's L transformer blocks trained (`--trainable_layers k`, or
`--peft ... --peft_layers k`), the embeddings and blocks 0 .. L-k-1 compute the same token states
for an item at every step (TCF, Li et al. 2023; IISAN, Fu et al. 2024). These states -- the input
of block L-k, (W, H) per item and attribute -- are computed once (morec.layer_cache, stored on
disk) and training runs only the top k blocks + pooling + projection on them:

    item id -> cached states (K, W, H) -> blocks L-k .. L-1 (+ final norm) -> pool -> GELU(Linear)

The model's own forward runs, so its attention mask, causal mask, position ids and rotary
embeddings are built as usual: the frozen blocks are swapped, for the length of one call, for a
stand-in that returns the cached states (`top_blocks_only`); the embedding layer still runs on
the token ids (cheap) and its output is dropped. This works for any model whose blocks form one
ModuleList and return the hidden states (BERT, RoBERTa, OPT, GPT-2, Llama, Qwen2, ... in
transformers 5).

The cache is taken in eval mode (no dropout). The uncached path applies dropout in the frozen
blocks when the encoder's dropout is on, the cached path does not: the two agree exactly only
with `--encoder_dropout 0` (tests/test_layer_cache.py checks loss, gradients and catalogue vectors).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from morec.errors import InputError
from morec.models.text import TextTower, TokenTower, block_layout, pool_hidden


def encoder_blocks(encoder: nn.Module) -> nn.ModuleList:
    """The ModuleList of the encoder's transformer blocks (morec.models.text.block_layout)."""
    prefix, _ = block_layout(encoder)
    return encoder.get_submodule(prefix.rstrip("."))


def first_trained_block(encoder: nn.Module, top: int) -> int:
    """L - top: the first of the `top` trained blocks; refused unless 1 <= top < L."""
    num_blocks = len(encoder_blocks(encoder))
    if getattr(encoder.config, "layerdrop", 0) > 0:       # OPT's LayerDrop would skip the stand-in too
        raise InputError(f"--cache_frozen_layers: the encoder's config sets layerdrop {encoder.config.layerdrop} "
                         "(whole blocks skipped at random in training); the cached blocks cannot be skipped at "
                         "random: set it to 0 in its config.json, or --cache_frozen_layers false")
    if not 1 <= top < num_blocks:
        raise InputError(f"--cache_frozen_layers caches the input of the top {top} blocks, but the encoder has "
                         f"{num_blocks} blocks: the top blocks must be 1 .. {num_blocks - 1} (with every block "
                         "trained nothing is frozen to cache; use --cache_frozen_layers false)")
    return num_blocks - top


class CachedStates(nn.Module):
    """Stands in for the frozen blocks: returns the cached states whatever it is given."""

    def __init__(self, states: torch.Tensor):
        super().__init__()
        self.states = states                                         # (K, W, H)
        self.calls = 0

    def forward(self, hidden_states, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        return self.states


@contextmanager
def top_blocks_only(encoder: nn.Module, first: int, states: torch.Tensor):
    """Within the block, `encoder(...)` runs blocks `first` .. L-1 on `states` (K, W, H): the
    blocks below are swapped for CachedStates. The swap happens only around the call, so
    parameter names, state_dict and optimizer are untouched."""
    blocks = encoder_blocks(encoder)
    frozen = [blocks[i] for i in range(first)]
    stand_in = CachedStates(states)
    try:
        for i in range(first):
            blocks[i] = stand_in
        yield
        if stand_in.calls != first:          # a model that skipped or bypassed its blocks: never a silent result
            raise RuntimeError(f"{type(encoder).__name__} ran {stand_in.calls} of its {first} cached blocks")
    finally:
        for i, block in enumerate(frozen):
            blocks[i] = block


class _Captured(Exception):
    """Stops a forward pass once the input of the first trained block is captured."""


@torch.no_grad()
def frozen_block_output(encoder: nn.Module, first: int, input_ids: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:
    """(K, W) tokens -> (K, W, H): the hidden states entering block `first`, i.e. what the
    embeddings and blocks 0 .. first-1 compute (in the encoder's current mode; the cache calls it in
    eval mode). The blocks from `first` on do not run."""
    captured = {}

    def capture(module, args, kwargs):
        captured["states"] = args[0] if args else kwargs["hidden_states"]
        raise _Captured

    handle = encoder_blocks(encoder)[first].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        encoder(input_ids=input_ids, attention_mask=mask)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "states" not in captured:
        raise RuntimeError(f"block {first} of {type(encoder).__name__} did not run")
    return captured["states"]


class FrozenBlockStates(TokenTower):
    """What the layer cache holds for one attribute: ids (K,) -> the states entering block `first`
    (K, width, H), float32 on the ids' device, padded with zeros beyond each chunk's longest text.
    Through the item towers' one catalogue path (ItemTower.all_item_vectors): chunks of
    `chunk_size` items by text length, each cut to its longest text; padding ids give zeros."""

    def __init__(self, encoder: nn.Module, first: int, tokens: tuple[torch.Tensor, torch.Tensor],
                 width: int, chunk_size: int = 256):
        super().__init__()
        self.encoder, self.first, self.width, self.chunk_size = encoder, first, width, chunk_size
        self.register_tokens([tokens])

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        input_ids, mask = self.tokens(0, ids)
        device = next(self.encoder.parameters()).device
        states = frozen_block_output(self.encoder, self.first, input_ids.to(device), mask.to(device))
        return F.pad(states.float(), (0, 0, 0, self.width - states.shape[1])).to(ids.device)   # (K, width, H)


class CachedTextTower(TextTower):
    """TextTower whose frozen blocks are read from the layer cache (see the module docstring).

    `states`: per attribute the cached input of block L-top, (N+1, W_a, H) (memory-mapped on the
    CPU; float16 / bfloat16 / float32); `top`: the number of top blocks that run. Parameters,
    freezing, adapters and checkpoints are TextTower's; only encode_chunk differs."""

    def __init__(self, encoder: nn.Module, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                 states: list[torch.Tensor], top: int, dim: int, **tower_options):
        super().__init__(encoder, tokens, dim, **tower_options)
        self.first = first_trained_block(encoder, top)
        if len(states) != len(tokens):
            raise ValueError(f"{len(states)} cached state arrays for {len(tokens)} attributes")
        self.states = states                    # not buffers: they stay on the CPU, memory-mapped

    def cached_states(self, attribute: int, ids: torch.Tensor, width: int) -> torch.Tensor:
        """(K, width, H) float32 states of `ids` (K,) on the ids' device."""
        rows = self.states[attribute][ids.cpu()][:, :width]
        if rows.dtype == torch.int16:                    # bfloat16 kept as its bits (numpy has no bf16)
            rows = rows.view(torch.bfloat16)
        return rows.to(ids.device, non_blocking=True).float()

    def pooled_from_cache(self, attribute: int, ids: torch.Tensor) -> torch.Tensor:
        input_ids, mask = self.tokens(attribute, ids)                           # (K, w) each
        states = self.cached_states(attribute, ids, input_ids.shape[1])         # (K, w, H)
        with top_blocks_only(self.encoder, self.first, states):
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool_hidden(hidden, mask, self.pooling)                          # (K, H)

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        """(K,) ids -> (K, d), as TextTower.encode_chunk but from the cached states."""
        vecs = sum(F.gelu(self.fc(self.pooled_from_cache(a, ids))) for a in range(self.num_attributes))
        return vecs / self.num_attributes
