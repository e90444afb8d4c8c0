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

import numpy as np

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


@dataclass(frozen=True)
class UserIds:
    """The users file as arrays (SPEC "Data"): user k is `names[k]`, its items in time order are
    `ids[offsets[k]:offsets[k + 1]]`, 1-based ids in the items file's order."""
    names: list[str]
    offsets: np.ndarray               # (U+1,) int64, offsets[0] = 0
    ids: np.ndarray                   # (interactions,) int32

    @property
    def lengths(self) -> np.ndarray:
        """(U,) items per user."""
        return np.diff(self.offsets)


LINE_END = re.compile(r"\r\n|\r|\n")          # Unix, Windows and old-Mac line ends
WHITESPACE = re.compile(r"\s")                # what str.isspace() calls whitespace (tests/test_fast_setup.py)


def _check_is_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise InputError(f"{what} file {path} is a directory, not a file; point "
                         f"--{'behaviors' if what == 'users' else 'news'} at the {what} tsv file")
    if not path.is_file():
        raise InputError(f"{what} file {path} not found; put it there or point "
                         f"--root_data_dir/--dataset/--{'behaviors' if what == 'users' else 'news'} at it")


def _read_lines(path: Path, what: str) -> list[str]:
    """The file's lines, decoded as UTF-8 (a leading BOM is dropped).

    Lines end at \\n, \\r\\n or \\r; blank lines at the end of the file are dropped (editors
    add them), a blank line elsewhere is kept for the caller to report."""
    _check_is_file(path, what)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad = err.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
        line_no = len(LINE_END.findall(raw[:bad].decode("utf-8", "replace"))) + 1
        raise InputError(f"{path}, line {line_no}: not UTF-8 (byte {raw[bad]:#04x}); "
                         "re-encode the file as UTF-8") from None
    lines = LINE_END.split(text) if "\r" in text else text.split("\n")
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
        if WHITESPACE.search(name):
            raise InputError(f"{path}, line {line_no}: item name {name!r} holds whitespace; users "
                             "files separate items by spaces, so rename the item")
        first_line[name] = line_no
        rows.append(ItemRow(name, *parts[1:3], line_no=line_no))   # texts as given: a leading space changes BPE tokens
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


def user_ids_from_rows(users: list[UserRow], item_names: list[str],
                       users_path: Path | str = "users file") -> UserIds:
    """`users` (read line by line) as arrays of item ids; an item the items file lacks is an error
    naming the user's line."""
    index_of = {name: i + 1 for i, name in enumerate(item_names)}     # file order, 1-based
    flat: list[int] = []
    for user in users:
        ids = [index_of.get(name, 0) for name in user.items]
        if 0 in ids:
            unknown = user.items[ids.index(0)]
            raise InputError(f"{users_path}, line {user.line_no}: user {user.name!r} has item "
                             f"{unknown!r}, which the items file lacks; add the item or remove it")
        flat += ids
    lengths = np.fromiter((len(user.items) for user in users), dtype=np.int64, count=len(users))
    return UserIds([user.name for user in users], np.concatenate([[0], np.cumsum(lengths)]),
                   np.asarray(flat, dtype=np.int32))


def read_user_ids(path: Path, item_names: list[str]) -> UserIds:
    """The users file as item ids (`item_names`: the items file's names in order), read with
    numpy on the raw bytes (`_plain_user_ids`). A file it does not take as plain -- any odd byte,
    a malformed line, an unknown item, a user twice -- is read again line by line by
    `read_users`, which raises the same error, line number included, as it always has (or
    reads a valid file the plain reader leaves to it, such as one with a control character in a name)."""
    _check_is_file(path, "users")
    fast = _plain_user_ids(path.read_bytes(), item_names)
    return fast if fast is not None else user_ids_from_rows(read_users(path), item_names, path)


PLAIN_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n"     # printable ASCII, tab, line end
# the characters above ASCII that str.isspace() takes as whitespace (tests/test_fast_setup.py checks)
UNICODE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
BLOCK_BYTES = 1 << 20                                 # parsed 1 MiB of whole lines at a time
LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype="<u8")   # n: a mask of the n first bytes of a word


