"""Training batches as tensors, built by indexing (no per-user Python work), and BCE negatives.

One epoch is a seeded permutation of the training examples, cut into global batches of
batch_size x world_size examples. Under DDP each rank takes every world_size-th example of each
global batch (as DistributedSampler does). BCE negatives are drawn for the whole global batch,
then split the same way, so W ranks draw exactly what one process with the same global batch
draws (SPEC "Training", DDP). The order and negative streams come from morec.streams.
"""
from __future__ import annotations

from typing import Iterator

import torch

from morec.errors import InputError
from morec.streams import EXTRA, NEGATIVES, ORDER, stream_generator


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


def with_extra_negatives(batches: Iterator[dict], num_extra: int, num_items: int, seed: int,
                         epoch: int) -> Iterator[dict]:
    """Add batch["extra_negatives"] (K,): K items drawn uniformly from 1..num_items (with
    replacement) per step, shared by every row and every rank (a global stream, EXTRA), as
    candidates of the in-batch loss beyond the batch's own items (--extra_negatives)."""
    generator = stream_generator(seed, epoch, 0, EXTRA)
    for batch in batches:
        extra = torch.randint(1, num_items + 1, (num_extra,), generator=generator) if num_extra else None
        yield batch if extra is None else {**batch, "extra_negatives": extra}


def batches_per_rank(n: int, batch_size: int, world_size: int) -> int:
    """Batches each rank runs in an epoch: the same on every rank (DDP steps in lockstep)."""
    return -(-n // (batch_size * world_size))


def global_batch_indices(n: int, batch_size: int, seed: int, epoch: int, world_size: int) -> Iterator[torch.Tensor]:
    """The example indices of each global batch (batch_size x world_size; the last may be
    shorter): consecutive slices of the epoch's permutation, identical on every rank."""
    order = torch.randperm(n, generator=stream_generator(seed, epoch, 0, ORDER))
    yield from order.split(batch_size * world_size)


def rank_share(batch: dict, rank: int, world_size: int, batch_size: int) -> dict:
    """This rank's rows of a global batch: rows rank, rank + W, ... Under DDP (world_size > 1)
    each tensor is padded to `batch_size` rows with zeros (an empty example), so all ranks'
    batches have one shape."""
    if world_size == 1:
        return batch
    share = {}
    for key, value in batch.items():
        rows = value[rank::world_size]                                           # (<= B, ...)
        padding = rows.new_zeros((batch_size - len(rows), *rows.shape[1:]))
        share[key] = torch.cat([rows, padding])                                  # (B, ...)
    return share


class SequenceBatches:
    """SASRec batches: rows of the (U, L+1) train parts, plus one negative per position for BCE.
    An all-zero row (DDP padding) holds no prediction and no candidate item."""

    def __init__(self, train: torch.Tensor, batch_size: int, num_items: int, with_negatives: bool,
                 extra_negatives: int = 0):
        self.train, self.batch_size = train, batch_size
        self.num_items, self.with_negatives = num_items, with_negatives
        self.extra_negatives = extra_negatives

    def num_batches(self, world_size: int = 1) -> int:
        return batches_per_rank(len(self.train), self.batch_size, world_size)

    def __len__(self) -> int:
        return self.num_batches()

    def epoch(self, seed: int, rank: int = 0, world_size: int = 1, epoch: int = 1) -> Iterator[dict]:
        """This rank's batches of one epoch: {"seqs": (B, L+1)} (+ "negatives" (B, L) for BCE,
        + "extra_negatives" (K,) with --extra_negatives)."""
        return with_extra_negatives(self.rank_batches(seed, rank, world_size, epoch), self.extra_negatives,
                                    self.num_items, seed, epoch)

    def rank_batches(self, seed: int, rank: int, world_size: int, epoch: int) -> Iterator[dict]:
        generator = stream_generator(seed, epoch, 0, NEGATIVES)
        for picked in global_batch_indices(len(self.train), self.batch_size, seed, epoch, world_size):
            seqs = self.train[picked]                                                # (G, L+1) global
            batch = {"seqs": seqs}
            if self.with_negatives:
                batch["negatives"] = sample_negatives(
                    seqs, (seqs.shape[0], seqs.shape[1] - 1), self.num_items, generator)  # (G, L)
            yield rank_share(batch, rank, world_size, self.batch_size)


class PairBatches:
    """DSSM batches: every (user, item) of the train parts, with `neg_num` negatives each.
    A pair with item 0 (DDP padding) is no example."""

    def __init__(self, train: torch.Tensor, batch_size: int, num_items: int, neg_num: int,
                 extra_negatives: int = 0):
        users, positions = torch.nonzero(train, as_tuple=True)
        self.pair_users, self.pair_items = users, train[users, positions]
        self.train, self.batch_size = train, batch_size
        self.num_items, self.neg_num, self.extra_negatives = num_items, neg_num, extra_negatives

    def num_batches(self, world_size: int = 1) -> int:
        return batches_per_rank(len(self.pair_users), self.batch_size, world_size)

    def __len__(self) -> int:
        return self.num_batches()

    def epoch(self, seed: int, rank: int = 0, world_size: int = 1, epoch: int = 1) -> Iterator[dict]:
        """This rank's batches of one epoch: users, items (B,), user_items (B, L+1), negatives (B, K)
        (+ "extra_negatives" (K,) with --extra_negatives)."""
        return with_extra_negatives(self.rank_batches(seed, rank, world_size, epoch), self.extra_negatives,
                                    self.num_items, seed, epoch)

    def rank_batches(self, seed: int, rank: int, world_size: int, epoch: int) -> Iterator[dict]:
        generator = stream_generator(seed, epoch, 0, NEGATIVES)
        for picked in global_batch_indices(len(self.pair_users), self.batch_size, seed, epoch, world_size):
            users = self.pair_users[picked]                                          # (G,) global
            user_items = self.train[users]                                           # (G, L+1)
            batch = {"users": users, "items": self.pair_items[picked], "user_items": user_items}
            if self.neg_num > 0:
                batch["negatives"] = sample_negatives(
                    user_items, (len(users), self.neg_num), self.num_items, generator)   # (G, K)
            yield rank_share(batch, rank, world_size, self.batch_size)
