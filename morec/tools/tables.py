"""What the format readers of morec.tools.formats share: the `Source` they return, finding a
format's files in its folder (`_locate`, `_covers`), reading a delimited file into strings with
each record's line number (`_read_table`, `_csv_records`), checking its columns and time stamps,
reading an item table, and skipping a header row that a public copy may or may not carry.
The streaming converter (morec.tools.stream_formats) uses the same helpers for the item and user
tables and the file search, so both converters find the same files and give the same messages.
"""
from __future__ import annotations

import csv
import logging
import sys
import warnings
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from morec.errors import InputError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))      # long descriptions are one field
# First fields of a header row in a file whose public copies may or may not carry one.
ITEM_HEADERS = {"item", "items", "item_id", "itemid", "video_id", "videoid", "id", "iid", "vid"}
USER_HEADERS = {"user", "users", "user_id", "userid", "uid"}
log = logging.getLogger("morec.tools.convert")       # one logger for the conversion (tests listen to it)


@dataclass
class Source:
    """What a reader returns. Names and texts are strings; `line` is the 1-based source line."""
    inter: pd.DataFrame                  # file order: user, item, time (numbers), line
    inter_path: Path
    items: pd.DataFrame | None = None    # item-file order: item, title, abstract, line
    items_path: Path | None = None
    users: pd.DataFrame | None = None    # user-file order: user, line (RecBole's .user)
    users_path: Path | None = None
    images: Path | None = None           # folder of <item>.jpg|jpeg|png


# ----------------------------------------------------------------------------- finding files

def _locate(src: Path, given: str | Path | None, patterns: list[str], what: str, option: str,
            folder: bool = False, required: bool = True) -> Path | None:
    """`given`, or the one file (folder) of `src` matching the first pattern that matches any."""
    if given is not None:
        path = Path(given)
        if not (path.is_dir() if folder else path.is_file()):
            raise InputError(f"{what} {path} not found (--{option}); point --{option} at the "
                             f"{'folder' if folder else 'file'}")
        return path
    for pattern in patterns:
        hits = sorted(p for p in src.glob(pattern) if (p.is_dir() if folder else p.is_file()))
        if len(hits) > 1:
            raise InputError(f"{src}: several {what}s match {pattern!r} "
                             f"({', '.join(p.name for p in hits[:4])}); pick one with --{option}")
        if hits:
            return hits[0]
    if required:
        raise InputError(f"{src}: no {what} found (looked for {', '.join(patterns)}); "
                         f"point --{option} at it")
    return None


def _covers(src: Path, images, no_images: bool, patterns: list[str]) -> Path | None:
    """The cover folder of an image format: given, found, or none with --no_images."""
    if no_images:
        return None
    found = _locate(src, images, patterns, "cover folder", "images", folder=True, required=False)
    if found is None:
        raise InputError(f"{src}: no cover folder (looked for {', '.join(patterns)}); point "
                         "--images at the folder of <item>.jpg files, or pass --no_images")
    return found


def _extra_images(src: Path, images) -> Path | None:
    """--images for a format without covers: the folder, checked; None when not given."""
    return _locate(src, images, [], "image folder", "images", folder=True) if images else None


# ----------------------------------------------------------------------------- reading tables

