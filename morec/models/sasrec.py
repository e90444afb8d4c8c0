"""SASRec user encoder (Kang & McAuley, ICDM 2018) exactly as SPEC "SASRec".

x = Dropout(LayerNorm(item + pos)); then `transformer_block` post-LN blocks
    x = LN(x + Dropout(W_o MHA(x)));  x = LN(x + Dropout(W_2 ReLU(W_1 x)))
with bias-free Q/K/V/O, dropout on the attention probabilities, a causal + key-padding mask and
LayerNorm eps 1e-6. Weights: xavier-normal for Linear and Embedding, zero biases.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding_dim {dim} is not divisible by num_attention_heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); allowed (B, 1, L, L) bool, True where query t may attend to key s."""
        batch, length, dim = x.shape
        def split(t):  # (B, L, d) -> (B, heads, L, d_head)
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            split(self.w_q(x)), split(self.w_k(x)), split(self.w_v(x)), attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0)                     # softmax(QK^T/sqrt(d_head))V
        return self.w_o(out.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention = MultiHeadSelfAttention(dim, heads, dropout)
        self.w_1, self.w_2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.norm_1, self.norm_2 = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = self.norm_1(x + self.dropout(self.attention(x, allowed)))
        return self.norm_2(x + self.dropout(self.w_2(F.relu(self.w_1(x)))))


class SASRec(nn.Module):
    """Maps the item vectors of a left-padded sequence to one state per position."""

    def __init__(self, dim: int, max_seq_len: int, blocks: int, heads: int, dropout: float):
        super().__init__()
        self.position = nn.Embedding(max_seq_len, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout) for _ in range(blocks))
        self.register_buffer("causal", torch.tril(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool)),
                             persistent=False)
        init_xavier(self)

    def forward(self, item_vecs: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """item_vecs (B, L, d); real (B, L) True at non-padded positions. Returns (B, L, d)."""
        length = item_vecs.shape[1]
        x = self.dropout(self.norm(item_vecs + self.position.weight[:length]))
        # causal and key padding; a padded query may see itself, so no row is fully masked (no NaN)
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        allowed = (self.causal[:length, :length] & real[:, None, None, :]) | eye   # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed)
        return x


def init_xavier(module: nn.Module) -> None:
    """Xavier-normal weights for every Linear and Embedding, zero biases (SPEC)."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            nn.init.xavier_normal_(sub.weight)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
