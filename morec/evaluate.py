"""Full-ranking evaluation of SPEC "Evaluation", chunked and vectorised.

Each user's vector is scored against every item; the user's history items are removed from the
ranking. Per user we count h = rankable items scoring strictly higher than the target and t = other
rankable items scoring exactly the same (`tie_counts`, which keeps the target rankable).

Repeat targets (SPEC "Evaluation": a target that also occurs in the user's history), one rule per
run (`--repeat_targets`, `apply_repeat_rule`):
- ``miss`` (the default, SPEC's rule and the original code's): the target is removed with the rest
  of the history, so it is a miss at every K; its counts become (MISSED, 0).
- ``rank``: no history item is removed at all (repeat-aware evaluation); every target is ranked.
- ``skip``: as ``miss``, and users with a repeat target are left out of the metric.
Keeping the target while removing the rest of the history (the rule before this option) is not
offered: the target is then the only seen item left, and a model that scores seen items high
hits it. Ties are broken uniformly
at random, in expectation: the target's rank is uniform on h+1 .. h+t+1, so

    HR@K   = clip(K - h, 0, t+1) / (t+1)
    NDCG@K = (1/(t+1)) * sum_{r=h+1}^{h+t+1} [r <= K] / log2(r+1)

averaged over users (without ties: rank = 1 + h). `ties="optimistic"` ranks the target first among
its ties (rank 1 + h, what counting only strictly higher items gives), `"pessimistic"` last
(rank 1 + h + t); both are for comparison with other code. A NaN or inf score is an error.
"""
from __future__ import annotations

import torch

from morec.errors import InputError

KS = (5, 10, 20, 50)
TIE_RULES = ("expected", "optimistic", "pessimistic")
REPEAT_RULES = ("miss", "rank", "skip")
MISSED = 2 ** 31 - 1      # h of a target removed from the ranking: below every item, a miss at any K


