"""Refuse a text item tower that would see no text.

An item whose chosen attributes are all empty is encoded from the tokenizer's special tokens
alone, so every such item gets the same vector. On an items file without titles (or with
``--news_attributes abstract`` where there are none) every item does: the model cannot tell
items apart, and the scores are ties throughout. Such a run is refused before anything is loaded.

A text counts as empty when it is missing, only whitespace, or only HTML entities (``&amp;``,
``&nbsp;``: marketplace titles hold such leftovers; morec.data.text.clean_text). The error names
the items file, the line of the first such item, what its text is, and the fix.
"""
from __future__ import annotations

import logging
import re

from morec.data.files import ItemRow
from morec.data.text import clean_text
from morec.errors import InputError

log = logging.getLogger("morec")

ENTITY_ONLY = re.compile(r"(?:\s|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);)+")


def _names(rows: list[ItemRow]) -> str:
    return ", ".join(repr(row.name) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")


def empty_kind(text: str, clean: bool = True) -> str | None:
    """Why `text` holds no text ("missing", "only whitespace", "only HTML entities"), or None.
    clean: as the tower reads it with --unescape_text true (also entities that decode to a space)."""
    if text == "":
        return "missing"
    if not text.strip():
        return "only whitespace"
    if ENTITY_ONLY.fullmatch(text) or (clean and not clean_text(text)):
        return "only HTML entities"
    return None


def _first_line(rows: list[ItemRow], attribute: str, items_file: str, clean: bool) -> str:
    """'FILE, line N: item 'x' has a title that is only whitespace (' ')' for the first row."""
    row = rows[0]
    text = getattr(row, attribute)
    where = f"{items_file}, line {row.line_no}" if row.line_no else items_file
    return f"{where}: item {row.name!r} has a {attribute} that is {empty_kind(text, clean)} ({text[:40]!r})"


def check_item_texts(items: list[ItemRow | None], attributes: list[str], fused_with_ids: bool,
                     items_file: str, clean: bool = True) -> None:
    """items[1:] are the run's items; `attributes` the chosen ones ('title', 'abstract'); clean:
    the run's --unescape_text.

    Refused: an attribute empty for every item (none present in the file), or items whose every
    chosen attribute is empty (`empty_kind`; unless an ID embedding is fused in, which tells them
    apart: a warning then)."""
    rows = items[1:]
    for attribute in attributes:
        if all(empty_kind(getattr(row, attribute), clean) for row in rows):
            raise InputError(f"all {len(rows)} items have an empty {attribute} in {items_file}, so a "
                             f"text tower cannot tell them apart; add the {attribute}s (column "
                             f"{2 if attribute == 'title' else 3} of the file) or choose other "
                             "--news_attributes")
    blank = [row for row in rows if all(empty_kind(getattr(row, a), clean) for a in attributes)]
    if not blank:
        return
    message = (f"{len(blank)} of {len(rows)} items have an empty {' and '.join(attributes)} in "
               f"{items_file} ({_names(blank)}); they all get the same text vector. First: "
               f"{_first_line(blank, attributes[0], items_file, clean)}")
    if fused_with_ids:
        log.warning("%s; their ID embeddings tell them apart", message)
        return
    raise InputError(f"{message}. Give these items a real {' or '.join(attributes)} (or remove them from "
                     "both files), choose other --news_attributes, or fuse the text with IDs (--fusion add or cat)")
