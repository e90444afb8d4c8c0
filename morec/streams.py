"""Random streams of a run (SPEC "Training"): each is derived from (seed, epoch, rank, purpose),
so no two purposes ever share a seed, and a resumed run re-derives the same streams.

Batch order, BCE negatives and the extra in-batch negatives (EXTRA) are global streams (rank slot 0 on every rank): every rank draws
what one process with the same global batch draws, then keeps its own rows. Dropout and
DataLoader workers are per-rank streams.
"""
from __future__ import annotations

import numpy as np
import torch

from morec.errors import InputError

ORDER, NEGATIVES, DROPOUT, WORKERS, EXTRA = 1, 2, 3, 4, 5   # purpose codes; never reuse one
STREAMS = 2            # version of this scheme, saved with a mid-epoch checkpoint (1: the old seeds)


def stream_seed(seed: int, epoch: int, rank: int, purpose: int) -> int:
    """A 63-bit torch seed for one stream, from numpy's SeedSequence hash of the four values."""
    if seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
    state = np.random.SeedSequence([seed, epoch, rank, purpose]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def stream_generator(seed: int, epoch: int, rank: int, purpose: int) -> torch.Generator:
    """A CPU torch.Generator seeded for one stream."""
    return torch.Generator().manual_seed(stream_seed(seed, epoch, rank, purpose))
