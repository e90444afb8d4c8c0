"""How ``convert_dataset.py --stream`` (morec.tools.stream_convert) reads each source format: one
scanner per format (SCANNERS) finds the files as its reader in morec.tools.formats finds them, and
turns the interaction file into a Polars LazyFrame, one record per row, with no Python object per
interaction:

    row          the record's index in file order (equal times keep it; users are first seen by it)
    line         its line in the file, for the messages
    blank        a blank record (an error inside the file, dropped at its end, as `_read_table`)
    user, item   the names, stripped as ``str.strip`` strips (null where the field is missing)
    time         the timestamp's text; absent where the format has none (the file order is the time)

The item table (items are few: tables._item_table, the readers' own code), RecBole's user table
and the cover folder come with it. A scanner raises its reader's errors with its reader's messages.

- ``pixelrec``, ``amazon_hllm``, ``microlens`` (pairs csv): a csv with a header, columns by name
  (Polars' csv scan; a quoted field reads as pandas reads it).
- ``ninerec``: the headerless pair csv (item, user, timestamp); a first line naming the columns is
  skipped, and so is a header row of the item csv, as the reader decides (one query each).
- ``microlens`` (pairs tsv ``user \\t item item ...``, the position is the time): read line by
  line, each line's items exploded in order; their position in the file is the sort key.
- ``sasrec_txt``: ``user item`` per line, split at runs of spaces and tabs as pandas' whitespace
  separator splits; no timestamps: the row (the line order) is the time. pandas also reads quoted
  fields there, so a line holding ``"`` is refused under --stream (convert it without --stream).
- ``recbole``: ``.inter`` split at tabs (no quoting, as the reader); without a timestamp column the
  row is the time; ``.item`` and ``.user`` are read by the reader's helpers (_recbole_items, _recbole_users).

A line with more fields than the first (the header) is refused with pandas' message (in a csv, when
no double quote comes before it: else Polars'). The readers agree except on the first data line of
a file with a header: pandas then takes its first fields as an index and shifts the columns;
--stream refuses it. A double quote inside an unquoted csv field (text to pandas) is refused with
Polars' message; a lone carriage return is not a line break here (it is to pandas). Where one input
holds several faults, the first one reported may differ (a missing column is found before a blank line).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import polars as pl

from morec.errors import InputError
from morec.tools.formats import (AMAZON_HLLM_ITEMS, PIXELREC_COVERS, PIXELREC_ITEMS, _recbole_fields,
                                 _recbole_items, _recbole_users, amazon_hllm_files, pixelrec_files)
from morec.tools.tables import (ITEM_HEADERS, USER_HEADERS, _covers, _extra_images, _item_table, _locate,
                                _without_header_row, long_line_message)

log = logging.getLogger("morec.tools.convert")      # the converter's logger: the same warnings
SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace())     # what str.strip / str.split take as space
_CLASS = "".join(f"\\x{{{ord(c):x}}}" for c in SPACES)
SPACE, NOT_SPACE = f"[{_CLASS}]", f"[^{_CLASS}]"                          # the same as regex classes


@dataclass
class Scanned:
    log: pl.LazyFrame                   # row, line, blank, user, item[, time] (module docstring)
    inter_path: Path
    items: pd.DataFrame | None = None   # item, title, abstract, line (formats._item_table); None: first seen
    items_path: Path | None = None
    users: pd.DataFrame | None = None   # user, line: RecBole's .user file, which sets the user order
    users_path: Path | None = None
    covers: Path | None = None


def collect(query: pl.LazyFrame, path: Path) -> pl.DataFrame:
    """The query's result through Polars' streaming engine; a parse error is one InputError."""
    try:
        return query.collect(engine="streaming")
    except pl.exceptions.PolarsError as err:
        message = str(err).splitlines()[0]
        if "utf" in message.lower():
            raise InputError(f"{path}: not UTF-8 ({message}); re-encode the file as UTF-8") from None
        long = _long_csv_line(path) if "more fields than defined" in message else None   # a csv line too long
        fix = ("a double quote inside an unquoted field or a quote left open (pandas, without --stream, reads "
               "the first as text): fix the quoting" if "malformed" in message or "could not parse" in message else
               "each line must hold the same columns" + ("" if long else " (and the file must be UTF-8)"))
        message = long or message
        raise InputError(f"{path}: {message}; {fix}") from None


def _long_csv_line(path: Path) -> str | None:
    """pandas' message for the csv's first line with more fields than its first line (`_read_table`'s
    error), found by counting commas; None when a double quote comes first (commas may be quoted)."""
    text = pl.col("text")
    lines = pl.scan_lines(path, name="text").with_row_index("row").with_columns(
        (text.str.count_matches(",", literal=True) + 1).alias("fields"))
    width = lines.filter(pl.col("row") == 0).select("fields")
    try:
        found = (lines.join(width.rename({"fields": "width"}), how="cross")
                 .filter((pl.col("fields") > pl.col("width")) | text.str.contains('"', literal=True)).sort("row")
                 .head(1).collect(engine="streaming"))
    except pl.exceptions.PolarsError:                      # not UTF-8: Polars' own message stands
        return None
    if not len(found) or '"' in found["text"][0]:
        return None
    return long_line_message(found["width"][0], found["row"][0] + 1, found["fields"][0])


def first_where(scan: pl.LazyFrame, condition: pl.Expr, path: Path) -> dict | None:
    """The first record (in file order) meeting `condition`, as a dict; None if there is none."""
    found = collect(scan.filter(condition).sort("row").head(1), path)
    return found.row(0, named=True) if len(found) else None


def stripped(expr: pl.Expr) -> pl.Expr:
    return expr.str.strip_chars(SPACES)


# ----------------------------------------------------------------------------- shared readers

def _no_column(path: Path, aliases: tuple[str, ...], what: str, header: list[str]) -> InputError:
    return InputError(f"{path}, line 1: no {what} column (looked for {' / '.join(aliases)}; the header has "
                      f"{', '.join(header) or 'nothing'}); fix the header or point the option at the right file")


def _csv_log(path: Path, columns: dict, layout: str | None = None) -> pl.LazyFrame:
    """A comma csv: with a header (`columns`: user / item / time -> names, the first present), or,
    given its `layout`, without (`columns` -> positions; the first line sets the width)."""
    if not path.stat().st_size:
        raise InputError(f"{path} is empty")
    header = layout is None
    names = _head(path, header).columns
    if any("\ufffd" in name for name in names):                # Polars reads a header's bad bytes as U+FFFD
        raise InputError(f"{path}: not UTF-8 (in line 1); re-encode the file as UTF-8")
    if header:
        picks = {}
        for what, aliases in columns.items():
            picks[what] = next((name for name in aliases if name in names), None)
            if picks[what] is None:
                raise _no_column(path, aliases, {"time": "timestamp"}.get(what, what), names)
    else:
        count = 1 + max(columns.values())
        if len(names) < count:
            raise InputError(f"{path}, line 1: {len(names)} column(s), expected {layout}")
        picks = {what: names[k] for what, k in columns.items()}
    scan = pl.scan_csv(path, has_header=header, infer_schema=False).with_row_index("row")
    if not header and len(names) > count:
        extra = first_where(scan, pl.any_horizontal(pl.col(names[count:]).fill_null("") != ""), path)
        if extra:
            raise InputError(f"{path}, line {extra['row'] + 1}: more than {count} columns, expected {layout}")
    return scan.select("row", (pl.col("row") + (2 if header else 1)).alias("line"),
                       pl.all_horizontal(pl.col(names).fill_null("") == "").alias("blank"),
                       *[stripped(pl.col(name)).alias(what) for what, name in picks.items()])


def _head(path: Path, header: bool) -> pl.DataFrame:
    """The csv's first record (its header's names, or column_1, column_2, ... without one)."""
    return collect(pl.scan_csv(path, has_header=header, infer_schema=False, n_rows=1), path)


def _split_lines(path: Path, fields: pl.Expr) -> pl.LazyFrame:
    """row, line, text (one per line of the file, a BOM dropped) and its `fields` (a list)."""
    if not path.stat().st_size:
        raise InputError(f"{path} is empty")
    text = pl.col("text")
    return (pl.scan_lines(path, name="text").with_row_index("row")
            .with_columns(pl.when(pl.col("row") == 0).then(text.str.strip_prefix("\ufeff")).otherwise(text))
            .with_columns((pl.col("row") + 1).alias("line"), fields.alias("fields")))


def _refuse_long_lines(scan: pl.LazyFrame, path: Path, width: int) -> None:
    """A line with more than `width` fields, refused as `_read_table` refuses it (pandas' message)."""
    long = first_where(scan, pl.col("fields").list.len() > width, path)
    if long:
        raise InputError(f"{path}: {long_line_message(width, long['line'], len(long['fields']))}; "
                         "each line must hold the same columns")


def _field(k: int) -> pl.Expr:
    return stripped(pl.col("fields").list.get(k, null_on_oob=True))


def _without_header_line(scan: pl.LazyFrame, path: Path, first_fields: list[str]) -> pl.LazyFrame:
    """The log less a first line that names its columns (tables._without_header_line)."""
    first = collect(scan.filter(pl.col("row") == 0).select("user", "item"), path)
    user, item = ((first[name][0] or "").lower() if len(first) else "" for name in ("user", "item"))
    if not (user in USER_HEADERS and item in ITEM_HEADERS):
        return scan
    if collect(scan.filter((pl.col("row") > 0) & ~pl.col("blank")).select(pl.len()), path).item() == 0:
        raise InputError(f"{path} holds only a header line; point --inter at the interaction file")
    log.warning("%s, line 1: %r is a header line, not an interaction; skipped", path, " ".join(first_fields))
    return scan.filter(pl.col("row") > 0)


def _without_item_header(items: pd.DataFrame, scan: pl.LazyFrame, path: Path, inter_path: Path) -> pd.DataFrame:
    """A headerless item file less a first row that is a header (tables._without_header_row)."""
    first = items.item.iloc[0]
    seen = collect(scan.filter(pl.col("item") == first).select(pl.len()), inter_path).item() > 0
    return _without_header_row(items, pd.DataFrame({"item": pd.Series([first] if seen else [], dtype=object)}), path)


# ----------------------------------------------------------------------------- one scanner per format

def scan_pixelrec(src: Path, inter, items, images, no_images) -> Scanned:
    inter_path, items_path = pixelrec_files(src, inter, items)
    scan = _csv_log(inter_path, {"user": ("user_id",), "item": ("item_id",), "time": ("timestamp",)})
    table = _item_table(items_path, True, *PIXELREC_ITEMS)
    return Scanned(scan, inter_path, table, items_path, covers=_covers(src, images, no_images, PIXELREC_COVERS))


def scan_amazon_hllm(src: Path, inter, items, images, no_images) -> Scanned:
    inter_path, items_path = amazon_hllm_files(src, inter, items)
    scan = _csv_log(inter_path, {"user": ("user_id",), "item": ("item_id",), "time": ("timestamp",)})
    table = _item_table(items_path, True, *AMAZON_HLLM_ITEMS)
    return Scanned(scan, inter_path, table, items_path, covers=_extra_images(src, images))


def scan_microlens(src: Path, inter, items, images, no_images) -> Scanned:
    inter_path = _locate(src, inter, ["*_pairs.csv", "*_pairs.tsv"], "pairs file", "inter")
    items_path = _locate(src, items, ["*_title_en.csv", "*_titles.csv", "*title*.csv"], "title csv", "items")
    scan = _pairs_tsv(inter_path) if inter_path.suffix == ".tsv" else _csv_log(inter_path, {
        "user": ("user", "userID", "user_id"), "item": ("item", "videoID", "item_id", "video_id"), "time": ("timestamp",)})
    titles = _item_table(items_path, False, {"item": 0, "title": lambda fields: ",".join(fields[1:]), "abstract": None},
                         "'item_id,title' (no header)")
    return Scanned(scan, inter_path, _without_item_header(titles, scan, items_path, inter_path), items_path,
                   covers=_covers(src, images, no_images, ["covers", "cover"]))


def _pairs_tsv(path: Path) -> pl.LazyFrame:
    """MicroLens' pairs tsv, one row per item, `row` its position in the file (the time), checked as
    formats._microlens_tsv checks it: blank lines skipped, 2 fields, each user on one line, header rows."""
    scan = _split_lines(path, pl.col("text").str.split("\t")).filter(~pl.col("text").str.contains(f"^{SPACE}*$"))
    scan = scan.select("line", (pl.col("fields").list.len() == 2).alias("pair"), _field(0).alias("user"),
                       _field(1).str.to_lowercase().is_in(ITEM_HEADERS).alias("item_header"),
                       pl.col("fields").list.get(1, null_on_oob=True).str.extract_all(f"{NOT_SPACE}+").alias("items"))
    header = pl.col("pair") & pl.col("user").str.to_lowercase().is_in(USER_HEADERS) & pl.col("item_header")
    first_user = collect(scan.filter(pl.col("pair") & ~header & (pl.col("items").list.len() > 0))
                         .select(pl.col("line").min()), path).item()     # the reader skips header rows before it
    scan = scan.with_columns((header & (pl.col("line") < (first_user or 2 ** 62))).alias("skipped"))
    lines = scan.filter(pl.col("pair") & ~pl.col("skipped"))
    again = collect(lines.group_by("user").agg(pl.col("line").min().alias("first"), pl.col("line").filter(
        pl.col("line") > pl.col("line").min()).min().alias("again")).drop_nulls("again").sort("again").head(1), path)
    bad = collect(scan.filter(~pl.col("pair")).select(pl.col("line").min()), path).item()
    if bad is not None and (not len(again) or bad < again["again"][0]):
        raise InputError(f"{path}, line {bad}: expected 'user\\titem item ...'")
    if len(again):
        raise InputError(f"{path}, line {again['again'][0]}: user {again['user'][0]!r} already has line "
                         f"{again['first'][0]}; a pairs tsv holds each user once: join the two lines in time order")
    if first_user is None:
        raise InputError(f"{path} holds no user lines")
    for line, user in collect(scan.filter(pl.col("skipped")).select("line", "user"), path).rows():
        log.warning("%s, line %d: %r is a header row, not a user; skipped", path, line, user)
    return (lines.select("line", "user", pl.col("items").alias("item")).explode("item").drop_nulls("item")
            .with_row_index("row").with_columns(pl.lit(False).alias("blank")))


def scan_ninerec(src: Path, inter, items, images, no_images) -> Scanned:
    inter_path = _locate(src, inter, ["*_pair.csv"], "pair csv", "inter")
    stem = inter_path.name[:-len("_pair.csv")] if inter_path.name.endswith("_pair.csv") else "*"
    items_path = _locate(src, items, [f"{stem}_item.csv", "*_item.csv"], "item csv", "items")
    scan = _csv_log(inter_path, {"item": 0, "user": 1, "time": 2}, "'video_id,user_id,timestamp' (no header)")
    table = _item_table(items_path, False, {"item": 0, "title": 2, "abstract": 1}, "'video_id,title,title_en' (no header)")
    scan = _without_header_line(scan, inter_path, [value or "" for value in _head(inter_path, False).row(0)])
    return Scanned(scan, inter_path, _without_item_header(table, scan, items_path, inter_path), items_path,
                   covers=_covers(src, images, no_images, [f"{stem}_cover", "*_cover"]))


def scan_sasrec_txt(src: Path, inter, items, images, no_images) -> Scanned:
    if items is not None:
        raise InputError("sasrec_txt has no item file; drop --items")
    path = src if src.is_file() and inter is None else _locate(src, inter, ["*.txt"], "txt file", "inter")
    scan = _split_lines(path, pl.col("text").str.extract_all(r"[^ \t]+"))
    quoted = first_where(scan, pl.col("text").str.contains('"', literal=True), path)
    if quoted:
        raise InputError(f"{path}, line {quoted['line']}: a double quote, which the converter without --stream reads "
                         "as quoting (--stream splits at spaces and tabs only); convert this file without --stream")
    first = collect(scan.filter(pl.col("row") == 0).select("fields"), path)["fields"][0].to_list()
    if not first:
        raise InputError(f"{path} is empty")                 # pandas finds no columns on a blank first line
    _refuse_long_lines(scan, path, len(first))
    layout = "'user item' per line"
    if len(first) < 2:
        raise InputError(f"{path}, line 1: {len(first)} column(s), expected {layout}")
    extra = first_where(scan, pl.col("fields").list.len() > 2, path)
    if extra:
        raise InputError(f"{path}, line {extra['line']}: more than 2 columns, expected {layout}")
    scan = scan.select("row", "line", (pl.col("fields").list.len() == 0).alias("blank"),
                       _field(0).alias("user"), _field(1).alias("item"))
    return Scanned(_without_header_line(scan, path, first), path, covers=_extra_images(src, images))


def scan_recbole(src: Path, inter, items, images, no_images) -> Scanned:
    inter_path = _locate(src, inter, ["*.inter"], ".inter file", "inter")
    stem = inter_path.with_suffix("")
    items_path = _locate(src, items, [stem.name + ".item"], ".item file", "items", required=False)
    users_path = stem.with_suffix(".user") if stem.with_suffix(".user").is_file() else None
    names = [name for name, _ in _recbole_fields(inter_path)]
    scan = _split_lines(inter_path, pl.col("text").str.split("\t")).filter(pl.col("row") > 0)
    _refuse_long_lines(scan, inter_path, len(names))
    for name in ("user_id", "item_id"):
        if name not in names:
            raise _no_column(inter_path, (name,), name, names)
    columns = {"user": "user_id", "item": "item_id", **({"time": "timestamp"} if "timestamp" in names else {})}
    scan = scan.select("row", "line", pl.col("text").str.replace_all("\t", "", literal=True).eq("").alias("blank"),
                       *[_field(names.index(name)).alias(what) for what, name in columns.items()])
    return Scanned(scan, inter_path, _recbole_items(items_path) if items_path else None, items_path,
                   _recbole_users(users_path) if users_path else None, users_path, _extra_images(src, images))


SCANNERS = {"pixelrec": scan_pixelrec, "microlens": scan_microlens, "ninerec": scan_ninerec,
            "amazon_hllm": scan_amazon_hllm, "sasrec_txt": scan_sasrec_txt, "recbole": scan_recbole}
