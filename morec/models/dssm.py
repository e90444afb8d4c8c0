"""DSSM user tower (Huang et al., CIKM 2013) as SPEC "DSSM": user-ID embedding -> MLP."""
from __future__ import annotations

import torch
import torch.nn as nn

from morec.models.sasrec import init_xavier
from morec.models.towers import mlp


class DSSMUserTower(nn.Module):
    def __init__(self, num_users: int, dim: int, dnn_layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(num_users, dim)
        self.mlp = mlp(dim, dnn_layers, dropout)
        init_xavier(self)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        """users (B,) row indices of the kept users -> (B, d)."""
        return self.mlp(self.embedding(users))
