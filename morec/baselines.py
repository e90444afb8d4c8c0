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
from morec.evaluate import apply_repeat_rule, ranked_history, rule_metrics


def popularity_tie_counts(data: SequenceData, split: str, repeat_targets: str = "miss") -> torch.Tensor:
    """(U, 2) int64 (h, t) of each user's target when items are ranked by train count, under the
    repeat rule (morec.evaluate.apply_repeat_rule; `rank` removes no history).

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
    history = ranked_history(torch.from_numpy(data.split_history(split)), repeat_targets).numpy()
    removed = np.sort(np.concatenate([history, target[:, None]], 1), 1)         # (U, W+1)
    first = np.ones(removed.shape, dtype=bool)
    first[:, 1:] = removed[:, 1:] != removed[:, :-1]                             # each item once
    counted = first & (removed > 0)                                              # 0 = padding
    c = counts[removed]                                                          # (U, W+1)
    h = higher - ((c > c_t[:, None]) & counted).sum(1)
    t = equal - ((c == c_t[:, None]) & counted).sum(1)                           # the target too
    counts = torch.from_numpy(np.stack([h, t], 1).astype(np.int64))
    return apply_repeat_rule(counts, torch.from_numpy(data.split_repeats(split)), repeat_targets)


def popularity_metrics(data: SequenceData, split: str, repeat_targets: str = "miss") -> dict[str, float]:
    """HR@K / NDCG@K of ranking by train counts for 'valid' or 'test' (fractions), under the
    repeat rule `repeat_targets` (SPEC "Evaluation")."""
    counts = popularity_tie_counts(data, split, repeat_targets)
    return rule_metrics(counts, torch.from_numpy(data.split_repeats(split)), repeat_targets)
