"""Refuse a text item tower that would see no text.

An item whose chosen attributes are all empty is encoded from the tokenizer's special tokens
alone, so every such item gets the same vector. On an items file without titles (or with
``--news_attributes abstract`` where there are none) every item does: the model cannot tell
items apart, and the scores are ties throughout. Such a run is refused before anything is loaded.
"""
from __future__ import annotations

import logging

from morec.data.files import ItemRow
from morec.errors import InputError

log = logging.getLogger("morec")


def _names(rows: list[ItemRow]) -> str:
    return ", ".join(repr(row.name) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")


def check_item_texts(items: list[ItemRow | None], attributes: list[str], fused_with_ids: bool,
                     items_file: str) -> None:
    """items[1:] are the run's items; `attributes` the chosen ones ('title', 'abstract').

    Refused: an attribute empty for every item (none present in the file), or items whose every
    chosen attribute is empty (unless an ID embedding is fused in, which tells them apart: a
    warning then)."""
    rows = items[1:]
    for attribute in attributes:
        if all(not getattr(row, attribute).strip() for row in rows):
            raise InputError(f"all {len(rows)} items have an empty {attribute} in {items_file}, so a "
                             f"text tower cannot tell them apart; add the {attribute}s (column "
                             f"{2 if attribute == 'title' else 3} of the file) or choose other "
                             "--news_attributes")
    blank = [row for row in rows if all(not getattr(row, a).strip() for a in attributes)]
    if not blank:
        return
    message = (f"{len(blank)} of {len(rows)} items have an empty {' and '.join(attributes)} in "
               f"{items_file} ({_names(blank)}); they all get the same text vector")
    if fused_with_ids:
        log.warning("%s; their ID embeddings tell them apart", message)
        return
    raise InputError(f"{message}. Add their text, choose other --news_attributes, or fuse the text "
                     "with IDs (--fusion add or cat)")