def _read_table(path: Path, header: bool, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    """A delimited file as strings (pandas), with column `line`: the record's line in the file.
    A blank line in the middle is an error; blank lines at the end are dropped. A line with more
    fields than the header is an error too: by default pandas would take the first data line's
    extra leading fields as an index and shift every column (`index_col=False` drops them instead,
    with a warning, which is turned into this error)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, na_filter=False,
                             skip_blank_lines=False, quoting=quoting, encoding="utf-8-sig", index_col=False)
        if any("does not match length of data" in str(w.message) for w in caught):
            raise pd.errors.ParserError(_first_long_line(path, sep, quoting))
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: {str(err).strip()}; each line must hold the same columns") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); re-encode the "
                         "file as UTF-8") from None
    df = df.fillna("")
    df.columns = [str(c) for c in df.columns]
    df["line"] = np.arange(len(df)) + (2 if header else 1)
    blank = (df.drop(columns="line") == "").all(axis=1).to_numpy()
    keep = len(df) - np.argmin(blank[::-1]) if not blank.all() else 0     # drop trailing blanks
    df = df.iloc[:keep]
    if blank[:keep].any():
        raise InputError(f"{path}, line {int(df.line.iloc[np.argmax(blank[:keep])])}: blank line; "
                         "delete it")
    if df.empty:
        raise InputError(f"{path} holds no records")
    return df.reset_index(drop=True)


def _first_long_line(path: Path, sep: str, quoting: int) -> str:
    """pandas' message for the first record with more fields than the header (its first record)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        records = csv.reader(f, delimiter=sep, quoting=quoting)
        width = len(next(records))
        for record in records:
            if len(record) > width:
                return long_line_message(width, records.line_num, len(record))
    return "a line holds more fields than the header"


def long_line_message(width: int, line: int, fields: int) -> str:
    """pandas' C parser's message for a line holding more fields than the header (both converters
    give it, so that they refuse a file alike)."""
    return f"Error tokenizing data. C error: Expected {width} fields in line {line}, saw {fields}"


def _column(df: pd.DataFrame, path: Path, aliases: tuple[str, ...], what: str) -> str:
    """The first of `aliases` that is a column of `df` (a file with a header)."""
    for name in aliases:
        if name in df.columns:
            return name
    found = ", ".join(c for c in df.columns if c != "line")
    raise InputError(f"{path}, line 1: no {what} column (looked for {' / '.join(aliases)}; the "
                     f"header has {found}); fix the header or point the option at the right file")


def _need_columns(df: pd.DataFrame, path: Path, count: int, layout: str) -> None:
    """A headerless file must have exactly `count` columns."""
    found = df.shape[1] - 1                                                    # without `line`
    if found < count:
        raise InputError(f"{path}, line 1: {found} column(s), expected {layout}")
    extra = (df.iloc[:, count:found] != "").any(axis=1).to_numpy()
    if extra.any():
        raise InputError(f"{path}, line {int(df.line.iloc[np.argmax(extra)])}: more than {count} "
                         f"columns, expected {layout}")


def _interactions(df: pd.DataFrame, path: Path, user: str, item: str, time: str | None) -> pd.DataFrame:
    """(user, item, time, line) from the given columns; time None: file order."""
    out = pd.DataFrame({"user": df[user].str.strip(), "item": df[item].str.strip(), "line": df.line})
    if time is None:
        out["time"] = np.arange(len(df), dtype=np.int64)
        return out
    out["time"] = _exact_times(df[time].str.strip(), df.line, path)
    return out


def _exact_times(texts: pd.Series, lines: pd.Series, path: Path) -> np.ndarray:
    """Timestamps as numbers whose order is the order of the written values.

    Integers stay integers (int64 / uint64: nanosecond epochs are above 2**53, where float64
    merges neighbours). A column that needs floats (a decimal, an integer beyond 64 bits) is
    float64 while every value is below 2**53 in magnitude (float64's order is then exact), else
    each value becomes its rank among the exact decimal values."""
    numbers = pd.to_numeric(texts, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{path}, line {int(lines.iloc[row])}: timestamp {texts.iloc[row]!r} is "
                         "not a number; fix or delete this line")
    values = numbers.to_numpy()
    if values.dtype.kind in "iu" or not len(values) or np.abs(values).max() < 2.0 ** 53:
        return values
    exact = [Decimal(text) for text in texts]
    rank = {value: k for k, value in enumerate(sorted(set(exact)))}
    return np.array([rank[value] for value in exact], dtype=np.int64)


def _csv_records(path: Path, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL):
    """(first line, fields) of every non-blank record; the csv module counts lines inside quotes."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            start = 1
            try:
                for fields in reader:
                    if fields and any(field.strip() for field in fields):
                        yield start, fields
                    start = reader.line_num + 1
            except csv.Error as err:
                raise InputError(f"{path}, line {reader.line_num}: {err}; fix the quoting") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); re-encode the "
                         "file as UTF-8") from None


def _item_table(path: Path, header: bool, columns: dict[str, object], layout: str,
                delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    """Item rows (item, title, abstract, line) of an item file.

    `columns` maps item / title / abstract to a column: an index, a header name, a tuple of header
    names (the first present), a function of the record's fields, or None (empty). `layout` says
    what the file must look like, for the error messages."""
    records = _csv_records(path, delimiter, quoting)
    names = [name.strip() for name in next(records, (1, []))[1]] if header else []

    def position(spec):
        if isinstance(spec, (str, tuple)):
            present = [name for name in ((spec,) if isinstance(spec, str) else spec) if name in names]
            if not present:
                raise InputError(f"{path}, line 1: no {' / '.join((spec,) if isinstance(spec, str) else spec)} "
                                 f"column (the header has {', '.join(names) or 'nothing'}); expected {layout}")
            return names.index(present[0])
        return spec

    picks = {key: position(spec) for key, spec in columns.items()}
    width = 1 + max(pick for pick in picks.values() if isinstance(pick, int))

    def value(pick, fields: list[str]) -> str:
        return "" if pick is None else pick(fields) if callable(pick) else fields[pick]

    rows = []
    for line, fields in records:
        if len(fields) < width:
            raise InputError(f"{path}, line {line}: {len(fields)} column(s), expected {layout}")
        rows.append((value(picks["item"], fields).strip(), value(picks["title"], fields),
                     value(picks["abstract"], fields), line))
    if not rows:
        raise InputError(f"{path} holds no items")
    return pd.DataFrame(rows, columns=["item", "title", "abstract", "line"])


def _without_header_row(items: pd.DataFrame, inter: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The rows of a headerless item file whose public copies disagree on a header row (MicroLens'
    title csv, NineRec's item csv). A first row is that header, skipped with a log line, when its id
    is no item of the interactions and is a usual column name (item_id, videoID, ...) or a
    non-number above numeric ids; otherwise it is an item."""
    first, others = items.item.iloc[0], items.item.iloc[1:]
    if inter.item.eq(first).any():
        return items
    numeric_ids = len(others) > 0 and bool(others.str.fullmatch(r"[0-9]+").all())
    if first.lower() not in ITEM_HEADERS and not (numeric_ids and not first.isdigit()):
        return items
    log.warning("%s, line %d: %r is a header row, not an item; skipped", path, items.line.iloc[0], first)
    return items.iloc[1:].reset_index(drop=True)


def _without_header_line(df: pd.DataFrame, path: Path, user: str, item: str) -> pd.DataFrame:
    """A headerless interaction table less a first line that names its columns (user_id item_id)."""
    if not (df[user].iloc[0].strip().lower() in USER_HEADERS and df[item].iloc[0].strip().lower() in ITEM_HEADERS):
        return df
    if len(df) == 1:
        raise InputError(f"{path} holds only a header line; point --inter at the interaction file")
    log.warning("%s, line 1: %r is a header line, not an interaction; skipped", path,
                " ".join(df.iloc[0, :-1]))
    return df.iloc[1:].reset_index(drop=True)
