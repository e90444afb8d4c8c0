"""Filtering, re-indexing and the leave-one-out split of SPEC "Data".

Every kept sequence is cut to its last L+3 items and stored left-padded in one (U, L+3) array
``full``; each split is then a column slice of it:

    train part     s[:-2]           = full[:, :-2]        (U, L+1)
    valid input    s[:-2][-L:]      = full[:, -(L+2):-2]  (U, L)   target s[-2] = full[:, -2]
    test input     s[:-1][-L:]      = full[:, -(L+1):-1]  (U, L)   target s[-1] = full[:, -1]
    history masked at ranking: valid -> train part, test -> s[:-1] = full[:, :-1]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morec.data.files import ItemRow, UserIds, UserRow, read_items, read_user_ids, read_users, user_ids_from_rows
from morec.errors import InputError


COUNT_ROWS = 1 << 16                   # train_counts counts this many rows at a time


@dataclass
class SequenceData:
    items: list[ItemRow | None]      # index = item id; 0 is padding (None)
    user_names: list[str]
    full: np.ndarray                 # (U, L+3) int64, left-padded with 0
    max_seq_len: int
    train_users: np.ndarray | None = None   # rows whose train part trains (None: all; train_user_fraction)

    @property
    def num_items(self) -> int:
        return len(self.items) - 1

    @property
    def num_users(self) -> int:
        return len(self.user_names)

    @property
    def train(self) -> np.ndarray:
        """(U', L+1) train parts of the training users (every user unless `train_users` is set)."""
        return self.full[:, :-2] if self.train_users is None else self.full[self.train_users, :-2]

    def split_input(self, split: str) -> np.ndarray:
        """(U, L) input window of 'valid' or 'test'."""
        L = self.max_seq_len
        return self.full[:, -(L + 2):-2] if split == "valid" else self.full[:, -(L + 1):-1]

    def split_target(self, split: str) -> np.ndarray:
        return self.full[:, -2] if split == "valid" else self.full[:, -1]

    def split_history(self, split: str) -> np.ndarray:
        """Items removed from the ranking of each user (padded with 0, which is never ranked)."""
        return self.full[:, :-2] if split == "valid" else self.full[:, :-1]

    def split_repeats(self, split: str) -> np.ndarray:
        """(U,) bool: the split's target also occurs in the user's history (a repeat target, SPEC
        "Evaluation"; the repeat rule decides how it counts)."""
        target = self.split_target(split)
        return (self.split_history(split) == target[:, None]).any(1) & (target > 0)

    def train_counts(self) -> np.ndarray:
        """(N+1,) interactions of each item in all train parts; entry 0 counts nothing."""
        train, counts = self.train, np.zeros(self.num_items + 1, dtype=np.int64)
        for first in range(0, len(train), COUNT_ROWS):                # no copy of the strided (U', L+1) view
            counts += np.bincount(train[first:first + COUNT_ROWS].ravel(), minlength=self.num_items + 1)
        counts[0] = 0
        return counts

    def popularity(self) -> np.ndarray:
        """p_i = train count / total train interactions, p_0 = 1 (SPEC, in-batch loss)."""
        counts = self.train_counts()
        p = counts / counts.sum()
        p[0] = 1.0
        return p


def pad_left(sequences: list[np.ndarray], width: int) -> np.ndarray:
    """Stack int sequences (each at most `width` long) into a (len, width) array, left-padded with 0."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    out = np.zeros((len(sequences), width), dtype=np.int64)
    if len(sequences) == 0:
        return out
    rows = np.repeat(np.arange(len(sequences)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols += np.repeat(width - lengths, lengths)
    out[rows, cols] = np.concatenate(sequences)
    return out


def last_items(ids: np.ndarray, lengths: np.ndarray, width: int, users_per_chunk: int = 1 << 16) -> np.ndarray:
    """(U, width), the dtype of `ids`: the last `width` items of each flat sequence, left-padded
    with 0 (user k holds ids[offset_k : offset_k + lengths[k]]); built `users_per_chunk` rows at a time."""
    out = np.empty((len(lengths), width), dtype=ids.dtype)
    end = np.cumsum(lengths)                                        # (U,) one past each last item
    for first in range(0, len(lengths), users_per_chunk):
        rows = slice(first, first + users_per_chunk)
        at = end[rows, None] - width + np.arange(width)             # (chunk, width) positions in ids
        out[rows] = ids[np.maximum(at, 0)]
        out[rows][at < (end[rows] - lengths[rows])[:, None]] = 0    # before the user's first item
    return out


def warm_item_filter(ids: np.ndarray, lengths: np.ndarray, max_seq_len: int, min_seq_len: int, min_count: int,
                     num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warm-item setting (SPEC "Evaluation"): keep only items with >= `min_count` train interactions.

    `ids`, `lengths`: the users' whole histories, flat (item ids 1..num_items, users already
    filtered by `min_seq_len`). An item's count is its number of occurrences in the train parts the
    protocol trains on: the last L+3 items of a sequence minus its last two (valid and test targets).
    Items are removed from the whole histories, users left with fewer than `min_seq_len` items are
    dropped, and the histories are cut again (older items move into the L+3 window). The result:
    in the data the model sees, every item has at least `min_count` train interactions.

    Removing an item changes the windows, which can lower other items' counts (a target removed:
    the item before it becomes a target) or raise them (an older item moves into the window), so:
    - pass 0 removes the items whose count in the uncut train parts (whole history minus its last
      two items) is below `min_count`. Removing items only moves an item nearer the end of its
      sequence, so such an item can reach `min_count` in no filtered data: nothing is lost.
    - then each pass recounts on the cut windows and removes the lowest-count tenth (at least one;
      ties in file order) of the items still below `min_count`, until none is. Removing all of them
      at once would also drop items that only lack an interaction still hidden behind a colder
      item (on ml-100k, warm-200 would keep nothing instead of 44 items).
    Items are only ever removed, so the loop ends (ml-100k: 20-40 passes, vectorised, < 0.2 s).

    Returns (indices of the kept users, their filtered histories flat, their lengths).
    """
    flat = ids.astype(np.int64)
    owner = np.repeat(np.arange(len(lengths)), lengths)

    def position_from_end(counts_per_user: np.ndarray, who: np.ndarray) -> np.ndarray:   # 0 = last item
        starts = np.cumsum(counts_per_user) - counts_per_user
        return (counts_per_user - 1)[who] - (np.arange(len(who)) - starts[who])

    allowed = np.bincount(flat[position_from_end(lengths, owner) >= 2], minlength=num_items + 1) >= min_count
    allowed[0] = False                                                               # pass 0
    while True:
        keep = allowed[flat]
        kept_ids, who = flat[keep], owner[keep]
        n = np.bincount(who, minlength=len(lengths))                    # filtered length per user
        from_end = position_from_end(n, who)
        in_train = (n[who] >= min_seq_len) & (from_end >= 2) & (from_end <= max_seq_len + 2)
        counts = np.bincount(kept_ids[in_train], minlength=num_items + 1)
        below = np.flatnonzero(allowed & (counts < min_count))          # ascending id = file order
        if len(below) == 0:
            break
        lowest = below[np.argsort(counts[below], kind="stable")[:-(-len(below) // 10)]]
        allowed[lowest] = False
    users = np.flatnonzero(n >= min_seq_len)
    return users, kept_ids[n[who] >= min_seq_len], n[users]


def build_sequence_data(items: list[ItemRow], users: list[UserRow] | UserIds, max_seq_len: int,
                        min_seq_len: int, users_path: Path | str = "users file",
                        warm_min_count: int = 0) -> SequenceData:
    """SPEC "Data": drop short users, cut to the last L+3 items, drop unused items, re-index.

    `users`: rows read line by line, or the arrays of `read_user_ids`.
    warm_min_count > 0: the warm-item setting (`warm_item_filter`) before the cut; 0: off.
    """
    if warm_min_count < 0:
        raise InputError(f"warm_min_count must be >= 0 (0: off), got {warm_min_count}")
    if not isinstance(users, UserIds):
        users = user_ids_from_rows(users, [row.name for row in items], users_path)
    kept_users, used, full = protocol_arrays(len(items), users.offsets, users.ids, max_seq_len, min_seq_len,
                                             users_path, warm_min_count)
    kept_items = [None] + [row for row, keep in zip(items, used[1:]) if keep]
    return SequenceData(kept_items, [users.names[k] for k in kept_users.tolist()], full, max_seq_len)


def protocol_arrays(num_items: int, offsets: np.ndarray, ids: np.ndarray, max_seq_len: int, min_seq_len: int,
                    users_path: Path | str = "users file", warm_min_count: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrays of `build_sequence_data` (SPEC "Data") from the users file as flat ids: user k's
    items are ids[offsets[k]:offsets[k + 1]] (1-based, items file order; `num_items` in that file).
    Returns (kept users' rows (U',), (num_items+1,) bool: item kept, (U', L+3) int64 re-indexed
    `full`). morec.data.prepared stores them."""
    if warm_min_count < 0:
        raise InputError(f"warm_min_count must be >= 0 (0: off), got {warm_min_count}")
    all_lengths = np.diff(offsets)
    long_enough = all_lengths >= min_seq_len
    kept_users = np.flatnonzero(long_enough)
    if len(kept_users) == 0:
        raise InputError(f"{users_path}: no user has at least min_seq_len={min_seq_len} items; "
                         "lower --min_seq_len or check the file")
    lengths = all_lengths[kept_users]
    if len(kept_users) < len(long_enough):
        ids = ids[np.repeat(long_enough, all_lengths)]
    if warm_min_count > 0:
        warm_users, ids, lengths = warm_item_filter(ids, lengths, max_seq_len, min_seq_len, warm_min_count, num_items)
        if len(warm_users) == 0:
            raise InputError(f"{users_path}: no item has at least warm_min_count={warm_min_count} train "
                             f"interactions in a user with min_seq_len={min_seq_len} items "
                             f"(max_seq_len={max_seq_len}); lower --warm_min_count")
        kept_users = kept_users[warm_users]
    full = last_items(ids, lengths, max_seq_len + 3)
    used = np.zeros(num_items + 1, dtype=bool)
    used[full.ravel()] = True
    used[0] = False
    new_id = np.zeros(num_items + 1, dtype=np.int64)
    new_id[used] = np.arange(1, used.sum() + 1)                    # keeps file order
    return kept_users, used, new_id[full]


def load_sequence_data(data_dir: Path, behaviors: str, news: str, max_seq_len: int,
                       min_seq_len: int, warm_min_count: int = 0) -> SequenceData:
    users_path = data_dir / behaviors
    items = read_items(data_dir / news)
    users = read_user_ids(users_path, [row.name for row in items])
    return build_sequence_data(items, users, max_seq_len, min_seq_len, users_path, warm_min_count)


def line_by_line_sequence_data(data_dir: Path, behaviors: str, news: str, max_seq_len: int,
                               min_seq_len: int, warm_min_count: int = 0) -> SequenceData:
    """The reference of `load_sequence_data` (its code before the array reader): the files read
    line by line, one Python list per user. Tests and scripts/bench_setup.py check that both give
    the same data and the same errors."""
    users_path = data_dir / behaviors
    items, users = read_items(data_dir / news), read_users(users_path)
    if warm_min_count < 0:
        raise InputError(f"warm_min_count must be >= 0 (0: off), got {warm_min_count}")
    index_of = {row.name: i + 1 for i, row in enumerate(items)}
    kept_names, kept_seqs = [], []
    for user in users:
        ids = [index_of.get(name, 0) for name in user.items]
        if 0 in ids:
            raise InputError(f"{users_path}, line {user.line_no}: user {user.name!r} has item "
                             f"{user.items[ids.index(0)]!r}, which the items file lacks; add the item or remove it")
        if len(ids) >= min_seq_len:
            kept_names.append(user.name)
            kept_seqs.append(np.asarray(ids if warm_min_count > 0 else ids[-(max_seq_len + 3):], dtype=np.int64))
    if not kept_seqs:
        raise InputError(f"{users_path}: no user has at least min_seq_len={min_seq_len} items; "
                         "lower --min_seq_len or check the file")
    if warm_min_count > 0:
        lengths = np.array([len(s) for s in kept_seqs])
        kept, ids, lengths = warm_item_filter(np.concatenate(kept_seqs), lengths, max_seq_len, min_seq_len,
                                              warm_min_count, len(items))
        if len(kept) == 0:
            raise InputError(f"{users_path}: no item has at least warm_min_count={warm_min_count} train "
                             f"interactions in a user with min_seq_len={min_seq_len} items "
                             f"(max_seq_len={max_seq_len}); lower --warm_min_count")
        kept_names = [kept_names[u] for u in kept]
        kept_seqs = [s[-(max_seq_len + 3):] for s in np.split(ids, np.cumsum(lengths)[:-1])]
    full = pad_left(kept_seqs, max_seq_len + 3)
    used = np.zeros(len(items) + 1, dtype=bool)
    used[full.ravel()] = True
    used[0] = False
    new_id = np.zeros(len(items) + 1, dtype=np.int64)
    new_id[used] = np.arange(1, used.sum() + 1)
    return SequenceData([None] + [row for row, keep in zip(items, used[1:]) if keep], kept_names, new_id[full],
                        max_seq_len)


SUBSET_SEED = 20230723                 # fixed: the same users at every run seed and every arm


def with_train_users(data: SequenceData, fraction: float) -> SequenceData:
    """The training-set-size setting (the transfer study): only ceil(fraction * U) users'
    train parts train (and give the popularity of the in-batch correction and the cold-start
    view); every user is still validated and tested, on the same targets, so the numbers of
    different fractions compare. The users are the first ones of one fixed permutation, so the
    subsets are nested (10% within 30% within 100%) and do not depend on the run's seed."""
    if not 0 < fraction <= 1:
        raise InputError(f"train_user_fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng(SUBSET_SEED).permutation(data.num_users)
    keep = np.sort(order[:int(np.ceil(fraction * data.num_users))])
    return SequenceData(data.items, data.user_names, data.full, data.max_seq_len, train_users=keep)

