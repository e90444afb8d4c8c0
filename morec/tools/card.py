"""A dataset card (CARD.md): what a data set folder holds, and what the protocol keeps of it.

Numbers come from the project's own reader and split (morec.data: read_items / read_users, then
build_sequence_data, SPEC "Data"), so the card shows what training sees:

- users, items, interactions and density (interactions / (users x items)) as converted and as
  kept (users with >= min_seq_len items, each cut to its last L+3 items, unused items dropped);
- sequence length percentiles before and after the L+3 cut;
- item popularity: the Gini coefficient of the items' interaction counts (0: all equal, near 1:
  a few items take everything; items without interactions count as 0) and the share of
  interactions on the top 1% of items (at least one item);
- content: items with a title / abstract, items with an image in the folder's image LMDB, items
  whose lower-cased title (as the text tower reads it, SPEC "Item towers") another item shares;
- repeat targets: valid / test targets that also occur in the user's history (SPEC "Evaluation":
  a miss under the default `--repeat_targets miss`), with their share of the targets;
- titles the text tower's clean-up changes (HTML entities, stray spaces: `--unescape_text`);
- the most-popular baseline's valid / test HR@10 and NDCG@10 (morec.baselines), a floor for models.

    python scripts/describe_dataset.py DIR [--max_seq_len 20] [--min_seq_len 5]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from morec.atomic_io import write_text_atomic
from morec.baselines import popularity_metrics
from morec.data import build_sequence_data, read_items, read_users
from morec.data.text import clean_text
from morec.data.images import ImageStore
from morec.errors import InputError

PERCENTILES = (0, 25, 50, 75, 90, 99, 100)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: sum_i (2i - n - 1) x_(i) / (n sum x), x ascending."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def top_share(counts: np.ndarray, fraction: float = 0.01) -> float:
    """Share of all interactions on the ceil(fraction * n) most popular items (at least one)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    k = max(1, int(np.ceil(fraction * len(x))))
    return float(x[:k].sum() / x.sum()) if x.sum() else 0.0


@dataclass
class Part:
    """Counts of one view of the data: as converted, or as kept by the protocol."""
    users: int
    items: int
    lengths: np.ndarray                      # (users,) items per user
    item_counts: np.ndarray                  # (items,) interactions per item

    @property
    def interactions(self) -> int:
        return int(self.lengths.sum())


@dataclass
class Card:
    name: str
    max_seq_len: int
    min_seq_len: int
    raw: Part
    kept: Part | None                        # None: no user has min_seq_len items
    with_title: int
    with_abstract: int
    with_image: int | None                   # None: no image LMDB in the folder
    image_lmdb: str
    duplicate_items: int                     # items sharing their lower-cased title
    duplicate_titles: int                    # distinct titles shared by several items
    popularity: dict[str, dict[str, float]] = field(default_factory=dict)   # split -> metrics
    source: str | None = None
    repeats: dict[str, int] = field(default_factory=dict)   # split -> targets also in the user's history
    cleaned_titles: int = 0                  # titles that --unescape_text changes (entities, stray spaces)


def _raw_part(items, users, users_path: Path) -> Part:
    """Counts as converted; an item of the users file that the items file lacks is an InputError."""
    lengths = np.fromiter((len(u.items) for u in users), dtype=np.int64, count=len(users))
    flat = [name for user in users for name in user.items]
    codes = pd.Index([row.name for row in items]).get_indexer(flat)
    if (codes < 0).any():
        k = int(np.argmax(codes < 0))
        user = users[int(np.searchsorted(np.cumsum(lengths), k, side="right"))]
        raise InputError(f"{users_path}, line {user.line_no}: user {user.name!r} has item {flat[k]!r}, "
                         "which the items file lacks; add the item or remove it")
    return Part(len(users), len(items), lengths, np.bincount(codes, minlength=len(items)))


def _images_present(folder: Path, image_lmdb: str, names: list[str]) -> int | None:
    path = folder / image_lmdb
    if not path.exists():
        return None
    store = ImageStore(path)
    stored = set(store.names()) - set(store.meta.get("missing", []))
    return sum(name in stored for name in names)


def describe(folder: Path, behaviors: str = "users.tsv", news: str = "items.tsv", max_seq_len: int = 20,
             min_seq_len: int = 5, image_lmdb: str = "images.lmdb", name: str | None = None,
             source: str | None = None) -> Card:
    """The card's numbers for the data set in `folder` (see the module doc)."""
    folder = Path(folder)
    users_path = folder / behaviors
    items, users = read_items(folder / news), read_users(users_path)
    raw = _raw_part(items, users, users_path)
    kept, popularity, repeats = None, {}, {}
    if (raw.lengths >= min_seq_len).any():
        data = build_sequence_data(items, users, max_seq_len, min_seq_len, users_path)
        present = data.full > 0                                              # (U, L+3)
        kept = Part(data.num_users, data.num_items, present.sum(1),
                    np.bincount(data.full[present], minlength=data.num_items + 1)[1:])
        popularity = {split: popularity_metrics(data, split) for split in ("valid", "test")}
        repeats = {split: int(data.split_repeats(split).sum()) for split in ("valid", "test")}
    titles = pd.Series([clean_text(row.title).lower() for row in items])
    titles = titles[titles != ""]
    shared = titles[titles.duplicated(keep=False)]
    return Card(name or folder.name, max_seq_len, min_seq_len, raw, kept,
                with_title=int(sum(bool(row.title.strip()) for row in items)),
                with_abstract=int(sum(bool(row.abstract.strip()) for row in items)),
                with_image=_images_present(folder, image_lmdb, [row.name for row in items]),
                image_lmdb=image_lmdb, duplicate_items=len(shared), duplicate_titles=shared.nunique(),
                popularity=popularity, source=source, repeats=repeats,
                cleaned_titles=sum(clean_text(row.title) != row.title for row in items))


