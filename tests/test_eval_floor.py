"""The blocked scoring of morec.evaluate.tie_counts (item blocks with each target's score taken
from the same matmul, the finite check by an input bound) against the per-user SPEC definition
(morec.tools.reference.tie_counts_per_user) on inputs with planted ties, history, -inf and NaN."""
import numpy as np
import pytest
import torch

from morec.evaluate import block_shape, scores_surely_finite, tie_counts
from morec.tools.reference import tie_counts_per_user


def planted_case(seed: int, users: int = 37, num_items: int = 50, dim: int = 4, hist: int = 9):
    """Grid vectors (exact dot products); items 11..20 copy items 1..10 (planted ties across
    blocks), some targets in their own history, 0-padded history, item 0 would outscore all."""
    gen = torch.Generator().manual_seed(seed)
    user_vecs = torch.randint(-3, 4, (users, dim), generator=gen).float() / 4            # (U, d)
    item_vecs = torch.randint(-3, 4, (num_items + 1, dim), generator=gen).float() / 4    # (N+1, d)
    item_vecs[11:21] = item_vecs[1:11]
    item_vecs[0] = 100.0
    targets = torch.randint(1, num_items + 1, (users,), generator=gen)                  # (U,)
    history = torch.randint(1, num_items + 1, (users, hist), generator=gen)             # (U, H)
    history[:, :3] *= torch.rand(users, 1, generator=gen) < 0.5                          # 0-padding
    history[::4, -1] = targets[::4]
    return user_vecs, item_vecs, targets, history


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("block_items", [1, 7, 16, 51, None])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_blocked_counts_match_the_per_user_reference(seed, block_items, rows):
    user_vecs, item_vecs, targets, history = planted_case(seed)
    items = block_items or len(item_vecs)
    fast = tie_counts(user_vecs, item_vecs, targets, history, chunk_elems=rows * items, block_items=block_items)
    slow = tie_counts_per_user(user_vecs, item_vecs, targets, history)
    assert (slow[:, 1] > 0).sum() > 5 and (slow[:, 0] > 0).sum() > 5                   # ties really occur
    np.testing.assert_array_equal(fast.numpy(), slow)


def test_block_shape_caps_users_and_items_on_the_cpu_only():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert block_shape(80_001, 2 ** 24, cpu) == (128, 4001)                             # 20 equal blocks
    assert block_shape(5_001, 2 ** 24, cpu) == (128, 2501)
    assert block_shape(4_096, 2 ** 24, cpu) == (128, 4096)
    assert block_shape(31, 31 * 5, cpu) == (5, 31)                                      # chunk_elems still bounds
    assert block_shape(80_001, 2 ** 24, meta) == (2 ** 24 // 80_001, 80_001)            # e.g. CUDA: all items
    assert block_shape(80_001, 10, cpu) == (1, 4001)


def test_minus_inf_item_vector_is_an_error():
    """A -inf item vector gives -inf scores (users with positive entries): an error (SPEC: no
    metric), found by the exact check that the input bound hands over to."""
    user_vecs, item_vecs, targets, history = planted_case(0, users=6)
    item_vecs[5] = float("-inf")
    targets[:] = 3
    with pytest.raises(FloatingPointError, match="score of item 5 for user 0 is"):
        tie_counts(user_vecs.abs() + 0.25, item_vecs, targets, history, block_items=4)


def test_first_non_finite_score_is_named_in_row_major_order():
    """Overflow in item 45 for user 1 and in item 2 for user 3: user 1's comes first, though
    item 2 lies in an earlier item block; then user 3's; then a NaN user vector's first item."""
    user_vecs, item_vecs, targets, history = planted_case(1, users=6)
    user_vecs[:] = 0.0
    user_vecs[1, 2:], user_vecs[3, :2] = 1.0, 1.0
    item_vecs[45] = torch.tensor([0.0, 0.0, 3e38, 3e38])
    item_vecs[2] = torch.tensor([3e38, 3e38, 0.0, 0.0])
    with pytest.raises(FloatingPointError, match="score of item 45 for user 1 is inf"):
        tie_counts(user_vecs, item_vecs, targets, history, block_items=8)
    item_vecs[45] = 1.0
    with pytest.raises(FloatingPointError, match="score of item 2 for user 3 is inf"):
        tie_counts(user_vecs, item_vecs, targets, history, block_items=8)
    item_vecs[2] = 1.0
    user_vecs[5, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="score of item 1 for user 105 is nan"):
        tie_counts(user_vecs, item_vecs, targets, history, block_items=8, first_user=100)


def test_overflow_bound_falls_back_to_the_exact_check_and_counts_stay_exact():
    """Huge but finite scores: the bound fails (the fallback checks every score), the counts are
    still the reference's; a NaN padding row (item 0) is never ranked nor checked."""
    user_vecs, item_vecs, targets, history = planted_case(2, users=9)
    assert scores_surely_finite(user_vecs, item_vecs)
    item_vecs = item_vecs * 2.0 ** 126                          # exact; scores up to 1.9e38, finite
    assert not scores_surely_finite(user_vecs, item_vecs)
    item_vecs[0] = float("nan")
    fast = tie_counts(user_vecs, item_vecs, targets, history, block_items=16)
    slow = tie_counts_per_user(user_vecs, item_vecs, targets, history)
    np.testing.assert_array_equal(fast.numpy(), slow)


def test_scores_are_fp32_under_an_outer_autocast():
    user_vecs, item_vecs, targets, history = planted_case(0)
    user_vecs = user_vecs + 1e-3                                                       # not bf16-exact
    expected = tie_counts(user_vecs, item_vecs, targets, history)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(tie_counts(user_vecs, item_vecs, targets, history), expected)


def test_no_users():
    user_vecs, item_vecs, targets, history = planted_case(0)
    assert tie_counts(user_vecs[:0], item_vecs, targets[:0], history[:0]).shape == (0, 2)
