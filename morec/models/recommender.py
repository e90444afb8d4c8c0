"""Recommender = item tower + user encoder + loss, in the RecBole shape:
`calculate_loss(batch)` for training, `user_vectors(inputs)` and `all_item_vectors()` for the
full ranking. Scores are plain dot products <user, item> (SPEC).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn

from morec.distributed import World, all_reduce_sum, gather_rows, gather_with_grad
from morec.losses import bce_loss, corrections, inbatch_debiased_loss, sasrec_bce_loss, sasrec_inbatch_loss
from morec.models.dssm import DSSMUserTower
from morec.models.gru4rec import GRU4Rec
from morec.models.nextitnet import NextItNet
from morec.models.sasrec import SASRec
from morec.models.towers import ItemTower

LOSSES = ("inbatch", "bce")
SEQUENCE_MODELS = ("sasrec", "gru4rec", "nextitnet")


def sequence_encoder(model: str, dim: int, max_seq_len: int, blocks: int, heads: int,
                     dropout: float) -> nn.Module:
    """The user encoder of a next-item model: (item vectors (B, L, d), real (B, L)) -> states
    (B, L, d). SASRec (Kang & McAuley 2018), GRU4Rec (Hidasi et al. 2016) or NextItNet (Yuan et al.
    2019, `blocks` repeats of the dilations 1, 2, 4, 8)."""
    if model == "sasrec":
        return SASRec(dim, max_seq_len, blocks, heads, dropout)
    if model == "gru4rec":
        return GRU4Rec(dim, dropout)
    if model == "nextitnet":
        return NextItNet(dim, blocks, dropout)
    raise ValueError(f"sequence model must be one of {SEQUENCE_MODELS}, got {model!r}")


class Recommender(nn.Module):
    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.item_tower, self.num_items, self.loss = item_tower, num_items, loss
        self.register_buffer("log_pop", popularity.double().log().float(), persistent=False)  # (N+1,)
        self.world, self.gather_negatives = World(), False
        self.filter_false_negatives = False
        self.fp32_loss = False                # --amp_fp32_loss (loss_precision)

    @contextlib.contextmanager
    def loss_precision(self, device: torch.device) -> Iterator[Callable]:
        """Where the scores and the loss are computed. With fp32_loss (--amp_fp32_loss) autocast is
        off inside, and the function it yields upcasts a tensor to fp32 (None and integer tensors
        pass), so the logits matmul and the loss run in fp32 while the encoders keep the run's
        bf16 / fp16; without it autocast is left as it is and the function passes every tensor."""
        if not self.fp32_loss:
            yield lambda tensor: tensor
            return
        with torch.autocast(device.type, enabled=False):
            yield lambda tensor: tensor.float() if tensor is not None and tensor.is_floating_point() else tensor

    def encode_with_extra(self, ids: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vectors of `ids` (...) and of the batch's extra negatives (K,) (--extra_negatives), in
        one encoding call, so an item in both is encoded once: ((..., d), (K, d) or None)."""
        extra = batch.get("extra_negatives")
        if extra is None:
            return self.encode(ids, batch), None
        vecs = self.encode(torch.cat([ids.reshape(-1), extra]), batch)          # (n + K, d)
        return vecs[:ids.numel()].view(*ids.shape, -1), vecs[ids.numel():]

    def distribute(self, world: World, gather_negatives: bool) -> None:
        """Under DDP: average losses over all ranks' rows; optionally use all ranks' items as
        in-batch negatives (then every rank must pass batches of the same size)."""
        self.world, self.gather_negatives = world, gather_negatives and world.distributed

    def forward(self, batch: dict, total_rows: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss (DistributedDataParallel wraps forward, so it must be the loss)."""
        return self.calculate_loss(batch, total_rows)

    def encode(self, ids: torch.Tensor, batch: dict) -> torch.Tensor:
        """Item vectors of `ids` (...) -> (..., d); a vision batch carries its items' pixels."""
        images = (batch["image_ids"], batch["images"]) if "images" in batch else None
        return self.item_tower.encode_items(ids, images)

    def reduce(self, row_losses: torch.Tensor, total_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the prediction rows of every rank.

        Each rank returns (its row sum) * world / (all ranks' rows): DDP averages gradients over
        ranks, so training follows the mean over the global batch whatever each rank holds.
        total_rows: the rows of a whole optimizer step (all micro-batches, all ranks) when
        gradients are accumulated; the micro-batches' losses then add up to the step's mean."""
        if total_rows is not None:
            return row_losses.sum() * self.world.size / total_rows
        if not self.world.distributed:
            return row_losses.mean()
        rows = all_reduce_sum(torch.tensor(float(len(row_losses)), device=row_losses.device), self.world)
        return row_losses.sum() * self.world.size / rows

    def prediction_rows(self, batch: dict) -> int:
        """Rows of the batch's loss (positions or pairs that predict an item): what a step's
        mean is taken over (SPEC "Training", gradient accumulation)."""
        raise NotImplementedError

    def items_encoded(self, batch: dict) -> int:
        """Item vectors the item tower computes for `batch` in `calculate_loss` (cost accounting,
        morec.cost): its ids are those of "seqs", "items", "negatives" and "extra_negatives", encoded
        in one call; the distinct real ids when the tower deduplicates, else every real slot (padding
        never). Gradient caching encodes them twice; this counts them once."""
        ids = torch.cat([batch[key].reshape(-1) for key in ("seqs", "items", "negatives", "extra_negatives")
                         if key in batch])
        real = ids[ids != 0]
        return int(torch.unique(real).numel()) if self.item_tower.deduplicate else int(real.numel())

    def all_item_vectors(self) -> torch.Tensor:
        """(N+1, d) item vectors for ranking; call under eval mode."""
        return self.item_tower.all_item_vectors(self.num_items)


class SequentialRecommender(Recommender):
    """A next-item user encoder (SASRec, GRU4Rec or NextItNet: `sequence_encoder`) over
    item-tower vectors; the state at position t scores the item at t+1."""

    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor,
                 max_seq_len: int, blocks: int, heads: int, dropout: float, model: str = "sasrec"):
        super().__init__(item_tower, num_items, loss, popularity)
        self.encoder = sequence_encoder(model, item_tower.dim, max_seq_len, blocks, heads, dropout)

    def states(self, input_vecs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_vecs, input_ids != 0)                            # (B, L, d)

    def user_vectors(self, input_ids: torch.Tensor, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L) left-padded windows -> the state at the last position (B, d).
        item_vecs (N+1, d): the catalogue's vectors (eval), looked up instead of re-encoding."""
        input_vecs = item_vecs[input_ids] if item_vecs is not None else self.item_tower.encode_items(input_ids)
        return self.states(input_vecs, input_ids)[:, -1]

    def prediction_rows(self, batch: dict) -> int:
        """Rows of the loss: non-padded input positions of batch["seqs"] (B, L+1)."""
        return int((batch["seqs"][:, :-1] != 0).sum())

    def calculate_loss(self, batch: dict, total_rows: torch.Tensor | None = None) -> torch.Tensor:
        seqs = batch["seqs"]                                                         # (B, L+1)
        if self.loss == "inbatch":
            seq_vecs, extra_vecs = self.encode_with_extra(seqs, batch)                # (B, L+1, d), (K, d)
            states = self.states(seq_vecs[:, :-1], seqs[:, :-1])
            with self.loss_precision(seqs.device) as scored:
                states, seq_vecs, extra_vecs = scored(states), scored(seq_vecs), scored(extra_vecs)
                gathered = None
                if self.gather_negatives:                                            # every rank's items as slots
                    gathered = (gather_with_grad(seq_vecs, self.world), gather_rows(seqs, self.world),
                                self.world.rank * len(seqs))
                extra = None if extra_vecs is None else (extra_vecs, batch["extra_negatives"])
                return self.reduce(sasrec_inbatch_loss(states, seq_vecs, seqs, self.log_pop, "none", gathered,
                                                       extra, self.filter_false_negatives), total_rows)
        negatives = batch["negatives"]                                               # (B, L)
        vecs = self.encode(torch.cat([seqs, negatives], dim=1), batch)              # (B, 2L+1, d)
        width = seqs.shape[1]
        seq_vecs, neg_vecs = vecs[:, :width], vecs[:, width:]
        states = self.states(seq_vecs[:, :-1], seqs[:, :-1])
        with self.loss_precision(seqs.device) as scored:
            return self.reduce(sasrec_bce_loss(scored(states), scored(seq_vecs[:, 1:]), scored(neg_vecs),
                                               seqs[:, :-1], "none"), total_rows)


SASRecRecommender = SequentialRecommender     # the name before GRU4Rec / NextItNet (scripts import it)


class DSSMRecommender(Recommender):
    """Two towers: user-ID MLP and the item tower; trained on every (user, item) train pair."""

    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor,
                 num_users: int, dnn_layers: int, dropout: float):
        super().__init__(item_tower, num_items, loss, popularity)
        self.user_tower = DSSMUserTower(num_users, item_tower.dim, dnn_layers, dropout)

    def user_vectors(self, users: torch.Tensor, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_tower(users)                                                # (B, d)

    def prediction_rows(self, batch: dict) -> int:
        """Rows of the loss: the (user, item) pairs of the batch; item 0 is DDP padding."""
        return int((batch["items"] != 0).sum())

    def items_encoded(self, batch: dict) -> int:
        """As Recommender.items_encoded, over the real rows only (BCE skips DDP padding rows)."""
        real = batch["items"] != 0
        rows = {key: batch[key][real] for key in ("items", "negatives") if key in batch}
        return super().items_encoded({**rows, **({"extra_negatives": batch["extra_negatives"]}
                                                 if "extra_negatives" in batch else {})})

    def calculate_loss(self, batch: dict, total_rows: torch.Tensor | None = None) -> torch.Tensor:
        real = batch["items"] != 0                              # DDP pads batches with item 0
        users, items, user_items = batch["users"][real], batch["items"][real], batch["user_items"][real]
        user_vecs = self.user_tower(users)                                           # (B, d)
        if self.loss == "inbatch":
            slot_items = batch["items"]                                              # (B,) padding slots: 0
            slot_vecs, extra_vecs = self.encode_with_extra(slot_items, batch)        # (B, d), (K, d)
            labels = real.nonzero(as_tuple=True)[0]                                  # each row's own slot
            with self.loss_precision(users.device) as scored:
                user_vecs, slot_vecs, extra_vecs = scored(user_vecs), scored(slot_vecs), scored(extra_vecs)
                if self.gather_negatives:                                            # every rank's items as slots
                    labels = labels + self.world.rank * len(slot_items)
                    slot_vecs, slot_items = gather_with_grad(slot_vecs, self.world), gather_rows(slot_items, self.world)
                rows = torch.arange(len(users), device=users.device)
                slot_log_q, extra = corrections(self.log_pop, slot_items,
                                                None if extra_vecs is None else (extra_vecs, batch["extra_negatives"]))
                return self.reduce(inbatch_debiased_loss(user_vecs, slot_vecs, slot_items, slot_log_q, labels, rows,
                                                         user_items, "none", extra, self.filter_false_negatives),
                                   total_rows)
        negatives = batch["negatives"][real]                                          # (B, K)
        vecs = self.encode(torch.cat([items[:, None], negatives], dim=1), batch)  # (B, 1+K, d)
        with self.loss_precision(users.device) as scored:
            logits = (scored(user_vecs).unsqueeze(1) * scored(vecs)).sum(-1)         # (B, 1+K)
            return self.reduce(bce_loss(logits[:, 0], logits[:, 1:], "none"), total_rows)