def tie_counts(user_vecs: torch.Tensor, item_vecs: torch.Tensor, targets: torch.Tensor,
               history: torch.Tensor, chunk_elems: int = 2 ** 24, first_user: int = 0) -> torch.Tensor:
    """(h, t) of each user's target: rankable items scoring strictly higher, and tied with it.

    user_vecs (U, d); item_vecs (N+1, d), row 0 = padding (never ranked); targets (U,);
    history (U, H) item ids to remove, 0-padded; the target itself stays rankable (the repeat
    rule is applied to the counts afterwards: `apply_repeat_rule`). Scores are held for at most `chunk_elems`
    (users x items) at a time (plus one buffer of that size for the tie compare), so memory does
    not grow with U. Returns (U, 2) int64.
    Raises FloatingPointError if any score of items 1..N is NaN or inf (SPEC: an error), naming
    the user by its index (`first_user` = the index of row 0, e.g. in the split's user order).
    """
    num_rows = max(1, chunk_elems // item_vecs.shape[0])
    item_vecs_t = item_vecs.float().T.contiguous()                                    # (d, N+1)
    counts = torch.empty(len(user_vecs), 2, dtype=torch.long, device=user_vecs.device)
    ties = torch.empty(min(num_rows, len(user_vecs)), item_vecs.shape[0], device=user_vecs.device)  # (C, N+1)
    for start in range(0, len(user_vecs), num_rows):
        rows = slice(start, start + num_rows)
        scores = user_vecs[rows].float() @ item_vecs_t                              # (C, N+1)
        check_finite(scores, first_user + start)
        target_scores = scores.gather(1, targets[rows].unsqueeze(1))                 # (C, 1)
        scores.scatter_(1, history[rows], float("-inf"))
        scores.scatter_(1, targets[rows].unsqueeze(1), float("-inf"))                # not its own tie
        scores[:, 0] = float("-inf")
        # compares into float buffers (summing a bool tensor is several times slower); float
        # counts are exact below 2^24 items
        tied = torch.eq(scores, target_scores, out=ties[: len(scores)])
        counts[rows, 1] = tied.sum(1).long()
        counts[rows, 0] = scores.gt_(target_scores).sum(1).long()
    return counts


def check_finite(scores: torch.Tensor, first_user: int) -> None:
    """Raise if a score of items 1..N is NaN or inf; scores (C, N+1) of users first_user..

    One sum is finite exactly when every score is (NaN and inf propagate), unless the sum
    overflows: only then is the element-wise check needed."""
    if torch.isfinite(scores[:, 1:].sum()) or torch.isfinite(scores[:, 1:]).all():
        return
    bad = (~torch.isfinite(scores[:, 1:])).nonzero()[0].tolist()
    raise FloatingPointError(f"score of item {bad[1] + 1} for user {first_user + bad[0]} is "
                             f"{scores[bad[0], bad[1] + 1].item()}: the user or item vectors hold NaN or inf "
                             "(the model diverged); no metric can be computed from this checkpoint")


def target_ranks(user_vecs: torch.Tensor, item_vecs: torch.Tensor, targets: torch.Tensor,
                 history: torch.Tensor, chunk_elems: int = 2 ** 24) -> torch.Tensor:
    """Optimistic rank 1 + h of each user's target, (U,) int64 (ties ignored: see tie_counts)."""
    return 1 + tie_counts(user_vecs, item_vecs, targets, history, chunk_elems)[:, 0]


def as_counts(ranks_or_counts: torch.Tensor) -> torch.Tensor:
    """(U, 2) tie counts (h, t); a (U,) tensor of tie-free ranks r becomes (r - 1, 0)."""
    counts = torch.as_tensor(ranks_or_counts).long()
    if counts.dim() == 1:
        return torch.stack([counts - 1, torch.zeros_like(counts)], 1)
    return counts


def metrics_from_counts(counts: torch.Tensor, ks: tuple[int, ...] = KS,
                        ties: str = "expected") -> dict[str, float]:
    """HR@K and NDCG@K (fractions, not percent) averaged over users, from (U, 2) counts (h, t)."""
    return {name: values.mean().item() for name, values in per_user_metrics(counts, ks, ties).items()}


def per_user_metrics(counts: torch.Tensor, ks: tuple[int, ...] = KS,
                     ties: str = "expected") -> dict[str, torch.Tensor]:
    """Each user's HR@K and NDCG@K, {"HR@K": (U,) float64, ...}, under the tie rule `ties`.

    With the cumulative sums C(n) = sum_{r=1}^{n} 1/log2(r+1) and first = min(h, K),
    last = min(h+t+1, K): HR@K = (last - first)/(t+1) and NDCG@K = (C(last) - C(first))/(t+1),
    which are the SPEC formulas (the ranks h+1 .. h+t+1 that lie within K)."""
    h, t = as_counts(counts).double().unbind(1)                                     # (U,), (U,)
    if ties == "optimistic":
        t = torch.zeros_like(t)
    elif ties == "pessimistic":
        h, t = h + t, torch.zeros_like(t)
    elif ties != "expected":
        raise ValueError(f"ties must be one of {', '.join(TIE_RULES)}, got {ties!r}")
    gains = 1.0 / torch.log2(torch.arange(2, max(ks) + 2, dtype=torch.float64, device=h.device))
    cumulative = torch.cat([gains.new_zeros(1), gains.cumsum(0)])                  # (max K + 1,): C(0..maxK)
    out = {}
    for k in ks:
        first, last = h.clamp(max=k), (h + t + 1).clamp(max=k)
        out[f"HR@{k}"] = (last - first) / (t + 1)
        out[f"NDCG@{k}"] = (cumulative[last.long()] - cumulative[first.long()]) / (t + 1)
    return out


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HR@K and NDCG@K (fractions, not percent) averaged over users, from tie-free ranks (U,)."""
    return metrics_from_counts(as_counts(ranks), ks)


def cold_start_view(counts: torch.Tensor, train_counts, targets, below: int = 1,
                    ks: tuple[int, ...] = KS, ties: str = "expected") -> dict:
    """Metrics restricted to the users whose target item has fewer than `below` train interactions.

    SPEC "Evaluation", cold-start view: below = 1 keeps the targets never seen in any train part.
    counts (U, 2) as from `tie_counts` (or tie-free ranks (U,)); train_counts (N+1,) interactions
    per item id (array or tensor); targets (U,) item ids. Returns {"below": k, "users": n,
    "metrics": {...} or None when no target qualifies}.
    """
    counts = as_counts(counts)
    per_item = torch.as_tensor(train_counts)[torch.as_tensor(targets).long()]
    mask = (per_item < below).to(counts.device)
    users = int(mask.sum())
    return {"below": below, "users": users,
            "metrics": metrics_from_counts(counts[mask], ks, ties) if users else None}


def repeat_mask(targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """(U,) bool: the user's target also occurs in its history (U, H) (0 = padding, never a target)."""
    targets, history = torch.as_tensor(targets), torch.as_tensor(history)
    return (history == targets.unsqueeze(1)).any(1) & (targets > 0)


def ranked_history(history: torch.Tensor, rule: str) -> torch.Tensor:
    """The history items removed from the ranking under the repeat rule: none for ``rank``."""
    return history[:, :0] if rule == "rank" else history


def apply_repeat_rule(counts: torch.Tensor, repeat: torch.Tensor, rule: str) -> torch.Tensor:
    """SPEC "Evaluation": the (U, 2) counts under the repeat rule. ``miss`` and ``skip`` remove
    a repeated target with the rest of the history: its counts become (MISSED, 0), a miss at
    every K (``skip`` then leaves those users out: `kept_users`). ``rank``: unchanged (its
    counts were taken with no history removed: `ranked_history`)."""
    check_repeat_rule(rule)
    if rule == "rank":
        return counts
    counts = as_counts(counts).clone()
    counts[repeat.to(counts.device)] = torch.tensor([MISSED, 0], dtype=counts.dtype, device=counts.device)
    return counts


def kept_users(repeat: torch.Tensor, rule: str) -> torch.Tensor:
    """(U,) bool: the users in the metric (all, except the repeat-target users under ``skip``)."""
    return ~repeat if rule == "skip" else torch.ones_like(repeat)


def rule_metrics(counts: torch.Tensor, repeat: torch.Tensor, rule: str, ks: tuple[int, ...] = KS,
                 ties: str = "expected") -> dict[str, float]:
    """Metrics of the users the repeat rule keeps, from counts already under the rule; refuses a
    ``skip`` that leaves no user."""
    keep = kept_users(repeat, rule).to(as_counts(counts).device)
    if not keep.any():
        raise InputError(f"every one of the {len(keep)} targets also occurs in its user's history, so "
                         "--repeat_targets skip leaves no user to evaluate; use --repeat_targets miss or rank")
    return metrics_from_counts(as_counts(counts)[keep], ks, ties)


def repeat_record(repeat: torch.Tensor, rule: str) -> dict:
    """What a metrics record says about repeat targets: the rule, how many targets (and which
    share of them) were repeats, and how many users the metric averages over."""
    count, users = int(repeat.sum()), len(repeat)
    return {"repeat_targets": rule, "repeat_count": count, "repeat_share": count / max(users, 1),
            "ranked_users": users - count if rule == "skip" else users}


def check_repeat_rule(rule: str) -> None:
    """Refuse an unknown `repeat_targets` option with the allowed ones."""
    if rule not in REPEAT_RULES:
        raise InputError(f"--repeat_targets must be one of {', '.join(REPEAT_RULES)} (SPEC \"Evaluation\"), "
                         f"got {rule!r}")


def check_tie_rule(ties: str) -> None:
    """Refuse an unknown `ties` option (config value) with the allowed ones."""
    if ties not in TIE_RULES:
        raise InputError(f"--ties must be one of {', '.join(TIE_RULES)} (SPEC \"Evaluation\"), got {ties!r}")
