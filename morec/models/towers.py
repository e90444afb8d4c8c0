"""Item towers: item id -> vector. The one part that differs between IDRec and MoRec.

Every tower maps a LongTensor of item ids (any shape, 0 = padding) to vectors (..., d) through
one path, `ItemTower.encode_items`: it deduplicates the ids when the tower is expensive (an
encoder), so each distinct item is encoded once, encodes them in chunks (`encode_chunk`, the one
method a tower defines) and scatters the vectors back. Training batches and gradient caching
(--inbatch_chunk) go through it; the whole catalogue (evaluation, two-stage feature extraction)
goes through `ItemTower.all_item_vectors`, which hands it the catalogue's ids.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from morec.errors import InputError
from morec.models.sasrec import init_xavier


def mlp(dim: int, layers: int, dropout: float) -> nn.Sequential:
    """`layers` x [Dropout, Linear(d, d), GELU] (SPEC, DSSM towers and two-stage heads)."""
    return nn.Sequential(*[m for _ in range(layers)
                           for m in (nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU())])


def freeze_by_blocks(named: list[tuple[str, nn.Parameter, int | None]], freeze_paras_before: int,
                     trainable_layers: int, after_blocks: tuple[str, ...] = (),
                     never: tuple[str, ...] = ("pooler.",), what: str = "encoder") -> None:
    """Set requires_grad of an encoder's parameters (SPEC "Freezing").

    named: (name, parameter, block number or None) in registration order.
    freeze_paras_before = k: the first k tensors are frozen (the original MoRec semantics).
    trainable_layers = n >= 0: only the top n blocks train, with the parameters named
    `after_blocks` (final norms that follow them); everything else (embeddings, stems) is frozen.
    -1 turns it off. Names starting with `never` (an unused pooler, fixed embeddings) never train."""
    if freeze_paras_before < 0:
        raise InputError(f"freeze_paras_before must be >= 0, got {freeze_paras_before}")
    blocks = sorted({block for _, _, block in named if block is not None})
    if trainable_layers > len(blocks):
        raise InputError(f"trainable_layers {trainable_layers} exceeds the {what}'s {len(blocks)} blocks")
    top = set(blocks[len(blocks) - trainable_layers:]) if trainable_layers > 0 else set()
    for index, (name, param, block) in enumerate(named):
        trainable = index >= freeze_paras_before and not name.startswith(never)
        if trainable_layers >= 0:
            trainable = trainable and (block in top or (bool(top) and name.startswith(after_blocks)))
        param.requires_grad_(trainable)


class ItemTower(nn.Module):
    """Base of every item tower, and the ONE path that encodes items (DESIGN "The item tower").

    Whoever asks -- a training batch, a chunk of the catalogue at evaluation, a gradient-caching
    pass -- calls `encode_items(ids)`: the ids (any shape) are deduplicated (when `deduplicate`),
    padding (id 0) is dropped, the rest is encoded in chunks of `chunk_size` (in `chunk_order`,
    e.g. by text length), and the vectors are scattered back; padding gives zero vectors.
    Towers differ only in `encode_chunk`: how a chunk of real item ids becomes vectors.
    With `grad_cache_chunk` > 0 a training pass encodes through gradient caching
    (`GradCachedEncoding`): the same values and gradients at the memory of one chunk."""

    deduplicate = False          # True for encoders whose forward pass is expensive
    chunk_size = 0               # items per encoder pass (0: all at once)
    grad_cache_chunk = 0         # > 0: gradient caching with chunks of this many items (--inbatch_chunk)
    reads_pixels = False         # True: encode_chunk needs each item's pixels (from the batch)
    dim: int

    def encode_chunk(self, ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) item ids (padding only when not deduplicating) -> (K, d); `pixels` (K, 3, S, S)."""
        raise NotImplementedError

    def chunk_order(self, ids: torch.Tensor) -> torch.Tensor:
        """The order in which `ids` (K,) are cut into chunks (default: as given)."""
        return torch.arange(len(ids), device=ids.device)

    def forward(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        return self.encode_items(ids, images)

    def encode_items(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        """ids (...) -> vectors (..., d) (or (..., *shape) for a tower whose chunks give
        (K, *shape), e.g. every layer's feature); padding (id 0) gives zero vectors.

        deduplicate: each distinct real id is encoded once (repeats share one dropout mask);
        else every slot is encoded (padding too, unless the tower reads pixels, so the dropout
        stream is the one of encoding the whole tensor). `images` = (image_ids (M,) sorted,
        pixels (M, 3, S, S)): the pixels of the batch's items, for towers that read pixels."""
        flat = ids.reshape(-1)
        if self.deduplicate:
            items, inverse = torch.unique(flat, return_inverse=True)
            items = items[items != 0]
            inverse = inverse - int(bool((flat == 0).any()))       # unique is sorted: padding first
        else:
            items, inverse = flat, None
        if self.reads_pixels:                                      # padding has no pixels
            encoded_rows = (items != 0).nonzero(as_tuple=True)[0]
            encoded = self.encode_distinct(items[encoded_rows], self.pixels_of(items[encoded_rows], images))
            vecs = encoded.new_zeros(len(items), *encoded.shape[1:]).index_put((encoded_rows,), encoded)
        else:
            vecs = self.encode_distinct(items, None)
        if inverse is None:                                        # every slot: padding rows zero
            vecs = vecs * (items != 0).unsqueeze(-1).to(vecs.dtype)  # (K, d)
        else:                                                      # back to every slot; padding: zero
            vecs = torch.cat([vecs.new_zeros(1, *vecs.shape[1:]), vecs])[inverse + 1]
        return vecs.view(*ids.shape, *vecs.shape[1:])

    def pixels_of(self, items: torch.Tensor, images) -> torch.Tensor | None:
        """(K, 3, S, S) pixel rows of `items` (K,) from the batch's `images`; None if not read."""
        if not self.reads_pixels:
            return None
        if images is None:
            raise ValueError(f"{type(self).__name__} encodes pixels: pass images=(image_ids, pixels)")
        image_ids, pixels = images
        if len(items) == 0:
            return pixels[:0]
        if len(image_ids) == 0:
            raise ValueError("the batch brings no images but holds real items")
        rows = torch.searchsorted(image_ids, items).clamp_max(len(image_ids) - 1)   # (K,)
        if bool((image_ids[rows] != items).any()):
            raise ValueError("the batch's images miss some of its item ids")
        return pixels[rows]

    def encode_distinct(self, items: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        """(K,) ids -> (K, d), chunk by chunk in `chunk_order`; gradient caching when set and
        gradients are recorded."""
        if self.grad_cache_chunk > 0 and torch.is_grad_enabled() and len(items):
            return GradCachedEncoding.encode(self, items, pixels, self.grad_cache_chunk)
        return self.encode_in_chunks(items, pixels, self.chunk_size)

    def encode_in_chunks(self, items: torch.Tensor, pixels: torch.Tensor | None, size: int) -> torch.Tensor:
        if len(items) == 0:
            return torch.zeros(0, self.dim, device=items.device)
        parts = chunk_parts(self.chunk_order(items), size)
        encoded = [self.encode_chunk(items[part], None if pixels is None else pixels[part]) for part in parts]
        return unpermute(encoded, parts)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with fine_tune_lr / fine_tune_l2_weight (a pretrained encoder)."""
        return []

    @torch.no_grad()
    def all_item_vectors(self, num_items: int, ids: torch.Tensor | None = None,
                         read_pixels=None) -> torch.Tensor:
        """The catalogue's float vectors, the one path of evaluation and feature extraction:
        (N+1, d) of ids 0..num_items (row 0 is padding, zero), or (K, d) of the catalogue rows `ids`
        (K,) (a rank's share; on the device the tower reads its ids from). Eval mode and precision
        are the caller's. The ids go through `encode_items` in one call, so the tower's own
        deduplication, chunk size and chunk order apply. A tower that reads pixels encodes what
        `read_pixels(ids)` yields: (chunk ids (k,), their pixels (k, 3, S, S)) that cut `ids` into
        consecutive chunks (e.g. morec.data.images.ItemChunks through a DataLoader)."""
        if ids is None:
            ids = torch.arange(num_items + 1, device=next(self.parameters()).device)
        if not self.reads_pixels:
            return self.encode_items(ids).float()
        if read_pixels is None:
            raise ValueError(f"{type(self).__name__} encodes pixels: pass read_pixels, the catalogue's "
                             "(ids, pixels) chunks (morec.train.catalogue_vectors reads the run's ItemImages)")
        vecs = []
        for part, pixels in read_pixels(ids):
            part, pixels = part.to(ids.device), pixels.to(ids.device, non_blocking=True)
            vecs.append(self.encode_items(part, (part, pixels)).float())
        return torch.cat(vecs) if vecs else torch.empty(0, self.dim, device=ids.device)


def chunk_parts(order: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`order` (K,) cut into consecutive parts of `size` (0: one part)."""
    return list(order.split(size)) if size > 0 else [order]


def unpermute(encoded: list[torch.Tensor], parts: list[torch.Tensor]) -> torch.Tensor:
    """Rows encoded part by part -> (K, d) in the original order of the ids."""
    order = torch.cat(parts)
    return torch.cat(encoded)[torch.argsort(order)]


class GradCachedEncoding(torch.autograd.Function):
    """Gradient caching (Gao et al., RepL4NLP 2021, "Scaling Deep Contrastive Learning Batch Size
    under Memory Limited Setup", Alg. 1) for one device.

    Forward: encode the distinct items chunk by chunk without keeping activations, remembering
    each chunk's random state. The loss over the whole batch is then computed on these vectors.
    Backward: given d loss / d vectors (K, d), re-encode each chunk with gradients under the same
    random state (the same dropout masks) and back-propagate the cached vector gradients through
    it; the encoder's parameter gradients accumulate chunk by chunk. Loss and gradients equal the
    full-batch computation when each item's vector depends on that item alone; peak memory is
    that of one chunk. A layer that normalises by the batch's statistics (BatchNorm in train mode)
    couples the items of a chunk, so it is refused (refuse_batch_statistics): freeze its statistics
    first (VisionTower freeze_bn_stats). With dropout on, each chunk draws its own masks: the step
    equals a plain step encoded in the same chunks. The re-encoding runs inside backward (a
    reentrant backward, as torch.utils.checkpoint(use_reentrant=True)), so one process only
    (DistributedDataParallel would see parameters become ready several times)."""

    @staticmethod
    def encode(tower: "ItemTower", items: torch.Tensor, pixels: torch.Tensor | None, size: int) -> torch.Tensor:
        refuse_batch_statistics(tower)
        anchor = torch.empty(0, requires_grad=True)            # puts the Function on the graph
        return GradCachedEncoding.apply(anchor, tower, items, pixels, size)

    @staticmethod
    def forward(ctx, anchor, tower, items, pixels, size):
        ctx.tower, ctx.items, ctx.pixels = tower, items, pixels
        ctx.parts = chunk_parts(tower.chunk_order(items), size)
        ctx.states, encoded = [], []
        ctx.autocast = torch.get_autocast_dtype(items.device.type) if torch.is_autocast_enabled(items.device.type) else None
        for part in ctx.parts:
            ctx.states.append(random_state(items.device))
            with torch.no_grad():
                encoded.append(tower.encode_chunk(items[part], None if pixels is None else pixels[part]))
        return unpermute(encoded, ctx.parts)

    @staticmethod
    def backward(ctx, grad_vecs):                              # (K, d)
        tower, items, pixels = ctx.tower, ctx.items, ctx.pixels
        after = random_state(items.device)
        for part, state in zip(ctx.parts, ctx.states):
            set_random_state(state, items.device)
            with torch.enable_grad(), torch.autocast(items.device.type, dtype=ctx.autocast,
                                                      enabled=ctx.autocast is not None):
                vecs = tower.encode_chunk(items[part], None if pixels is None else pixels[part])
            if vecs.requires_grad:
                torch.autograd.backward(vecs, grad_vecs[part].to(vecs.dtype))
        set_random_state(after, items.device)
        return None, None, None, None, None


def batch_statistics_layers(module: nn.Module) -> list[str]:
    """Names of the BatchNorm layers under `module` that normalise by the statistics of the batch
    they are given (train mode, or no running statistics kept)."""
    return [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (m.training or not m.track_running_stats)]


def refuse_batch_statistics(tower: nn.Module) -> None:
    """Gradient caching is exact only when each item's vector depends on that item alone: an
    InputError when a BatchNorm layer of `tower` uses batch statistics (its output would depend on
    how the batch is cut into chunks, and the no-grad pass and the replay would each update its
    running statistics)."""
    layers = batch_statistics_layers(tower)
    if layers:
        raise InputError(
            f"--inbatch_chunk (gradient caching) cannot reproduce BatchNorm's statistics over the whole "
            f"batch ({len(layers)} BatchNorm layers in train mode, e.g. {layers[0]}): add --freeze_bn_stats "
            "true (BatchNorm normalises with its running statistics and never updates them, in the plain "
            "and the cached step alike), or set --inbatch_chunk 0 (--gradient_checkpointing also saves memory)")


def random_state(device: torch.device) -> tuple:
    """The random state dropout draws from: the CPU generator, and the device's on CUDA."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_random_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class IdTower(ItemTower):
    """IDRec: an (N+1) x d embedding table, optionally followed by an MLP (DSSM item tower)."""

    def __init__(self, num_items: int, dim: int, mlp_layers: int = 0, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.mlp = mlp(dim, mlp_layers, dropout)
        init_xavier(self)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        return self.mlp(self.embedding(ids))


class FeatureTower(ItemTower):
    """Two-stage (TS): frozen features of every item, computed once and cached (SPEC), then the
    trainable head GELU(Linear(feat, d)) followed by `dnn_layers` x [Dropout, Linear(d,d), GELU]."""

    def __init__(self, features: torch.Tensor, dim: int, dnn_layers: int = 0, dropout: float = 0.0):
        super().__init__()
        self.dim = dim
        self.register_buffer("features", features, persistent=False)   # (N+1, F), row 0 padding
        self.fc = nn.Linear(features.shape[-1], dim)
        self.mlp = mlp(dim, dnn_layers, dropout)
        init_xavier(self)

    def item_features(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> their cached features (..., F)."""
        return self.features[ids].float()

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        return self.mlp(F.gelu(self.fc(self.item_features(ids))))


class LayerMixFeatureTower(FeatureTower):
    """Layer-cached two-stage (--ts_layers all): the cached pooled vector of every encoder layer,
    (N+1, J, F) with J = num_layers + 1 (embedding output first), mixed by ELMo's scalar mix
    (Peters et al. 2018, eq. 1): h = gamma * sum_j softmax(s)_j h_j, with s (J,) and gamma
    learned (s = 0: every layer weighs 1/J; gamma = 1; their own learning rate, --ts_mix_lr, in
    morec.parts.build_optimizer); then FeatureTower's GELU(Linear) + MLP. The encoder never runs
    in training: only s, gamma and the head train."""

    def __init__(self, features: torch.Tensor, dim: int, dnn_layers: int = 0, dropout: float = 0.0):
        if features.ndim != 3:
            raise ValueError(f"LayerMixFeatureTower needs (N+1, layers, F) features, got shape {tuple(features.shape)}")
        super().__init__(features, dim, dnn_layers, dropout)
        self.layer_scalars = nn.Parameter(torch.zeros(features.shape[1]))     # s (J,)
        self.gamma = nn.Parameter(torch.ones(()))

    def layer_weights(self) -> torch.Tensor:
        """softmax(s): (J,) weights of the layers, summing to 1."""
        return torch.softmax(self.layer_scalars, 0)

    def item_features(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) -> gamma * sum_j w_j h_j (..., F); the padding row (0) stays zero."""
        layers = self.features[ids].float()                                   # (..., J, F)
        return self.gamma * torch.einsum("...jf,j->...f", layers, self.layer_weights())


class FusionTower(ItemTower):
    """ID + modality (SPEC): ADD e = e_id + e_mod; CAT e = GELU(Linear(Dropout([e_id; e_mod]))),
    then `dnn_layers` x [Dropout, Linear, GELU] (the two-stage variant; 0 end to end)."""

    MODES = ("add", "cat")

    def __init__(self, id_tower: IdTower, modality: ItemTower, mode: str, dnn_layers: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"fusion must be one of {self.MODES}, got {mode!r}")
        self.dim, self.mode = id_tower.dim, mode
        self.deduplicate, self.reads_pixels = modality.deduplicate, modality.reads_pixels
        self.chunk_size = modality.chunk_size
        self.id_tower, self.modality = id_tower, modality
        if mode == "cat":
            self.cat = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * self.dim, self.dim), nn.GELU())
        self.mlp = mlp(self.dim, dnn_layers, dropout)
        init_xavier(self.mlp)
        if mode == "cat":
            init_xavier(self.cat)

    def fuse(self, e_id: torch.Tensor, e_mod: torch.Tensor) -> torch.Tensor:
        fused = e_id + e_mod if self.mode == "add" else self.cat(torch.cat([e_id, e_mod.to(e_id.dtype)], -1))
        return self.mlp(fused)

    def encode_chunk(self, ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fuse(self.id_tower.encode_chunk(ids), self.modality.encode_chunk(ids, pixels))

    def chunk_order(self, ids: torch.Tensor) -> torch.Tensor:
        return self.modality.chunk_order(ids)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.modality.encoder_parameters()


class PixelTower(ItemTower):
    """Base of the towers that encode an item's image (VisionTower). The pixels come with the
    batch: `images` = (image_ids (K,) the batch's distinct real item ids, sorted; pixels
    (K, 3, S, S)), decoded by DataLoader workers (morec.data.images.BatchesWithImages). Each
    distinct item is encoded once (deduplicate = True), or once per slot (False, for comparison)."""

    deduplicate, reads_pixels = True, True

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(K, 3, S, S) -> (K, d)."""
        raise NotImplementedError

    def encode_chunk(self, ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode_pixels(pixels)
