"""Full-ranking evaluation of SPEC "Evaluation", chunked and vectorised.

Each user's vector is scored against every item; the user's history items are removed from the
ranking (the target itself never is); rank = 1 + number of items scoring strictly higher than the
target. HR@K = [rank <= K], NDCG@K = 1 / log2(rank + 1) if rank <= K else 0, averaged over users.
"""
from __future__ import annotations

import torch

KS = (5, 10, 20, 50)


def target_ranks(user_vecs: torch.Tensor, item_vecs: torch.Tensor, targets: torch.Tensor,
                 history: torch.Tensor, chunk_elems: int = 2 ** 24) -> torch.Tensor:
    """Rank of each user's target among all items.

    user_vecs (U, d); item_vecs (N+1, d), row 0 = padding (never ranked); targets (U,);
    history (U, H) item ids to remove, 0-padded. Scores are held for at most `chunk_elems`
    (users x items) at a time, so memory does not grow with U. Returns (U,) int64 ranks >= 1.
    """
    num_rows = max(1, chunk_elems // item_vecs.shape[0])
    item_vecs_t = item_vecs.float().T.contiguous()                                    # (d, N+1)
    ranks = torch.empty(len(user_vecs), dtype=torch.long, device=user_vecs.device)
    for start in range(0, len(user_vecs), num_rows):
        rows = slice(start, start + num_rows)
        scores = user_vecs[rows].float() @ item_vecs_t                              # (C, N+1)
        target_scores = scores.gather(1, targets[rows].unsqueeze(1))                 # (C, 1)
        scores.scatter_(1, history[rows], float("-inf"))
        scores[:, 0] = float("-inf")
        if not torch.isfinite(target_scores).all():
            raise FloatingPointError("NaN or inf in the user or item vectors: the model diverged")
        # in-place compare: float counts are exact below 2^24 items and need no int64 copy
        ranks[rows] = 1 + scores.gt_(target_scores).sum(1).long()
    return ranks


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K and NDCG@K (fractions, not percent) averaged over users."""
    ranks = ranks.double()
    metrics = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"HR@{k}"] = hit.double().mean().item()
        metrics[f"NDCG@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1), 0.0).mean().item()
    return metrics


def cold_start_view(ranks: torch.Tensor, train_counts, targets, below: int = 1,
                    ks: tuple[int, ...] = KS) -> dict:
    """Metrics restricted to the users whose target item has fewer than `below` train interactions.

    SPEC "Evaluation", cold-start view: below = 1 keeps the targets never seen in any train part.
    ranks (U,) as from `target_ranks`; train_counts (N+1,) interactions per item id (array or
    tensor); targets (U,) item ids. Returns {"below": k, "users": n, "metrics": {...} or None when
    no target qualifies}.
    """
    counts = torch.as_tensor(train_counts)[torch.as_tensor(targets).long()]
    mask = (counts < below).to(ranks.device)
    users = int(mask.sum())
    return {"below": below, "users": users, "metrics": metrics_from_ranks(ranks[mask], ks) if users else None}
