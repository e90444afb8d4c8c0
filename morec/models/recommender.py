"""Recommender = item tower + user encoder + loss, in the RecBole shape:
`calculate_loss(batch)` for training, `user_vectors(inputs)` and `all_item_vectors()` for the
full ranking. Scores are plain dot products <user, item> (SPEC).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from morec.losses import bce_loss, inbatch_debiased_loss, sasrec_bce_loss, sasrec_inbatch_loss
from morec.models.dssm import DSSMUserTower
from morec.models.sasrec import SASRec
from morec.models.towers import ItemTower

LOSSES = ("inbatch", "bce")


class Recommender(nn.Module):
    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.item_tower, self.num_items, self.loss = item_tower, num_items, loss
        self.register_buffer("log_pop", popularity.double().log().float(), persistent=False)  # (N+1,)

    def all_item_vectors(self) -> torch.Tensor:
        """(N+1, d) item vectors for ranking; call under eval mode."""
        return self.item_tower.all_item_vectors(self.num_items)


class SASRecRecommender(Recommender):
    """SASRec over item-tower vectors; the state at position t scores the item at t+1."""

    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor,
                 max_seq_len: int, blocks: int, heads: int, dropout: float):
        super().__init__(item_tower, num_items, loss, popularity)
        self.encoder = SASRec(item_tower.dim, max_seq_len, blocks, heads, dropout)

    def states(self, input_vecs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_vecs, input_ids != 0)                            # (B, L, d)

    def user_vectors(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, L) left-padded windows -> the state at the last position (B, d)."""
        return self.states(self.item_tower.encode_items(input_ids), input_ids)[:, -1]

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        seqs = batch["seqs"]                                                         # (B, L+1)
        if self.loss == "inbatch":
            seq_vecs = self.item_tower.encode_items(seqs)                           # (B, L+1, d)
            states = self.states(seq_vecs[:, :-1], seqs[:, :-1])
            return sasrec_inbatch_loss(states, seq_vecs, seqs, self.log_pop)
        negatives = batch["negatives"]                                               # (B, L)
        vecs = self.item_tower.encode_items(torch.cat([seqs, negatives], dim=1))    # (B, 2L+1, d)
        width = seqs.shape[1]
        seq_vecs, neg_vecs = vecs[:, :width], vecs[:, width:]
        states = self.states(seq_vecs[:, :-1], seqs[:, :-1])
        return sasrec_bce_loss(states, seq_vecs[:, 1:], neg_vecs, seqs[:, :-1])


class DSSMRecommender(Recommender):
    """Two towers: user-ID MLP and the item tower; trained on every (user, item) train pair."""

    def __init__(self, item_tower: ItemTower, num_items: int, loss: str, popularity: torch.Tensor,
                 num_users: int, dnn_layers: int, dropout: float):
        super().__init__(item_tower, num_items, loss, popularity)
        self.user_tower = DSSMUserTower(num_users, item_tower.dim, dnn_layers, dropout)

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_tower(users)                                                # (B, d)

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        users, items = batch["users"], batch["items"]                                # (B,), (B,)
        user_vecs = self.user_tower(users)
        if self.loss == "inbatch":
            rows = torch.arange(len(users), device=users.device)
            return inbatch_debiased_loss(user_vecs, self.item_tower.encode_items(items), items,
                                         self.log_pop[items], rows, rows, batch["user_items"])
        negatives = batch["negatives"]                                               # (B, K)
        vecs = self.item_tower.encode_items(torch.cat([items[:, None], negatives], dim=1))  # (B, 1+K, d)
        logits = (user_vecs.unsqueeze(1) * vecs).sum(-1)                             # (B, 1+K)
        return bce_loss(logits[:, 0], logits[:, 1:])