def _share(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,} ({100 * part / whole:.1f}%)" if whole else "0"


def _part_rows(card: Card) -> list[str]:
    def cells(part: Part | None, value) -> str:
        return "–" if part is None else value(part)
    rows = [("users", lambda p: f"{p.users:,}"), ("items", lambda p: f"{p.items:,}"),
            ("interactions", lambda p: f"{p.interactions:,}"),
            ("density", lambda p: f"{100 * p.interactions / (p.users * p.items):.3f}%"),
            ("item popularity Gini", lambda p: f"{gini(p.item_counts):.3f}"),
            ("share of interactions on the top 1% of items", lambda p: f"{100 * top_share(p.item_counts):.1f}%")]
    return [f"| {label} | {cells(card.raw, value)} | {cells(card.kept, value)} |" for label, value in rows]


def _length_row(label: str, lengths: np.ndarray | None) -> str:
    if lengths is None or len(lengths) == 0:
        return f"| {label} |" + " – |" * (len(PERCENTILES) + 1)
    values = np.percentile(lengths, PERCENTILES)
    return f"| {label} | " + " | ".join(f"{round(v, 1):g}" for v in values) + f" | {lengths.mean():.1f} |"


def card_markdown(card: Card) -> str:
    """CARD.md's text."""
    L, cut = card.max_seq_len, card.max_seq_len + 3
    kept_label = f"kept (min_seq_len {card.min_seq_len}, last L+3 = {cut} items)"
    image = (f"no image LMDB ({card.image_lmdb}) in the folder" if card.with_image is None
             else _share(card.with_image, card.raw.items) + f" (in {card.image_lmdb})")
    lines = [f"# Dataset card: {card.name}", "",
             f"Written by `python scripts/describe_dataset.py DIR --max_seq_len {L} --min_seq_len "
             f"{card.min_seq_len}` (morec/tools/card.py)" + (f"; {card.source}" if card.source else "") + ".",
             "Kept = what training and evaluation see (SPEC \"Data\").", "",
             f"| | as converted | {kept_label} |", "|---|---:|---:|", *_part_rows(card), "",
             "## Items per user", "",
             "| | " + " | ".join("min" if p == 0 else "max" if p == 100 else f"{p}%" for p in PERCENTILES)
             + " | mean |", "|---|" + "---:|" * (len(PERCENTILES) + 1),
             _length_row("before the cut", card.raw.lengths),
             _length_row(f"after the cut (kept users, at most {cut})",
                         None if card.kept is None else card.kept.lengths),
             "", "## Item content", "",
             f"- with a title: {_share(card.with_title, card.raw.items)}; with an abstract: "
             f"{_share(card.with_abstract, card.raw.items)}",
             f"- with an image: {image}",
             f"- duplicate titles (lower-cased, as the text tower reads them): {card.duplicate_items:,} items "
             f"share their title with another item ({card.duplicate_titles:,} distinct titles)",
             f"- titles with HTML entities or stray spaces (cleaned by the text tower's default "
             f"`--unescape_text true`): {_share(card.cleaned_titles, card.raw.items)}", "",
             *_repeat_lines(card),
             f"## Most-popular baseline (L = {L}, full ranking, SPEC \"Evaluation\")", "",
             popularity_note(card.name, L, card.min_seq_len), ""]
    if card.kept is None:
        lines.append(f"No user has min_seq_len = {card.min_seq_len} items: nothing to evaluate.")
    else:
        lines += ["| split | HR@10 | NDCG@10 |", "|---|---:|---:|"]
        lines += [f"| {split} | {100 * m['HR@10']:.2f} | {100 * m['NDCG@10']:.2f} |"
                  for split, m in card.popularity.items()]
    return "\n".join(lines) + "\n"


def popularity_note(name: str, max_seq_len: int, min_seq_len: int) -> str:
    """What the most-popular numbers depend on, and the baseline command that prints the same."""
    return (f"Item counts and targets come from each kept user's last L+3 = {max_seq_len + 3} items, with "
            f"min_seq_len {min_seq_len}, every item and `--repeat_targets miss`: `python "
            f"scripts/popularity_baseline.py --dataset {name} --max_seq_len {max_seq_len} --min_seq_len "
            f"{min_seq_len}` prints these numbers; another L, min_seq_len, `--repeat_targets` or "
            "`--warm_min_count` counts other items and gives others.")


def _repeat_lines(card: Card) -> list[str]:
    """The repeat-target section: valid and test targets that also occur in the user's history."""
    if card.kept is None:
        return []
    shares = "; ".join(f"{split} {_share(count, card.kept.users)}" for split, count in card.repeats.items())
    return ["## Repeat targets (SPEC \"Evaluation\")", "",
            f"- targets that also occur in the user's history (masked with it: a miss under the default "
            f"`--repeat_targets miss`): {shares}", ""]


def write_card(folder: Path, **options) -> str:
    """Describe the data set in `folder` and write `folder/CARD.md` (atomically); returns the text."""
    text = card_markdown(describe(Path(folder), **options))
    write_text_atomic(Path(folder) / "CARD.md", text)
    return text
