"""NextItNet user encoder (Yuan et al., "A Simple Convolutional Generative Network for Next Item
Recommendation", WSDM 2019), in the next-item shape of SASRec: one state per position, the state
at t scores the item at t+1 (morec.models.recommender.SequentialRecommender).

A stack of causal dilated 1-D convolutions (kernel 3, d channels) with the dilations 1, 2, 4, 8
repeated `transformer_block` times, grouped in the paper's residual blocks of two dilated
convolutions (as the authors' code, github.com/fajieyuan/nextitnet, `nextitnet_residual_block`):
dilations r and 2r, each convolution followed by LayerNorm and ReLU, plus the block's input:
    y = ReLU(LN(conv_2r(ReLU(LN(conv_r(x))))));  x <- x + y
so the dilations 1,2,4,8 are the blocks (1,2) and (4,8); one repeat sees 1 + 2(1+2+4+8) = 31
positions. Simplified against the paper: no softmax over the catalogue inside the model (the
states are dotted with the item-tower vectors by this codebase's losses), dropout on the input
item vectors (the paper uses none), xavier-normal convolution weights and zero biases.

Left padding: the convolutions pad each row with zeros on the left (causality). The padded
positions of the input and of every block's output are set to zero too, so a real position sees
exactly the zeros it would see without the padding: its state does not depend on how much left
padding the row has. The states at padded positions are zero.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DILATIONS = (1, 4)          # block dilations r; each block convolves with r then 2r: 1, 2, 4, 8
KERNEL = 3


class CausalConv(nn.Module):
    """Dilated 1-D convolution over positions whose output at t sees only inputs <= t."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.left = (KERNEL - 1) * dilation
        self.conv = nn.Conv1d(dim, dim, KERNEL, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, d) -> (B, L, d)."""
        x = F.pad(x.transpose(1, 2), (self.left, 0))                               # (B, d, left + L)
        return self.conv(x).transpose(1, 2)


class ResidualBlock(nn.Module):
    """Yuan et al.'s residual block: x + ReLU(LN(conv_2r(ReLU(LN(conv_r(x))))))."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.conv_1, self.conv_2 = CausalConv(dim, dilation), CausalConv(dim, 2 * dilation)
        self.norm_1, self.norm_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); keep (B, L, 1) 1.0 at real positions, 0.0 at padding."""
        y = F.relu(self.norm_1(self.conv_1(x))) * keep
        return x + F.relu(self.norm_2(self.conv_2(y))) * keep


class NextItNet(nn.Module):
    """Maps the item vectors of a left-padded sequence to one state per position."""

    def __init__(self, dim: int, blocks: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(ResidualBlock(dim, r) for _ in range(blocks) for r in DILATIONS)
        for conv in self.modules():
            if isinstance(conv, nn.Conv1d):
                nn.init.xavier_normal_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, item_vecs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """item_vecs (B, L, d); real (B, L) True at non-padded positions. Returns (B, L, d)."""
        keep = real.unsqueeze(-1).to(item_vecs.dtype)                               # (B, L, 1)
        x = self.dropout(item_vecs) * keep
        for block in self.blocks:
            x = block(x, keep)
        return x
