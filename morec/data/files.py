"""Reading the users tsv and items tsv of the original MoRec release (and of dataset/ml-100k).

users tsv: ``user_name \\t item_name item_name ...`` in time order.
items tsv: ``item_name [\\t title [\\t abstract]]`` -- the row order defines the item ids.
Every problem is an InputError naming the file, the line and what to do.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path

from morec.errors import InputError


@dataclass(frozen=True)
class ItemRow:
    name: str
    title: str = ""
    abstract: str = ""
    line_no: int = field(default=0, compare=False)     # line in the items file (0: not read from a file)


@dataclass(frozen=True)
class UserRow:
    line_no: int
    name: str
    items: list[str]


LINE_END = re.compile(r"\r\n|\r|\n")          # Unix, Windows and old-Mac line ends


def _read_lines(path: Path, what: str) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading BOM is dropped).

    Lines end at \\n, \\r\\n or \\r; blank lines at the end of the file are dropped (editors
    add them), a blank line elsewhere is kept for the caller to report."""
    if path.is_dir():
        raise InputError(f"{what} file {path} is a directory, not a file; point "
                         f"--{'behaviors' if what == 'users' else 'news'} at the {what} tsv file")
    if not path.is_file():
        raise InputError(f"{what} file {path} not found; put it there or point "
                         f"--root_data_dir/--dataset/--{'behaviors' if what == 'users' else 'news'} at it")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad = err.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
        line_no = len(LINE_END.findall(raw[:bad].decode("utf-8", "replace"))) + 1
        raise InputError(f"{path}, line {line_no}: not UTF-8 (byte {raw[bad]:#04x}); "
                         "re-encode the file as UTF-8") from None
    lines = LINE_END.split(text)
    while lines and not lines[-1].strip():
        lines.pop()                     # the final newline and trailing blank lines
    if not lines:
        raise InputError(f"{what} file {path} is empty")
    return lines


def _check_separators(path: Path, line_no: int, fields: list[str], rule: str) -> None:
    """Whitespace other than a plain space inside `fields` (a tab in an item list, a no-break
    space, a form feed...) is an input error: it would silently split or join names. `rule`
    says what the line must look like."""
    for text in fields:
        odd = next((c for c in text if c.isspace() and c != " "), None)
        if odd is not None:
            raise InputError(f"{path}, line {line_no}: unexpected whitespace {odd!r} in "
                             f"{text[:60]!r}; {rule}")


def read_items(path: Path) -> list[ItemRow]:
    """Items in file order; names must be unique and non-empty."""
    rows: list[ItemRow] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(_read_lines(path, "items"), start=1):
        parts = line.split("\t")
        name = parts[0].strip()
        if not name:
            raise InputError(f"{path}, line {line_no}: empty item name (blank line?); each line "
                             "must read 'item_name[\\ttitle[\\tabstract]]'")
        if name in first_line:
            raise InputError(f"{path}, line {line_no}: item {name!r} already defined on line "
                             f"{first_line[name]}; item names must be unique")
        if any(c.isspace() for c in name):
            raise InputError(f"{path}, line {line_no}: item name {name!r} holds whitespace; users "
                             "files separate items by spaces, so rename the item")
        first_line[name] = line_no
        rows.append(ItemRow(name, *parts[1:3], line_no=line_no))     # texts as given: a leading space changes BPE tokens
    return rows


def read_users(path: Path) -> list[UserRow]:
    """User rows in file order: a name, a tab, then the item names separated by spaces.
    Each user has one line: a name seen twice is an error naming both lines."""
    rows: list[UserRow] = []
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(_read_lines(path, "users"), start=1):
        name, tab, items = line.partition("\t")
        if not tab or not name.strip(" ") or not items.strip(" "):
            raise InputError(f"{path}, line {line_no}: expected 'user_name\\titem item ...', got "
                             f"{line[:80]!r}; fix or delete this line")
        _check_separators(path, line_no, [name, items], "separate the user name from its items "
                          "with one tab and the items with spaces, and use no other whitespace")
        name = name.strip(" ")
        if name in first_line:
            raise InputError(f"{path}, line {line_no}: user {name!r} already has line "
                             f"{first_line[name]}; each user must have one line (merge the two "
                             "histories in time order, or rename one user)")
        first_line[name] = line_no
        rows.append(UserRow(line_no, name, [item for item in items.split(" ") if item]))
    return rows
