"""Slow, obviously-correct reference implementations, for tests and benchmarks only.

Each function follows the per-row / per-user wording of the SPEC literally, with
Python loops, so that the vectorised code in `morec.losses` and `morec.evaluate` can be checked
against it. Never used in training or evaluation.
"""
from __future__ import annotations

import numpy as np
import torch


def inbatch_loss_rows(states: torch.Tensor, slot_vecs: torch.Tensor, slot_items: list[int],
                      slot_log_pop: torch.Tensor, label_slots: list[int],
                      own_items: list[set[int]]) -> torch.Tensor:
    """SPEC "Losses", in-batch debiased softmax, one prediction row at a time.

    states (R, d); slot_vecs (S, d); slot_items: S item ids (0 = padding); slot_log_pop (S,);
    label_slots: R slot indices of the true next items; own_items: R sets, the items of each
    row's own user sequence. Row r: logits h_r . e_j - log p_j over all slots j; a slot is
    excluded if its item is 0 or in own_items[r], unless j is the label slot; loss =
    cross-entropy with the label slot. Returns the mean over rows.
    """
    losses = []
    for r, label in enumerate(label_slots):
        keep = [j == label or (item != 0 and item not in own_items[r])
                for j, item in enumerate(slot_items)]
        logits = (slot_vecs @ states[r] - slot_log_pop)[torch.tensor(keep)]        # (kept,)
        label_pos = sum(keep[:label])                                               # label's index among kept
        losses.append(torch.logsumexp(logits, 0) - logits[label_pos])
    return torch.stack(losses).mean()


def inbatch_loss_per_row(states: torch.Tensor, seq_vecs: torch.Tensor, seqs: torch.Tensor,
                         log_pop: torch.Tensor) -> torch.Tensor:
    """SPEC "Losses" for SASRec, as `morec.losses.sasrec_inbatch_loss` (same arguments).

    states (B, L, d) for the inputs seqs[:, :-1]; seq_vecs (B, L+1, d); seqs (B, L+1) long,
    0 = padding; log_pop (N+1,). Rows: every (b, t) with seqs[b, t] != 0; its label is the
    slot (b, t+1); the slots are the B*(L+1) entries of seqs; own items = the items of seqs[b].
    """
    batch, width = seqs.shape
    slot_items = seqs.reshape(-1).tolist()                                          # B*(L+1) ids
    seq_lists = seqs.tolist()
    own = [set(row) for row in seq_lists]
    rows, labels, row_own = [], [], []
    for b in range(batch):
        for t in range(width - 1):
            if seq_lists[b][t] != 0:
                rows.append(states[b, t])
                labels.append(b * width + t + 1)
                row_own.append(own[b])
    return inbatch_loss_rows(torch.stack(rows), seq_vecs.reshape(batch * width, -1), slot_items,
                             log_pop[seqs.reshape(-1)], labels, row_own)


def ranks_per_user(user_vecs, item_vecs, targets, history) -> np.ndarray:
    """SPEC "Evaluation", one user at a time with an argsort, as the paper's code ranked.

    user_vecs (U, d); item_vecs (N+1, d), row 0 = padding; targets (U,); history (U, H) item
    ids, 0-padded (numpy arrays or CPU tensors). History items and item 0 are removed from the
    ranking, but the target keeps its own (unmasked) score even when it is in the history.
    rank = 1 + number of remaining items scoring strictly higher than the target: the target is
    put first and the sort is stable, so items tied with it stay behind it. Returns (U,) int64.
    """
    user_vecs, item_vecs = np.asarray(user_vecs), np.asarray(item_vecs)
    targets, history = np.asarray(targets), np.asarray(history)
    ranks = np.empty(len(user_vecs), dtype=np.int64)
    for u in range(len(user_vecs)):
        scores = item_vecs @ user_vecs[u]                                           # (N+1,)
        target = targets[u]
        target_score = scores[target]
        scores[history[u]] = -np.inf
        scores[0] = -np.inf
        candidates = np.concatenate(([target_score], np.delete(scores, target)))   # target first
        order = np.argsort(-candidates, kind="stable")                              # best first
        ranks[u] = 1 + np.flatnonzero(order == 0)[0]
    return ranks


def tie_counts_per_user(user_vecs, item_vecs, targets, history) -> np.ndarray:
    """SPEC "Evaluation", tie counts one user at a time: (U, 2) int64 of h = rankable items
    scoring strictly higher than the target and t = other rankable items scoring the same.
    Rankable: items 1..N outside the history, the target always (not counted as its own tie)."""
    user_vecs, item_vecs = np.asarray(user_vecs), np.asarray(item_vecs)
    targets, history = np.asarray(targets), np.asarray(history)
    counts = np.empty((len(user_vecs), 2), dtype=np.int64)
    for u in range(len(user_vecs)):
        scores = item_vecs @ user_vecs[u]                                           # (N+1,)
        others = [i for i in range(1, len(item_vecs)) if i != targets[u] and i not in set(history[u])]
        counts[u] = [(scores[others] > scores[targets[u]]).sum(), (scores[others] == scores[targets[u]]).sum()]
    return counts


def expected_hit_ndcg(h: int, t: int, k: int) -> tuple[float, float]:
    """SPEC "Evaluation": HR@k and NDCG@k averaged over the equally likely ranks h+1 .. h+t+1."""
    ranks = range(h + 1, h + t + 2)
    return (sum(r <= k for r in ranks) / (t + 1),
            sum(1 / np.log2(r + 1) for r in ranks if r <= k) / (t + 1))
