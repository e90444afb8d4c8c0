"""The vectorised losses of morec.losses against the per-row SPEC definition (morec.tools.reference)."""
import math

import pytest
import torch

from morec.losses import ExtraNegatives, bce_loss, inbatch_debiased_loss, sasrec_bce_loss, sasrec_inbatch_loss
from morec.tools.reference import inbatch_loss_per_row, inbatch_loss_rows


def random_batch(seed: int, batch: int = 7, width: int = 8, num_items: int = 9, dim: int = 5,
                 dtype=torch.float64):
    """Left-padded seqs (B, L+1) from a tiny vocabulary, so items repeat within and across users.

    User 0 and user 1 are padded except for their last 2 slots (one prediction row each).
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, width + 1, (batch,), generator=gen)
    lengths[:2] = 2
    items = torch.randint(1, num_items + 1, (batch, width), generator=gen)
    seqs = torch.where(torch.arange(width) >= width - lengths[:, None], items, 0)  # (B, L+1)
    seqs[2, -3:] = torch.tensor([4, 4, 4])                  # a repeat inside one user's sequence
    seqs[3, -1] = seqs[4, -1] = 4                           # the same label item in other users
    states = torch.randn(batch, width - 1, dim, generator=gen, dtype=dtype, requires_grad=True)
    seq_vecs = torch.randn(batch, width, dim, generator=gen, dtype=dtype, requires_grad=True)
    log_pop = torch.rand(num_items + 1, generator=gen, dtype=dtype).log()
    log_pop[0] = 0.0                                        # p_0 = 1 (SPEC "Data")
    return states, seq_vecs, seqs, log_pop


def value_and_grads(loss_fn, *inputs):
    states, seq_vecs = inputs[0], inputs[1]
    loss = loss_fn(*inputs)
    return (loss.detach(), *torch.autograd.grad(loss, [states, seq_vecs]))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_sasrec_inbatch_matches_per_row_reference(seed, dtype, tol):
    inputs = random_batch(seed, dtype=dtype)
    seqs = inputs[2]
    assert (seqs[:, :-1] != 0).sum() > 10 and (seqs == 4).sum() >= 5   # rows and collisions exist
    fast = value_and_grads(sasrec_inbatch_loss, *inputs)
    slow = value_and_grads(inbatch_loss_per_row, *inputs)
    for got, want in zip(fast, slow):
        torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol)
    assert fast[1][0, :-1].abs().sum() == 0      # user 0's padded positions get no gradient


def test_inbatch_known_answer():
    """Two users, d = 1; every exclusion rule of SPEC is exercised, loss worked out by hand.

    seqs [[0, 1, 2], [0, 3, 2]]; slots 0..5 hold items [0, 1, 2, 0, 3, 2], vectors
    [10, 1, 2, 10, 0, 2]; rows (0, 1) with h = 1, label slot 2 and (1, 1) with h = 3, label slot 5;
    p = (1, 1/4, 1/2, 1/4) for items 0..3.
    Row 0 keeps slot 2 (label, logit 2 + ln 2) and slot 4 (item 3, logit 0 + ln 4); slots 0, 3
    are padding, slot 1 (item 1) and slot 5 (item 2, not the label slot) are own items.
    Row 1 keeps slot 5 (label, 6 + ln 2) and slot 1 (item 1, 3 + ln 4).
    loss = mean(ln(1 + 2 e^-2), ln(1 + 2 e^-3)).
    """
    seqs = torch.tensor([[0, 1, 2], [0, 3, 2]])
    states = torch.tensor([[[100.0], [1.0]], [[100.0], [3.0]]], dtype=torch.float64)
    seq_vecs = torch.tensor([[[10.0], [1.0], [2.0]], [[10.0], [0.0], [2.0]]], dtype=torch.float64)
    log_pop = torch.tensor([1.0, 0.25, 0.5, 0.25], dtype=torch.float64).log()
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(1 + 2 * math.exp(-3))) / 2
    assert sasrec_inbatch_loss(states, seq_vecs, seqs, log_pop).item() == pytest.approx(expected, rel=1e-6)
    assert inbatch_loss_per_row(states, seq_vecs, seqs, log_pop).item() == pytest.approx(expected, rel=1e-12)



def test_extra_negatives_drop_accidental_hits_by_default():
    """The extra columns holding one of the row's own items (its target included) are removed by
    default, as the own-item slots are (TensorFlow's remove_accidental_hits), loss by hand.

    states [[1, 0], [0, 1]]; slots: items (4, 6), vectors [[2, 0], [0, 3]], log q (-0.5, -0.25);
    extras: items (6, 9), vectors [[1, 1], [-1, 0.5]], log q (-1, -2); row 0 (label slot 0) owns
    items 4 and 9, row 1 (label slot 1) owns item 6, its target.
    Row 0 keeps slot 0 (2.5), slot 1 (0.25), extra item 6 (2); drops extra item 9 (its own).
    Row 1 keeps slot 0 (0.5), slot 1 (3.25), extra item 9 (2.5); drops extra item 6 (its target).
    loss = mean(-2.5 + lse(2.5, 0.25, 2), -3.25 + lse(0.5, 3.25, 2.5)) = 0.4834973067694801
    (0.6302558520806913 with the accidental hits kept).
    """
    states = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    slot_vecs = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    extra = ExtraNegatives(torch.tensor([[1.0, 1.0], [-1.0, 0.5]], dtype=torch.float64), torch.tensor([6, 9]),
                           torch.tensor([-1.0, -2.0], dtype=torch.float64))
    args = (states, slot_vecs, torch.tensor([4, 6]), torch.tensor([-0.5, -0.25], dtype=torch.float64),
            torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([[4, 9], [6, 0]]))
    assert inbatch_debiased_loss(*args, extra=extra).item() == pytest.approx(0.4834973067694801, rel=1e-12)
    # the equal-vector rule adds nothing here: no column repeats a target's vector
    assert inbatch_debiased_loss(*args, extra=extra, filter_false_negatives=True).item() == pytest.approx(
        0.4834973067694801, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_dssm_inbatch_matches_per_row_reference(seed):
    """DSSM call of inbatch_debiased_loss: one row per (user, item) pair, slots = the B items."""
    gen = torch.Generator().manual_seed(seed)
    batch, num_items, dim = 12, 8, 4
    user_items = torch.randint(1, num_items + 1, (5, 6), generator=gen)       # (G, L+1)
    user_items[:3, :2] = 0                                                     # left padding
    pair_users = torch.randint(0, 5, (batch,), generator=gen)                 # users repeat
    items = user_items[pair_users, torch.randint(2, 6, (batch,), generator=gen)]  # one of their items
    batch_items = user_items[pair_users]                                       # (B, L+1) as PairBatches
    user_vecs = torch.randn(batch, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    item_vecs = torch.randn(batch, dim, generator=gen, dtype=torch.float64, requires_grad=True)
    log_pop = torch.rand(num_items + 1, generator=gen, dtype=torch.float64).log()
    rows = torch.arange(batch)
    fast = value_and_grads(lambda u, i: inbatch_debiased_loss(
        u, i, items, log_pop[items], rows, rows, batch_items), user_vecs, item_vecs)
    slow = value_and_grads(lambda u, i: inbatch_loss_rows(
        u, i, items.tolist(), log_pop[items], rows.tolist(), [set(r) for r in batch_items.tolist()]),
        user_vecs, item_vecs)
    assert len(set(items.tolist())) < batch                                    # collisions happen
    for got, want in zip(fast, slow):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_bce_loss_known_answer():
    """Positives and negatives are averaged separately: mean over R and over R x K."""
    ln3 = math.log(3)
    one_neg = bce_loss(torch.tensor([0.0, ln3]), torch.tensor([[0.0], [ln3]]))
    # pos: ln 2, -ln(3/4); neg: ln 2, -ln(1/4)
    assert one_neg.item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2
                                           + (math.log(2) + math.log(4)) / 2, rel=1e-6)
    two_neg = bce_loss(torch.tensor([0.0]), torch.tensor([[0.0, ln3]]))
    assert two_neg.item() == pytest.approx(math.log(2) + (math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_sasrec_bce_ignores_padded_positions():
    input_ids = torch.tensor([[0, 0, 5], [0, 2, 3]])                          # (B, L), 3 real positions
    states = torch.full((2, 3, 1), 50.0)                                       # padded: huge logits
    states[0, 2] = states[1, 1] = states[1, 2] = 1.0
    pos_vecs = torch.zeros(2, 3, 1)
    pos_vecs[0, :2] = -1.0                                                     # would add ~50 if counted
    neg_vecs = torch.full((2, 3, 1), math.log(3))
    neg_vecs[0, :2] = -50.0                                                    # would dominate if counted
    # every real position: pos logit 0 -> ln 2; neg logit ln 3 -> ln 4
    assert sasrec_bce_loss(states, pos_vecs, neg_vecs, input_ids).item() == pytest.approx(
        math.log(2) + math.log(4), rel=1e-6)


def inbatch_loss_before_masks_were_cheapened(states, slot_vecs, slot_items, slot_log_pop, label_slots,
                                             row_users, user_items, extra=None, filter_false_negatives=False):
    """The earlier formulation of inbatch_debiased_loss: a (G, H, C) compare for the own items,
    out-of-place subtraction and masked_fill. The current one must give the same bits."""
    logits = states @ slot_vecs.T - slot_log_pop
    own_item = (user_items.unsqueeze(-1) == slot_items.view(1, 1, -1)).any(1)
    excluded = own_item[row_users] | (slot_items == 0)
    if extra is not None:
        logits = torch.cat([logits, states @ extra.vecs.T - extra.log_q], 1)
        excluded = torch.cat([excluded, (user_items.unsqueeze(-1) == extra.items.view(1, 1, -1)).any(1)[row_users]], 1)
    if filter_false_negatives:
        from morec.losses import same_vector_as_label
        vecs = slot_vecs if extra is None else torch.cat([slot_vecs, extra.vecs])
        excluded |= same_vector_as_label(vecs, label_slots)
    excluded[torch.arange(len(label_slots)), label_slots] = False
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).masked_fill(excluded, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, label_slots, reduction="none")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_extra,filter_duplicates", [(False, False), (True, False), (True, True)])
def test_cheaper_masks_give_the_same_bits(seed, with_extra, filter_duplicates):
    """Random batches with repeated items, padding slots, extra negatives and duplicate vectors:
    row losses and gradients equal bit for bit to the earlier formulation's."""
    gen = torch.Generator().manual_seed(seed)
    rows, num_slots, hist, num_items, dim = 40, 30, 6, 8, 4
    user_items = torch.randint(0, num_items + 1, (10, hist), generator=gen)         # 0: padding
    slot_items = torch.randint(0, num_items + 1, (num_slots,), generator=gen)
    row_users = torch.randint(0, 10, (rows,), generator=gen)
    label_slots = torch.randint(0, num_slots, (rows,), generator=gen)
    states = torch.randn(rows, dim, generator=gen, requires_grad=True)
    base = torch.randn(num_items + 1, dim, generator=gen)
    slot_vecs = base[slot_items].clone().requires_grad_(True)                       # same item, same vector
    log_pop = torch.rand(num_items + 1, generator=gen).log()
    extra = None
    if with_extra:
        extra_items = torch.randint(1, num_items + 1, (5,), generator=gen)
        extra = ExtraNegatives(base[extra_items].clone().requires_grad_(True), extra_items, log_pop[extra_items])
    assert (slot_items == 0).any() and len(torch.unique(slot_items)) < num_slots
    args = (states, slot_vecs, slot_items, log_pop[slot_items], label_slots, row_users, user_items)
    leaves = [states, slot_vecs] + ([extra.vecs] if extra is not None else [])
    weights = torch.rand(rows, generator=gen)                                       # as a weighted reduction
    got = inbatch_debiased_loss(*args, "none", extra, filter_duplicates)
    want = inbatch_loss_before_masks_were_cheapened(*args, extra, filter_duplicates)
    assert torch.isfinite(got).all() and torch.equal(got, want)
    for a, b in zip(torch.autograd.grad((got * weights).sum(), leaves),
                    torch.autograd.grad((want * weights).sum(), leaves)):
        assert torch.equal(a, b)


def test_holds_any_matches_the_broadcast_compare():
    from morec.losses import holds_any
    gen = torch.Generator().manual_seed(0)
    user_items = torch.randint(0, 50, (7, 9), generator=gen)
    items = torch.randint(0, 60, (33,), generator=gen)
    want = (user_items.unsqueeze(-1) == items.view(1, 1, -1)).any(1)
    assert want.any() and not want.all()
    assert torch.equal(holds_any(user_items, items), want)
