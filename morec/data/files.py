"""Reading the users tsv and items tsv of the original MoRec release (and of dataset/ml-100k).

users tsv: ``user_name \\t item_name item_name ...`` in time order.
items tsv: ``item_name [\\t title [\\t abstract]]`` -- the row order defines the item ids.
Every problem is an InputError naming the file, the line and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from morec.errors import InputError


@dataclass(frozen=True)
class ItemRow:
    name: str
    title: str = ""
    abstract: str = ""


@dataclass(frozen=True)
class UserRow:
    line_no: int
    name: str
    items: list[str]


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise InputError(f"{what} file {path} not found; put it there or point "
                         f"--root_data_dir/--dataset/--{'behaviors' if what == 'users' else 'news'} at it")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw[:err.start].count(b"\n") + 1
        raise InputError(f"{path}, line {line_no}: not UTF-8 (byte {raw[err.start]:#04x}); "
                         "re-encode the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()                     # the final newline
    if not lines:
        raise InputError(f"{what} file {path} is empty")
    return [line.rstrip("\r") for line in lines]


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
        first_line[name] = line_no
        rows.append(ItemRow(name, *parts[1:3]))     # texts as given: a leading space changes BPE tokens
    return rows


def read_users(path: Path) -> list[UserRow]:
    """User rows in file order: a name, a tab, then the item names separated by spaces."""
    rows: list[UserRow] = []
    for line_no, line in enumerate(_read_lines(path, "users"), start=1):
        name, tab, items = line.partition("\t")
        if not tab or not name.strip() or not items.split():
            raise InputError(f"{path}, line {line_no}: expected 'user_name\\titem item ...', got "
                             f"{line[:80]!r}; fix or delete this line")
        rows.append(UserRow(line_no, name.strip(), items.split()))
    return rows