def _plain_user_ids(raw: bytes, item_names: list[str], lookup: "_ItemLookup | None" = None) -> UserIds | None:
    """The users file's bytes as UserIds, or None when the file is not plain: every line
    `name\\titem item ...` with one tab, spaces, UTF-8 text without other whitespace or control
    characters, known items and unique user names. None hands the file to the line-by-line reader
    (which then reports the problem). `lookup`: the items' table, when the caller reads several
    blocks of one file (morec.data.prepared)."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    if b"\r" in raw:                                  # the line ends of LINE_END, as \n
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not _is_plain_text(raw, start):
        return None
    end = len(raw)
    while end > start and raw[end - 1] in b" \t\n":   # trailing blank lines are dropped
        end -= 1
    end = len(raw) if raw.find(b"\n", end) < 0 else raw.find(b"\n", end)
    lookup = lookup or _ItemLookup(item_names)
    names, lengths, filled = [], [], 0
    ids = np.empty(raw.count(b" ", start, end) + raw.count(b"\t", start, end), dtype=np.int32)  # >= items:
    while start < end:                                                      # each follows a space or tab
        stop = raw.find(b"\n", min(start + BLOCK_BYTES, end))
        stop = end if stop < 0 or stop >= end else stop + 1
        block = _parse_block(np.frombuffer(raw, np.uint8, stop - start, start), lookup)
        if block is None:
            return None
        name_start, name_end = (start + block[0]).tolist(), (start + block[1]).tolist()
        names += [raw[a:b].decode("utf-8") for a, b in zip(name_start, name_end)]
        lengths.append(block[2])
        ids[filled:filled + len(block[3])] = block[3]
        filled, start = filled + len(block[3]), stop
    if not names or len(set(names)) != len(names):
        return None
    return UserIds(names, np.concatenate([[0], np.cumsum(np.concatenate(lengths))]),
                   ids if filled == len(ids) else ids[:filled].copy())


def _is_plain_text(raw: bytes, start: int) -> bool:
    """Only printable ASCII, tabs, \\n and UTF-8 text above ASCII that holds no whitespace."""
    odd = raw.translate(None, PLAIN_BYTES)
    if odd == raw[:start]:                            # nothing, or just the byte order mark
        return True
    if not all(byte >= 0x80 for byte in set(odd)):   # a control character or DEL
        return False
    try:
        return UNICODE_SPACE.search(raw[start:].decode("utf-8")) is None
    except UnicodeDecodeError:
        return False


def _parse_block(text: np.ndarray, lookup: "_ItemLookup") -> tuple[np.ndarray, ...] | None:
    """Whole lines of plain bytes `text` (T,) uint8 -> (users,) start and (users,) end of each user
    name, (users,) number of items and the item ids, or None if a line is not `name\\titem item ...`."""
    line_end = np.flatnonzero(text == ord("\n"))
    if len(line_end) == 0 or line_end[-1] != len(text) - 1:
        line_end = np.append(line_end, len(text))                  # the last line of the file
    line_start = np.concatenate([[0], line_end[:-1] + 1])
    tabs = np.flatnonzero(text == ord("\t"))
    if len(tabs) != len(line_end) or (tabs < line_start).any() or (tabs > line_end).any():
        return None                                                # not one tab per line
    is_space = np.ones(len(text) + 2, dtype=bool)
    is_space[1:-1] = text <= ord(" ")                              # space, tab or \n in plain text
    edges = np.flatnonzero(np.diff(is_space.view(np.int8)))          # a token's start, its end, the next start...
    token_start, token_end = edges[0::2], edges[1::2]
    first_token, first_item, next_line = (np.searchsorted(token_start, at) for at in (line_start, tabs, line_end))
    if (first_item == first_token).any() or (next_line == first_item).any():
        return None                                                # an empty name or item list
    is_name = np.zeros(len(token_start) + 1, dtype=np.int8)
    is_name[first_token], is_name[first_item] = 1, -1
    is_item = np.cumsum(is_name[:-1]) == 0
    ids = lookup.ids(text, token_start[is_item], token_end[is_item])
    if ids is None:
        return None
    return token_start[first_token], token_end[first_item - 1], next_line - first_item, ids


class _ItemLookup:
    """Item name bytes -> 1-based item id, exactly: a hash table with linear probing over the
    names zero-padded to `width` bytes and read as uint64 words; a token is the item whose words
    equal its own, word for word (no hash is trusted)."""

    def __init__(self, item_names: list[str]):
        encoded = [name.encode("utf-8") for name in item_names]
        self.width = -(-max(map(len, encoded), default=1) // 8) * 8
        padded = np.frombuffer(b"".join(name.ljust(self.width, b"\0") for name in encoded), np.uint8)
        self.words = padded.view("<u8").reshape(len(encoded), self.width // 8)   # (N, width/8)
        self.usable = len(encoded) > 0 and all(b"\0" not in name for name in encoded)   # NUL pads the words
        self.bits = max(4 * len(encoded), 16).bit_length()                         # load factor <= 1/4
        table = [-1] * (1 << self.bits)
        for item, slot in enumerate(self._slots(self.words).tolist()):
            while table[slot] >= 0:
                slot = (slot + 1) & ((1 << self.bits) - 1)
            table[slot] = item
        self.table = np.array(table, dtype=np.int64)                              # slot -> item index, -1 empty

    def _slots(self, words: np.ndarray) -> np.ndarray:
        """(rows, k) uint64 -> (rows,) home slot: multiply-xor over the words, top bits of a Fibonacci hash."""
        hashed = words[:, 0].copy()
        for k in range(1, words.shape[1]):
            hashed = (hashed * np.uint64(0x9E3779B97F4A7C15)) ^ words[:, k]
        return ((hashed * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - self.bits)).astype(np.int64)

    def ids(self, text: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray | None:
        """(tokens,) int32 ids of the tokens text[start:end], or None if one is no item name."""
        length = end - start
        if not self.usable or length.max(initial=0) > self.width:
            return None
        padded = np.zeros(-(-(len(text) + self.width + 8) // 8) * 8, dtype=np.uint8)
        padded[:len(text)] = text                                  # `width` bytes after every start
        aligned = padded.view("<u8")                               # little-endian: byte i is bits 8i..8i+7
        words = np.empty((len(start), self.width // 8), dtype="<u8")    # (tokens, width/8)
        for k in range(self.width // 8):
            at = start + 8 * k                                     # the 8 bytes from `at`: two aligned words
            shift = ((at & 7) << 3).astype(np.uint64)
            word = (aligned[at >> 3] >> shift) | ((aligned[(at >> 3) + 1] << (np.uint64(63) - shift)) << np.uint64(1))
            words[:, k] = word & LOW_BYTES[np.clip(length - 8 * k, 0, 8)]
        found = np.empty(len(start), dtype=np.int64)
        todo, slot = np.arange(len(start)), self._slots(words)
        while len(todo):                                           # linear probing, all tokens at once
            item = self.table[slot]
            if (item < 0).any():
                return None                                        # an item the items file lacks
            equal = (self.words[item] == words[todo]).all(axis=1)
            found[todo[equal]] = item[equal]
            todo, slot = todo[~equal], (slot[~equal] + 1) & ((1 << self.bits) - 1)
        return (found + 1).astype(np.int32)
