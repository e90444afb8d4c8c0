"""Training losses of SPEC "Losses", as pure tensor functions.

- BCE with sampled negatives (the paper): BCE(sigmoid(<h,e_pos>), 1) + BCE(sigmoid(<h,e_neg>), 0),
  each averaged over the non-padded positions.
- In-batch debiased softmax (Yi et al., RecSys 2019, "Sampling-Bias-Corrected Neural Modeling for
  Large Corpus Item Recommendations", eq. 3): logits <h, e_j> - log p_j over every item slot j of
  the batch, own-sequence items and padding excluded except the label slot, cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reduce_rows(row_losses: torch.Tensor, reduction: str) -> torch.Tensor:
    return row_losses.mean() if reduction == "mean" else row_losses


def bce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """pos_logits (R,), neg_logits (R, K) for R non-padded positions.

    BCE(sigmoid(pos), 1) averaged over rows + BCE(sigmoid(neg), 0) averaged over all negatives;
    reduction "none" gives the (R,) row terms whose mean is that loss."""
    pos = F.binary_cross_entropy_with_logits(pos_logits.float(), torch.ones_like(pos_logits, dtype=torch.float),
                                             reduction="none")
    neg = F.binary_cross_entropy_with_logits(neg_logits.float(), torch.zeros_like(neg_logits, dtype=torch.float),
                                             reduction="none")
    return reduce_rows(pos + neg.mean(-1), reduction)


def inbatch_debiased_loss(states: torch.Tensor, slot_vecs: torch.Tensor, slot_items: torch.Tensor,
                          slot_log_pop: torch.Tensor, label_slots: torch.Tensor,
                          row_users: torch.Tensor, user_items: torch.Tensor,
                          reduction: str = "mean") -> torch.Tensor:
    """Sampled softmax over the batch's item slots with the log-popularity correction.

    states:       (R, d)  one row per prediction (a user state at one position)
    slot_vecs:    (S, d)  item vectors of every slot of the batch
    slot_items:   (S,)    item id of each slot, 0 for padding
    slot_log_pop: (S,)    log p of each slot's item
    label_slots:  (R,)    the slot holding each row's true next item
    row_users:    (R,)    which user (row of `user_items`) each prediction belongs to
    user_items:   (G, H)  items of each user's own sequence; slots holding them are excluded
    reduction:    "mean" over rows, or "none" for the (R,) row losses
    """
    logits = states @ slot_vecs.T - slot_log_pop                                       # (R, S)
    own_item = (user_items.unsqueeze(-1) == slot_items.view(1, 1, -1)).any(1)         # (G, S)
    excluded = own_item[row_users] | (slot_items == 0)                                # (R, S)
    excluded[torch.arange(len(label_slots), device=excluded.device), label_slots] = False
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, label_slots, reduction=reduction)


def sasrec_inbatch_loss(states: torch.Tensor, seq_vecs: torch.Tensor, seqs: torch.Tensor,
                        log_pop: torch.Tensor, reduction: str = "mean",
                        gathered: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
    """In-batch loss for SASRec: the state at position t predicts slot t+1 of its own sequence.

    states: (B, L, d) for inputs seqs[:, :-1]; seq_vecs: (B, L+1, d) vectors of seqs (B, L+1);
    log_pop: (N+1,) log popularity per item id. `gathered` = (all ranks' seq_vecs (W*B, L+1, d),
    all ranks' seqs (W*B, L+1), index of this rank's first sequence) makes every rank's items the
    candidate slots (DDP gather_negatives); by default the slots are this batch's own.
    """
    width = seqs.shape[1]
    users, positions = torch.nonzero(seqs[:, :-1], as_tuple=True)                     # non-padded inputs
    slot_vecs, slot_seqs, first = gathered if gathered is not None else (seq_vecs, seqs, 0)
    slot_items = slot_seqs.reshape(-1)
    return inbatch_debiased_loss(
        states[users, positions], slot_vecs.reshape(len(slot_items), -1), slot_items,
        log_pop[slot_items], (first + users) * width + positions + 1, users, seqs, reduction)


def sasrec_bce_loss(states: torch.Tensor, pos_vecs: torch.Tensor, neg_vecs: torch.Tensor,
                    input_ids: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """BCE for SASRec. states, pos_vecs, neg_vecs: (B, L, d); input_ids (B, L), 0 = padding."""
    mask = input_ids != 0
    pos_logits = (states * pos_vecs).sum(-1)[mask]                                    # (R,)
    neg_logits = (states * neg_vecs).sum(-1)[mask]
    return bce_loss(pos_logits, neg_logits.unsqueeze(-1), reduction)
