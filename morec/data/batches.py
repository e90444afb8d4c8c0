"""Training batches as tensors, built by indexing (no per-user Python work), and BCE negatives.

One epoch is a seeded permutation of the training examples, cut into batches. Under DDP each
rank takes every world_size-th example of the same permutation (as DistributedSampler does).
"""
from __future__ import annotations

from typing import Iterator

import torch

from morec.errors import InputError


def sample_negatives(exclude: torch.Tensor, shape: tuple[int, ...], num_items: int,
                     generator: torch.Generator, max_rounds: int = 1000) -> torch.Tensor:
    """Uniform negatives from 1..num_items, redrawn while they lie in the row's `exclude` items.

    exclude: (B, H) item ids of each row's user (0 = padding, never drawn anyway).
    shape:   (B, K) -- K negatives per row.   Returns (B, K) int64.
    """
    negatives = torch.randint(1, num_items + 1, shape, generator=generator)
    for _ in range(max_rounds):
        clash = (negatives.unsqueeze(-1) == exclude.unsqueeze(1)).any(-1)          # (B, K)
        n_clash = int(clash.sum())
        if n_clash == 0:
            return negatives
        negatives[clash] = torch.randint(1, num_items + 1, (n_clash,), generator=generator)
    raise InputError(f"could not draw negatives outside the users' histories in {max_rounds} "
                     f"rounds: {num_items} items is too few for these sequences")


def epoch_permutation(n: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The example order of one epoch for this rank (seeded, identical on every rank)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[rank::world_size]


def batches_per_rank(n: int, batch_size: int, world_size: int) -> int:
    """Batches each rank runs in an epoch: the same on every rank (DDP steps in lockstep)."""
    return -(-(-(-n // world_size)) // batch_size)


def batch_index_lists(n: int, batch_size: int, seed: int, rank: int, world_size: int) -> Iterator[torch.Tensor]:
    """This rank's example indices, batch by batch. Under DDP (world_size > 1) every batch is
    padded to `batch_size` with -1 (an empty example), so all ranks' batches have one shape."""
    order = epoch_permutation(n, seed, rank, world_size)
    for start in range(0, batches_per_rank(n, batch_size, world_size) * batch_size, batch_size):
        picked = order[start:start + batch_size]
        if world_size > 1 and len(picked) < batch_size:
            picked = torch.cat([picked, picked.new_full((batch_size - len(picked),), -1)])
        yield picked


def take_rows(table: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """table[picked] with all-zero (padding) rows where picked is -1."""
    rows = table[picked.clamp_min(0)]
    rows[picked < 0] = 0
    return rows


class SequenceBatches:
    """SASRec batches: rows of the (U, L+1) train parts, plus one negative per position for BCE.
    An all-zero row (DDP padding) holds no prediction and no candidate item."""

    def __init__(self, train: torch.Tensor, batch_size: int, num_items: int, with_negatives: bool):
        self.train, self.batch_size = train, batch_size
        self.num_items, self.with_negatives = num_items, with_negatives

    def num_batches(self, world_size: int = 1) -> int:
        return batches_per_rank(len(self.train), self.batch_size, world_size)

    def __len__(self) -> int:
        return self.num_batches()

    def epoch(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(seed + 1)
        for picked in batch_index_lists(len(self.train), self.batch_size, seed, rank, world_size):
            seqs = take_rows(self.train, picked)                                     # (B, L+1)
            batch = {"seqs": seqs}
            if self.with_negatives:
                batch["negatives"] = sample_negatives(
                    seqs, (seqs.shape[0], seqs.shape[1] - 1), self.num_items, generator)  # (B, L)
            yield batch


class PairBatches:
    """DSSM batches: every (user, item) of the train parts, with `neg_num` negatives each.
    A pair with item 0 (DDP padding) is no example."""

    def __init__(self, train: torch.Tensor, batch_size: int, num_items: int, neg_num: int):
        users, positions = torch.nonzero(train, as_tuple=True)
        self.pair_users, self.pair_items = users, train[users, positions]
        self.train, self.batch_size = train, batch_size
        self.num_items, self.neg_num = num_items, neg_num

    def num_batches(self, world_size: int = 1) -> int:
        return batches_per_rank(len(self.pair_users), self.batch_size, world_size)

    def __len__(self) -> int:
        return self.num_batches()

    def epoch(self, seed: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        generator = torch.Generator().manual_seed(seed + 1)
        for picked in batch_index_lists(len(self.pair_users), self.batch_size, seed, rank, world_size):
            users = take_rows(self.pair_users, picked)
            user_items = self.train[users]                                           # (B, L+1)
            batch = {"users": users, "items": take_rows(self.pair_items, picked), "user_items": user_items}
            if self.neg_num > 0:
                batch["negatives"] = sample_negatives(
                    user_items, (len(users), self.neg_num), self.num_items, generator)   # (B, K)
            yield batch
