"""GRU4Rec user encoder (Hidasi et al., "Session-based Recommendations with Recurrent Neural
Networks", ICLR 2016), in the next-item shape of SASRec: one state per position, the state at t
scores the item at t+1 (morec.models.recommender.SequentialRecommender).

x = Dropout(item vectors); h_t = GRU(x_t, h_{t-1}), h_0 = 0, hidden size = embedding_dim; the
state at t is h_t (B, L, d). Simplified against the paper: one GRU layer trained on full
sequences with this codebase's losses (in-batch debiased softmax or BCE), not session-parallel
mini-batches with BPR / TOP1; no output feed-forward layer (as the brief asks: hidden =
embedding_dim, so the states are dotted with the item vectors directly).

Left padding: a GRU reading the padding first would start the real items from another state
than h_0 = 0. Each row is therefore rotated so that its real items come first (right padding),
run from h_0 = 0, and rotated back: a real position's state is exactly the state of the
unpadded sequence, whatever the padding. The states at padded positions are set to zero (the GRU
read them after the real items; no loss uses them).
Weights: xavier-normal input and recurrent matrices, zero biases (as SASRec's Linear layers).
Under AMP the GRU still runs in fp32: rounding would compound along the recurrence, and cuDNN's
bf16 RNN is recent (cuDNN 9.13).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class GRU4Rec(nn.Module):
    """Maps the item vectors of a left-padded sequence to one state per position."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        for name, weight in self.gru.named_parameters():
            (nn.init.xavier_normal_ if name.startswith("weight") else nn.init.zeros_)(weight)

    def forward(self, item_vecs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """item_vecs (B, L, d); real (B, L) True at the non-padded positions, which must be the
        last ones of each row (left padding). Returns (B, L, d), zero at padded positions."""
        pad = (~real).sum(1, keepdim=True)                                          # (B, 1)
        to_front = rotation(pad, item_vecs.shape[1])                                # (B, L)
        x = self.dropout(gather_positions(item_vecs, to_front))                    # real items first
        with torch.autocast(item_vecs.device.type, enabled=False):                 # the recurrence in fp32
            states, _ = self.gru(x.float())
        states = gather_positions(states, rotation(-pad, item_vecs.shape[1]))      # back to left padding
        return states * real.unsqueeze(-1)                                          # padded positions: 0


def rotation(shift: torch.Tensor, length: int) -> torch.Tensor:
    """(B, 1) shifts -> (B, L) source positions (t + shift) mod L: row b rotated left by shift[b]."""
    return (torch.arange(length, device=shift.device) + shift) % length


def gather_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (B, L, d), positions (B, L) -> (B, L, d) with out[b, t] = x[b, positions[b, t]]."""
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
