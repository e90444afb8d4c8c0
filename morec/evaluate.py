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
               history: torch.Tensor, chunk_elems: int = 2 ** 24, first_user: int = 0,
               block_items: int | None = None) -> torch.Tensor:
    """(h, t) of each user's target: rankable items scoring strictly higher, and tied with it.

    user_vecs (U, d); item_vecs (N+1, d), row 0 = padding (never ranked); targets (U,);
    history (U, H) item ids to remove, 0-padded; the target itself stays rankable (the repeat
    rule is applied to the counts afterwards: `apply_repeat_rule`). Scores are taken a block of
    users x items at a time (`block_shape`: at most `chunk_elems` scores, plus one flag buffer of
    that size), so memory does not grow with U; on the CPU the block is small enough to stay in
    the cache for the compares. Returns (U, 2) int64.
    Raises FloatingPointError if any score of items 1..N is NaN or inf (SPEC: an error), naming
    the first in row-major order and its user by index (`first_user` = the index of row 0, e.g.
    in the split's user order).
    """
    if not scores_surely_finite(user_vecs, item_vecs):
        check_scores_finite(user_vecs, item_vecs, chunk_elems, first_user)
    rows, items = block_shape(len(item_vecs), chunk_elems, user_vecs.device, block_items)
    blocks = ItemBlocks(item_vecs, rows, items)
    counts = torch.empty(len(user_vecs), 2, dtype=torch.long, device=user_vecs.device)
    with torch.autocast(user_vecs.device.type, enabled=False):                     # scores in fp32
        for start in range(0, len(user_vecs), rows):
            chunk = slice(start, start + rows)
            counts[chunk] = blocks.counts(user_vecs[chunk].float(), targets[chunk], history[chunk])
    return counts


CPU_BLOCK = (128, 4096)   # users x items per block on the CPU: scores and flags (4 MiB) stay in cache


def block_shape(num_items: int, chunk_elems: int, device: torch.device,
                block_items: int | None = None) -> tuple[int, int]:
    """(users, items) per score block: on the CPU at most `CPU_BLOCK` (2.8x faster than blocks of all
    items at MIND size, whose scores go to memory and back: docs/benchmarks.md "Floors");
    elsewhere all items, as many users as `chunk_elems` allows (fewer, larger kernels)."""
    cpu = device.type == "cpu"
    most = min(num_items, block_items or (CPU_BLOCK[1] if cpu else num_items))
    items = -(-num_items // -(-num_items // most))                    # equal blocks: no padded last one
    return max(1, min(chunk_elems // items, CPU_BLOCK[0] if cpu else chunk_elems)), items


class ItemBlocks:
    """The item vectors in blocks of `items` columns, each followed by `rows` columns for the
    current users' own targets and spare columns, (B, d, items + rows + 1 rounded up to a multiple
    of 16; the last one takes the removed items of other blocks). Each target's score
    is read from the same matmul as the scores it is compared with, so a tie is exact equality of
    one kernel's outputs, as with one matmul over all items."""

    def __init__(self, item_vecs: torch.Tensor, rows: int, items: int):
        self.item_vecs, self.rows, self.items = item_vecs, rows, items
        num_items, dim = item_vecs.shape
        self.widths = [min(items, num_items - first) for first in range(0, num_items, items)]
        self.spare = -(-(items + rows + 1) // 16) * 16 - 1      # a multiple of 16 columns: faster kernels
        self.weights = item_vecs.new_empty(len(self.widths), dim, self.spare + 1, dtype=torch.float32)
        self.weights[:, :, items:] = 0                                               # target and spare columns
        self.weights[-1, :, self.widths[-1]:] = 0                                    # the last block's padding
        for block, width in enumerate(self.widths):
            self.weights[block, :, :width] = item_vecs[block * items: block * items + width].float().T
        self.scores = item_vecs.new_empty(rows, self.spare + 1, dtype=torch.float32)
        self.flags = item_vecs.new_empty(rows * items, dtype=torch.float32)

    def removed_columns(self, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B, C, H + 2): each block's columns of the users' history items, own target and item 0;
        an item outside the block points to the last spare column."""
        removed = torch.cat([history, targets.unsqueeze(1), torch.zeros_like(targets).unsqueeze(1)], 1)
        block_of = removed // self.items                                             # (C, H + 2)
        blocks = torch.arange(len(self.widths), device=removed.device).view(-1, 1, 1)
        return torch.where(block_of == blocks, removed - block_of * self.items, self.spare)

    def counts(self, user_vecs: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(C, 2) counts (h, t) of C <= rows users; user_vecs (C, d) float32."""
        users, own = len(user_vecs), slice(self.items, self.items + len(user_vecs))
        self.weights[:, :, own] = self.item_vecs[targets].float().T                  # (d, C) in every block
        removed = self.removed_columns(targets, history)                             # (B, C, H + 2)
        totals = user_vecs.new_zeros(2, users, dtype=torch.float64)                  # (t, h)
        for block, width in enumerate(self.widths):
            scores = torch.mm(user_vecs, self.weights[block], out=self.scores[:users])  # (C, spare + 1)
            target_scores = scores[:, own].diagonal().unsqueeze(1).clone()           # (C, 1)
            scores.scatter_(1, removed[block], float("-inf"))
            ranked = scores[:, :width]
            # compares into a float buffer (summing a bool tensor is several times slower); float
            # sums are exact below 2^24 items per block
            tied = torch.eq(ranked, target_scores, out=self.flags[: users * width].view(users, width))
            totals[0] += tied.sum(1)
            totals[1] += ranked.gt_(target_scores).sum(1)
        return totals.flip(0).T.long()


SAFE_SCORE = torch.finfo(torch.float32).max / 2


def scores_surely_finite(user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> bool:
    """True when no score of items 1..N can be NaN or inf: both inputs finite, and
    |u . v| <= d * max|u| * max|v| stays below half the float32 maximum (the matmul's rounding
    adds far less than that), so no partial sum overflows. False does not mean a bad score."""
    if len(user_vecs) == 0 or len(item_vecs) <= 1:
        return True
    bound = user_vecs.shape[1] * largest_magnitude(user_vecs) * largest_magnitude(item_vecs[1:])
    return bound < SAFE_SCORE                                                       # NaN, inf: False


def largest_magnitude(vecs: torch.Tensor) -> float:
    """max |x| over the tensor (NaN if it holds one), in one pass."""
    low, high = torch.aminmax(vecs.float())
    return torch.maximum(-low, high).item()


def check_scores_finite(user_vecs: torch.Tensor, item_vecs: torch.Tensor, chunk_elems: int,
                        first_user: int) -> None:
    """Every score of items 1..N, chunk by chunk of `chunk_elems`, through `check_finite`: the
    exact check where `scores_surely_finite` cannot rule out NaN, inf or overflow."""
    num_rows = max(1, chunk_elems // item_vecs.shape[0])
    item_vecs_t = item_vecs.float().T.contiguous()                                    # (d, N+1)
    with torch.autocast(user_vecs.device.type, enabled=False):
        for start in range(0, len(user_vecs), num_rows):
            check_finite(user_vecs[start: start + num_rows].float() @ item_vecs_t, first_user + start)


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
