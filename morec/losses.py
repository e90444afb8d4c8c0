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


def bce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """pos_logits (R,), neg_logits (R, K) for R non-padded positions; each term averaged."""
    pos = F.binary_cross_entropy_with_logits(pos_logits.float(), torch.ones_like(pos_logits, dtype=torch.float))
    neg = F.binary_cross_entropy_with_logits(neg_logits.float(), torch.zeros_like(neg_logits, dtype=torch.float))
    return pos + neg


def inbatch_debiased_loss(states: torch.Tensor, slot_vecs: torch.Tensor, slot_items: torch.Tensor,
                          slot_log_pop: torch.Tensor, label_slots: torch.Tensor,
                          row_users: torch.Tensor, user_items: torch.Tensor) -> torch.Tensor:
    """Sampled softmax over the batch's item slots with the log-popularity correction.

    states:       (R, d)  one row per prediction (a user state at one position)
    slot_vecs:    (S, d)  item vectors of every slot of the batch
    slot_items:   (S,)    item id of each slot, 0 for padding
    slot_log_pop: (S,)    log p of each slot's item
    label_slots:  (R,)    the slot holding each row's true next item
    row_users:    (R,)    which user (row of `user_items`) each prediction belongs to
    user_items:   (G, H)  items of each user's own sequence; slots holding them are excluded
    """
    logits = states @ slot_vecs.T - slot_log_pop                                       # (R, S)
    own_item = (user_items.unsqueeze(-1) == slot_items.view(1, 1, -1)).any(1)         # (G, S)
    excluded = own_item[row_users] | (slot_items == 0)                                # (R, S)
    excluded[torch.arange(len(label_slots), device=excluded.device), label_slots] = False
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).masked_fill(excluded, float("-inf"))
    return F.cross_entropy(logits, label_slots)


def sasrec_inbatch_loss(states: torch.Tensor, seq_vecs: torch.Tensor, seqs: torch.Tensor,
                        log_pop: torch.Tensor) -> torch.Tensor:
    """In-batch loss for SASRec: the state at position t predicts slot t+1 of its own sequence.

    states: (B, L, d) for inputs seqs[:, :-1]; seq_vecs: (B, L+1, d) vectors of seqs (B, L+1);
    log_pop: (N+1,) log popularity per item id.
    """
    batch, width = seqs.shape
    users, positions = torch.nonzero(seqs[:, :-1], as_tuple=True)                     # non-padded inputs
    slot_items = seqs.reshape(-1)
    return inbatch_debiased_loss(
        states[users, positions], seq_vecs.reshape(batch * width, -1), slot_items,
        log_pop[slot_items], users * width + positions + 1, users, seqs)


def sasrec_bce_loss(states: torch.Tensor, pos_vecs: torch.Tensor, neg_vecs: torch.Tensor,
                    input_ids: torch.Tensor) -> torch.Tensor:
    """BCE for SASRec. states, pos_vecs, neg_vecs: (B, L, d); input_ids (B, L), 0 = padding."""
    mask = input_ids != 0
    pos_logits = (states * pos_vecs).sum(-1)[mask]                                    # (R,)
    neg_logits = (states * neg_vecs).sum(-1)[mask]
    return bce_loss(pos_logits, neg_logits.unsqueeze(-1))
