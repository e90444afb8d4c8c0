"""The most-popular baseline on the leave-one-out split (scripts/popularity_baseline.py, CARD.md).

Every user gets the same item scores, each item's interaction count in all train parts. Same
history masking and rank rule as the models (SPEC "Evaluation", via morec.evaluate.tie_counts:
items with equal counts are ties, broken uniformly at random in expectation), so its numbers are a
floor for them.
"""
from __future__ import annotations

import torch

from morec.data import SequenceData
from morec.evaluate import metrics_from_counts, tie_counts


def popularity_metrics(data: SequenceData, split: str) -> dict[str, float]:
    """HR@K / NDCG@K of ranking by train counts for 'valid' or 'test' (fractions)."""
    counts = torch.from_numpy(data.train_counts()).float()[:, None]              # (N+1, 1)
    ones = torch.ones(data.num_users, 1)                                         # (U, 1)
    ties = tie_counts(ones, counts, torch.from_numpy(data.split_target(split)),
                      torch.from_numpy(data.split_history(split)))               # (U, 2): h, t
    return metrics_from_counts(ties)
