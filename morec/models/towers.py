"""Item towers: item id -> vector. The one part that differs between IDRec and MoRec.

Every tower maps a LongTensor of item ids (any shape, 0 = padding) to vectors (..., d).
`encode_items` deduplicates the ids of a batch first when the tower is expensive (an encoder),
so each distinct item is encoded once and padding is never encoded.
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
    deduplicate = False          # True for encoders whose forward pass is expensive
    dim: int

    def encode_items(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        """ids (...) -> vectors (..., d); distinct non-padding ids encoded once if deduplicating.
        `images`: (image_ids, pixels) of the batch's items, for towers that read pixels."""
        if not self.deduplicate:
            return self(ids)
        unique, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        vecs = torch.zeros(len(unique), self.dim, device=ids.device)
        real = unique != 0
        encoded = self(unique[real])
        vecs = vecs.to(encoded.dtype).index_put((real.nonzero(as_tuple=True)[0],), encoded)
        return vecs[inverse].view(*ids.shape, self.dim)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with fine_tune_lr / fine_tune_l2_weight (a pretrained encoder)."""
        return []

    @torch.no_grad()
    def all_item_vectors(self, num_items: int, batch_size: int = 4096) -> torch.Tensor:
        """(N+1, d) vectors of ids 0..N (row 0 is padding), in eval mode by the caller."""
        device = next(self.parameters()).device
        ids = torch.arange(num_items + 1, device=device)
        return torch.cat([self(chunk) for chunk in ids.split(batch_size)])


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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.gelu(self.fc(self.item_features(ids))))


class LayerMixFeatureTower(FeatureTower):
    """Layer-cached two-stage (--ts_layers all): the cached pooled vector of every encoder layer,
    (N+1, J, F) with J = num_layers + 1 (embedding output first), mixed by ELMo's scalar mix
    (Peters et al. 2018, eq. 1): h = gamma * sum_j softmax(s)_j h_j, with s (J,) and gamma
    learned (s = 0: every layer weighs 1/J; gamma = 1; their own learning rate, --ts_mix_lr, in
    morec.train.build_optimizer); then FeatureTower's GELU(Linear) + MLP. The encoder never runs
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
        self.deduplicate = modality.deduplicate
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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.id_tower(ids), self.modality(ids))

    def encode_items(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        if images is None:
            return super().encode_items(ids)
        return self.fuse(self.id_tower(ids), self.modality.encode_items(ids, images))

    @torch.no_grad()
    def all_item_vectors(self, num_items: int, batch_size: int = 4096) -> torch.Tensor:
        """The modality tower's own (batched) all_item_vectors, fused with every ID vector."""
        ids = torch.arange(num_items + 1, device=self.id_tower.embedding.weight.device)
        return self.fuse(self.id_tower(ids), self.modality.all_item_vectors(num_items))

    def encoder_parameters(self) -> list[nn.Parameter]:
        return self.modality.encoder_parameters()


class PixelTower(ItemTower):
    """Base of the towers that encode an item's image (VisionTower). The pixels come with the
    batch: `images` = (image_ids (K,) the batch's distinct real item ids, sorted; pixels
    (K, 3, S, S)), decoded by DataLoader workers (morec.data.images.BatchesWithImages). Each
    distinct item is encoded once (deduplicate = True), or once per slot (False, for comparison)."""

    deduplicate = True

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(K, 3, S, S) -> (K, d)."""
        raise NotImplementedError

    def forward(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        return self.encode_items(ids, images)

    def encode_items(self, ids: torch.Tensor, images=None) -> torch.Tensor:
        """ids (...) -> (..., d); padding (id 0) gives zero vectors."""
        if images is None:
            raise ValueError(f"{type(self).__name__} encodes pixels: pass images=(image_ids, pixels)")
        image_ids, pixels = images
        flat, real = ids.reshape(-1), ids.reshape(-1) != 0
        if len(image_ids) == 0:
            if bool(real.any()):
                raise ValueError("the batch brings no images but holds real items")
            return self.encode_pixels(pixels).new_zeros(*ids.shape, self.dim)
        slot = torch.searchsorted(image_ids, flat).clamp_max(len(image_ids) - 1)   # (B*,) image row
        if bool((image_ids[slot] != flat)[real].any()):
            raise ValueError("the batch's images miss some of its item ids")
        if self.deduplicate:
            vecs = self.encode_pixels(pixels)[slot]                                # (B*, d)
        else:
            encoded = self.encode_pixels(pixels[slot[real]])
            vecs = encoded.new_zeros(len(flat), self.dim).index_put((real.nonzero(as_tuple=True)[0],), encoded)
        vecs = vecs * real.unsqueeze(-1).to(vecs.dtype)
        return vecs.view(*ids.shape, self.dim)

    def all_item_vectors(self, num_items: int, batch_size: int = 4096) -> torch.Tensor:
        raise ValueError(f"{type(self).__name__} needs the items' pixels: use "
                         "morec.train.catalogue_vectors with the run's ItemImages")
