"""Full-ranking evaluation (morec.evaluate) against the per-user SPEC definition (morec.reference)."""
import math

import numpy as np
import pytest
import torch

from morec.evaluate import metrics_from_ranks, target_ranks
from morec.reference import ranks_per_user


def grid_vectors(gen: torch.Generator, rows: int, dim: int) -> torch.Tensor:
    """Random vectors on the grid k/4, |k| <= 4: float32 dot products are exact and ties common."""
    return torch.randint(-4, 5, (rows, dim), generator=gen).float() / 4


def random_case(seed: int, users: int = 41, num_items: int = 30, dim: int = 3, hist: int = 7):
    gen = torch.Generator().manual_seed(seed)
    user_vecs = grid_vectors(gen, users, dim)                                   # (U, d)
    item_vecs = grid_vectors(gen, num_items + 1, dim)                           # (N+1, d)
    item_vecs[0] = 100.0                                                        # padding would win
    targets = torch.randint(1, num_items + 1, (users,), generator=gen)          # (U,)
    history = torch.randint(1, num_items + 1, (users, hist), generator=gen)     # (U, H)
    history[:, : hist // 2] *= torch.rand(users, 1, generator=gen) < 0.5         # 0-padding
    history[::3, -1] = targets[::3]                                             # target also in history
    return user_vecs, item_vecs, targets, history


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("chunk_rows", [1, 4, 1000])
def test_target_ranks_matches_per_user_reference(seed, chunk_rows):
    user_vecs, item_vecs, targets, history = random_case(seed)
    chunk_elems = chunk_rows * item_vecs.shape[0]            # 41 users: 41, 11 or 1 chunks
    fast = target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=chunk_elems)
    slow = ranks_per_user(user_vecs, item_vecs, targets, history)
    scores = user_vecs @ item_vecs.T
    tied = (scores == scores.gather(1, targets[:, None])).sum(1) > 1
    assert tied.sum() > 5                                    # ties with the target really occur
    assert fast.dtype == torch.long
    np.testing.assert_array_equal(fast.numpy(), slow)


def test_target_ranks_below_one_row_per_chunk():
    user_vecs, item_vecs, targets, history = random_case(0, users=5)
    fast = target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=3)  # < N+1: 1 row/chunk
    np.testing.assert_array_equal(fast.numpy(), ranks_per_user(user_vecs, item_vecs, targets, history))


def test_known_ranks_history_ties_and_item_zero():
    """d = 1. Item scores for user vector +1: item 0: 9 (padding), 1: 3, 2: 5, 3: 3, 4: 1, 5: 5.

    user 0: target 1, history [2]      -> item 5 (5) is higher, item 3 ties (3): rank 2
    user 1: target 5, history [5, 2]   -> the target stays despite being in history; rank 1
    user 2: target 4, history [0, 0]   -> items 1, 2, 3, 5 are higher: rank 5
    user 3: vector -1, target 4, no history: the target has the top score -1: rank 1
    """
    item_vecs = torch.tensor([[9.0], [3.0], [5.0], [3.0], [1.0], [5.0]])
    user_vecs = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])
    targets = torch.tensor([1, 5, 4, 4])
    history = torch.tensor([[0, 2], [5, 2], [0, 0], [0, 0]])
    expected = [2, 1, 5, 1]
    assert target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=6).tolist() == expected
    assert ranks_per_user(user_vecs, item_vecs, targets, history).tolist() == expected


def test_metrics_from_known_ranks():
    metrics = metrics_from_ranks(torch.tensor([1, 2, 11]))
    assert metrics["HR@10"] == pytest.approx(2 / 3)
    assert metrics["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert metrics["HR@5"] == pytest.approx(2 / 3)
    assert metrics["HR@20"] == pytest.approx(1.0)
    assert metrics["NDCG@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(12)) / 3)
    assert set(metrics) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20, 50)}
    assert metrics_from_ranks(torch.tensor([10, 11]), ks=(10,)) == pytest.approx(
        {"HR@10": 0.5, "NDCG@10": 0.5 / math.log2(11)})
