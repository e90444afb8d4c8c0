"""The most-popular baseline on the leave-one-out split (scripts/popularity_baseline.py, CARD.md).

Every user gets the same item scores, each item's interaction count in all train parts. Same
history masking and rank rule as the models (SPEC "Evaluation"; the (h, t) counts of
morec.evaluate.tie_counts: items with equal counts are ties, broken uniformly at random in
expectation), so its numbers are a floor for them.
"""
from __future__ import annotations

import numpy as np
import torch

from morec.data import SequenceData
from morec.evaluate import metrics_from_counts


def popularity_tie_counts(data: SequenceData, split: str) -> torch.Tensor:
    """(U, 2) int64 (h, t) of each user's target when items are ranked by train count.

    The same numbers as morec.evaluate.tie_counts with one shared score vector, in O(U * L)
    instead of O(U * N): h = items counted more often than the target, t = items counted as often
    (the target excluded), each minus the user's removed items (history, deduplicated) among them.
    """
    counts = data.train_counts()                                                 # (N+1,), [0] = 0
    ranked = np.sort(counts[1:])                                                 # (N,)
    target = data.split_target(split)                                            # (U,)
    c_t = counts[target]                                                         # (U,)
    above = np.searchsorted(ranked, c_t, side="right")
    higher = len(ranked) - above                                                 # (U,)
    equal = above - np.searchsorted(ranked, c_t, side="left")                    # (U,), target included
    removed = np.sort(np.concatenate([data.split_history(split), target[:, None]], 1), 1)  # (U, W+1)
    first = np.ones(removed.shape, dtype=bool)
    first[:, 1:] = removed[:, 1:] != removed[:, :-1]                             # each item once
    counted = first & (removed > 0)                                              # 0 = padding
    c = counts[removed]                                                          # (U, W+1)
    h = higher - ((c > c_t[:, None]) & counted).sum(1)
    t = equal - ((c == c_t[:, None]) & counted).sum(1)                           # the target too
    return torch.from_numpy(np.stack([h, t], 1).astype(np.int64))


def popularity_metrics(data: SequenceData, split: str) -> dict[str, float]:
    """HR@K / NDCG@K of ranking by train counts for 'valid' or 'test' (fractions)."""
    return metrics_from_counts(popularity_tie_counts(data, split))
