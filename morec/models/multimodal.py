"""The multi-modal item tower: each item encoded by a text tower AND a vision tower,
the two vectors fused into one (MMSR / IISAN-style text + image item representation).

    e_text  = TextTower(title tokens)            (K, d)
    e_image = VisionTower(poster pixels)         (K, d)
    sum:     e = e_text + e_image
    concat:  e = GELU(W_c Dropout([e_text; e_image]) + b_c)           W_c: (d, 2d)
    gate:    g = sigmoid(W_g [e_text; e_image] + b_g)  (K, d), one gate per dimension
             e = g * e_text + (1 - g) * e_image                        W_g: (d, 2d)

It is one more `ItemTower`: it defines `encode_chunk` (both branches on the same chunk of ids,
the pixels come with the batch) and takes the text branch's `chunk_order` (by text length), so
deduplication, chunking, gradient caching and catalogue encoding stay the one path of towers.py.
The ID vector can be added on top with `--fusion add|cat` (a FusionTower around this one).
Two-stage (`--two_stage true`): each branch is a FeatureTower head over its own cached frozen
features (text: `--ts_layers` last or all; vision: the last stage), and the same fusion.
`--mm_cached_branch text|vision`: only that branch is such a head, the other trains end to end
(e.g. frozen pretrained title features with an image encoder trained from scratch).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from morec.models.sasrec import init_xavier
from morec.models.towers import ItemTower


class MultiModalTower(ItemTower):
    """text tower + vision tower -> fused (K, d) vectors; `mode` is sum, concat or gate (see the
    module docstring for the exact forms)."""

    MODES = ("sum", "concat", "gate")
    reads_pixels = True

    def __init__(self, text: ItemTower, vision: ItemTower, mode: str, dim: int, dropout: float = 0.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mm_fusion must be one of {self.MODES}, got {mode!r}")
        if text.dim != dim or vision.dim != dim:
            raise ValueError(f"both branches must give {dim}-d vectors, got {text.dim} and {vision.dim}")
        self.text, self.vision, self.mode, self.dim = text, vision, mode, dim
        end_to_end = text if text.encoder_parameters() or not vision.encoder_parameters() else vision
        self.deduplicate, self.chunk_size = end_to_end.deduplicate, end_to_end.chunk_size
        self.order_by = end_to_end                       # chunks follow the branch whose encoder runs
        self.reads_pixels = vision.reads_pixels          # False for two-stage branches (cached features)
        if mode == "concat":
            self.concat = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * dim, dim), nn.GELU())
            init_xavier(self.concat)
        elif mode == "gate":
            self.gate = nn.Linear(2 * dim, dim)
            init_xavier(self.gate)

    def fuse(self, e_text: torch.Tensor, e_image: torch.Tensor) -> torch.Tensor:
        """(K, d), (K, d) -> (K, d)."""
        e_image = e_image.to(e_text.dtype)
        if self.mode == "sum":
            return e_text + e_image
        both = torch.cat([e_text, e_image], -1)                    # (K, 2d)
        if self.mode == "concat":
            return self.concat(both)
        g = torch.sigmoid(self.gate(both))                         # (K, d) in (0, 1)
        return g * e_text + (1 - g) * e_image

    def encode_chunk(self, ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        """(K,) real item ids and their pixels (K, 3, S, S) -> (K, d)."""
        return self.fuse(self.text.encode_chunk(ids), self.vision.encode_chunk(ids, pixels))

    def chunk_order(self, ids: torch.Tensor) -> torch.Tensor:
        return self.order_by.chunk_order(ids)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Both pretrained encoders; `vision_encoder_parameters` tells the vision ones apart
        (they train with cv_fine_tune_lr)."""
        return self.text.encoder_parameters() + self.vision.encoder_parameters()

    def vision_encoder_parameters(self) -> list[nn.Parameter]:
        return self.vision.encoder_parameters()
