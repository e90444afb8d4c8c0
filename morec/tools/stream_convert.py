"""Every format of morec.tools.formats (pixelrec, microlens, ninerec, amazon_hllm, sasrec_txt,
recbole) converted with bounded memory: ``convert_dataset.py --stream``.

`morec.tools.convert.convert` holds every interaction as Python strings (0.27 GB per million
interactions over the imports, measured at 3.75M: docs/benchmarks.md); this path writes the same
users.tsv and items.tsv (byte for byte: tests/test_prepared.py, tests/test_stream_convert.py) while
holding, per interaction, 20 bytes of integer codes:

1. the format's scanner (morec.tools.stream_formats) gives the interaction file as a Polars lazy
   frame (row, line, user, item, time: its streaming engine reads it, no Python object per row),
   the item table (read as `convert` reads it) and RecBole's user table;
2. one streaming pass each finds the user order (the user file, else each user's first row), the
   item codes (the item file's order, else first seen), and then turns every row into (user code
   u32, item code u32, time, row u32) and sorts them (user, time, row: equal times keep file order,
   as convert's stable sort; a format without timestamps sorts by (user, row): the file order);
3. users.tsv is written 131,072 users at a time, the item names gathered by Polars.

Why Polars (not DuckDB, not pandas): its lazy csv scan and streaming engine run the group-by,
the joins and the sort over the file without making Python objects of its rows, as a dataframe
API in Python from one wheel (no SQL strings, no database file, no second type system); pandas
reads the whole file into memory. The sorted codes (20 bytes per interaction, ~2 GB at 100M)
are held in memory: within the bound of 0.1 GB per million interactions (7.5 GB peak RSS
measured at 100M, imports included), so nothing needs to spill to disk at Pixel8M's size.

The same checks as `convert`, with the same messages (a blank line, an empty or whitespace-holding
name, a timestamp that is not a number, an item the item file lacks, an item listed twice, a user
the user file lacks, each format's own: stream_formats), and the same writing: a temp folder
``.DST.tmpPID`` renamed to DST at the end, removed on any error; a conversion killed midway leaves
only that temp folder, removed by the next conversion to DST. Differences: integer timestamps must
fit int64 and others float64 below 2**53 (else one error pointing to the converter without
--stream); a SASRec txt line holding a double quote is refused (pandas reads quoted fields there);
a line with more fields than the header is refused (stream_formats); CARD.md holds the counts only
(the full card of scripts/describe_dataset.py reads every line into memory).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from morec.atomic_io import write_text_atomic
from morec.errors import InputError
from morec.tools.convert import (IMAGE_LMDB, _check_names, _first_duplicate, _one_line, check_request,
                                 write_folder_into_place)
from morec.tools.lmdb_builder import build_lmdb, find_image_files
from morec.tools.stream_formats import SCANNERS, SPACE, Scanned, collect

USERS_PER_WRITE = 1 << 17                # users.tsv is written this many users at a time


def stream_convert(fmt: str, src: str | Path, dst: str | Path, inter=None, items=None, images=None,
                   no_images: bool = False, allow_missing_images: bool = False, resize: int | None = None,
                   max_seq_len: int = 20, min_seq_len: int = 5) -> dict:
    """Convert `src` (format `fmt`) into the new folder `dst` with bounded memory; returns the counts."""
    src, dst = check_request(fmt, SCANNERS, src, dst, max_seq_len, min_seq_len, resize)
    scanned = SCANNERS[fmt](src, inter, items, images, no_images)
    if resize is not None and scanned.covers is None:
        raise InputError(f"--resize {resize} applies to covers, and this conversion has none; drop "
                         "--resize (or give the covers with --images)")
    user_codes, item_codes, user_names, table = _interactions(scanned)
    item_names = list(table.item)
    if scanned.covers is not None:
        _check_covers(item_names, scanned.covers, allow_missing_images)
    counts = {"users": int(np.count_nonzero(np.bincount(user_codes, minlength=len(user_names)))),
              "items": len(item_names), "interactions": len(user_codes)}
    item_lines = [f"{name}\t{title}\t{abstract}".rstrip("\t") for name, title, abstract in
                  zip(table.item, _one_line(table.title), _one_line(table.abstract))]
    del table
    log_rows = user_codes, item_codes, user_names
    write_folder_into_place(dst, lambda folder: _write_files(folder, log_rows, item_names, item_lines, scanned.covers,
                                                            resize, counts, max_seq_len, min_seq_len))
    return counts


def _check_covers(names: list[str], folder: Path, allow_missing: bool) -> None:
    found = find_image_files(folder)
    missing = [name for name in names if name not in found]
    if missing and not allow_missing:
        raise InputError(f"{len(missing)} of {len(names)} items have no image in {folder} "
                         f"(first: {', '.join(missing[:3])}); add <item>.jpg files, or pass "
                         "--allow_missing_images (they then read as a blank image)")


# ----------------------------------------------------------------------------- the interaction log

def _interactions(scanned: Scanned) -> tuple[np.ndarray, np.ndarray, list[str], pd.DataFrame]:
    """The log's (interactions,) user codes and item codes (0-based rows of the returned item table)
    sorted by user, time and row, the user names in order, the item table; checked as convert
    checks (a blank line, timestamps, names, the item file, unknown items, the user file, unknown users)."""
    path, scan = scanned.inter_path, scanned.log
    last = collect(scan.select(pl.col("row").filter(~pl.col("blank")).max()), path)["row"][0]
    if last is None:
        raise InputError(f"{path} holds no records")
    scan = scan.filter(pl.col("row") <= last)                     # trailing blank lines are dropped
    kind = _refuse_bad_rows(scan, path)
    table = _item_table_checked(scanned, scan)
    item_codes = pl.LazyFrame({"item": list(table.item), "item_code": pl.Series(np.arange(len(table), dtype=np.uint32))})
    joined = scan.join(item_codes, on="item", how="left")
    unknown = _collect_first(joined.filter(pl.col("item_code").is_null()), path)
    if unknown:
        raise InputError(f"{path}, line {unknown['line']}: item {unknown['item']!r} is not in the item file "
                         f"{scanned.items_path}; add it there or delete the line")
    user_names = _user_order(scanned, scan)
    user_codes = pl.LazyFrame({"user": user_names, "user_code": pl.Series(np.arange(len(user_names), dtype=np.uint32))})
    joined = joined.join(user_codes, on="user", how="left")
    if scanned.users is not None:
        unknown = _collect_first(joined.filter(pl.col("user_code").is_null()), path)
        if unknown:
            raise InputError(f"{path}, line {unknown['line']}: user {unknown['user']!r} is not in "
                             f"{scanned.users_path}; add the user there")
    times = [pl.col("time").cast(kind)] if kind else []           # no timestamps: the row is the time
    ordered = collect(joined.select("user_code", "item_code", *times, "row").sort(["user_code", *(["time"] if kind else []),
                                                                                 "row"]).select("user_code", "item_code"), path)
    return ordered["user_code"].to_numpy(), ordered["item_code"].to_numpy(), user_names, table


def _collect_first(scan: pl.LazyFrame, path: Path) -> dict | None:
    found = collect(scan.select("row", "line", "user", "item").sort("row").head(1), path)
    return found.row(0, named=True) if len(found) else None


def _item_table_checked(scanned: Scanned, scan: pl.LazyFrame) -> pd.DataFrame:
    """The item file's table, its names checked as convert checks them; without one, the items
    first seen in the log (no text)."""
    if scanned.items is None:
        names = collect(scan.group_by("item").agg(pl.col("row").min()).sort("row"), scanned.inter_path)["item"]
        return pd.DataFrame({"item": names.to_list(), "title": "", "abstract": ""})
    _check_names(scanned.items, "item", scanned.items_path, "item")
    _first_duplicate(scanned.items, "item", scanned.items_path, "item")
    return scanned.items


def _user_order(scanned: Scanned, scan: pl.LazyFrame) -> list[str]:
    """The user file's users (checked as convert checks them), else the users first seen in the log."""
    if scanned.users is None:
        return collect(scan.group_by("user").agg(pl.col("row").min()).sort("row"), scanned.inter_path)["user"].to_list()
    _check_names(scanned.users, "user", scanned.users_path, "user")
    _first_duplicate(scanned.users, "user", scanned.users_path, "user")
    return list(scanned.users.user)


def _refuse_bad_rows(scan: pl.LazyFrame, path: Path) -> type[pl.DataType] | None:
    """convert's checks of the log's lines, in its order: a blank line, timestamps (`_time_kind`,
    returned; None without timestamps), then the first bad user name, then the first bad item name
    (empty or holding whitespace)."""
    blank = pl.col("blank")
    bad = {"blank": blank}
    for column in ("user", "item"):
        bad[column] = ~blank & (pl.col(column).fill_null("").eq("") | pl.col(column).str.contains(SPACE))
    found = collect(scan.select([pl.col("line").filter(test).min().alias(name) for name, test in bad.items()]
                                + [pl.col(c).filter(bad[c]).first().alias(f"{c}_value") for c in ("user", "item")]), path)
    if found["blank"][0] is not None:
        raise InputError(f"{path}, line {found['blank'][0]}: blank line; delete it")
    kind = _time_kind(scan, path) if "time" in scan.collect_schema() else None
    for what in ("user", "item"):
        if found[what][0] is not None:
            name = found[f"{what}_value"][0] or ""
            problem = "is empty" if name == "" else f"{name!r} holds whitespace"
            raise InputError(f"{path}, line {found[what][0]}: {what} name {problem}; the users file "
                             "separates names by spaces, so fix or rename it")
    return kind


def _time_kind(scan: pl.LazyFrame, path: Path) -> type[pl.DataType]:
    """Int64 when every timestamp is an integer, else Float64 when every one is a number below
    2**53 in magnitude (float64 keeps their order exactly); anything else (NaN too) is an error."""
    number = pl.col("time").cast(pl.Float64, strict=False)
    bad = number.is_null() | number.is_nan()
    found = collect(scan.select(
        pl.col("time").cast(pl.Int64, strict=False).is_null().any().alias("not_int"),
        pl.col("line").filter(bad).min().alias("bad_line"), pl.col("time").filter(bad).first().alias("bad"),
        number.abs().max().alias("largest")), path)
    if found["bad_line"][0] is not None:
        raise InputError(f"{path}, line {found['bad_line'][0]}: timestamp {found['bad'][0] or ''!r} is "
                         "not a number; fix or delete this line")
    if not found["not_int"][0]:
        return pl.Int64
    if found["largest"][0] >= 2.0 ** 53:
        raise InputError(f"{path}: timestamps that are not int64 integers reach {found['largest'][0]:g}, beyond "
                         "float64's exact range; convert without --stream (it ranks the exact values)")
    return pl.Float64


# ----------------------------------------------------------------------------- writing

def _write_files(folder: Path, log_rows, item_names: list[str], item_lines: list[str], covers: Path | None,
                 resize: int | None, counts: dict, max_seq_len: int, min_seq_len: int) -> None:
    user_codes, item_codes, user_names = log_rows
    _write_users(folder / "users.tsv", user_codes, item_codes, user_names, item_names)
    write_text_atomic(folder / "items.tsv", "".join(line + "\n" for line in item_lines))
    if covers is not None:
        build_lmdb(covers, folder / IMAGE_LMDB, item_names, resize=resize, allow_missing=True)
    write_text_atomic(folder / "CARD.md", f"# {folder.name.split('.tmp')[0].lstrip('.')}\n\n"
                      f"Converted with `scripts/convert_dataset.py --stream` (bounded memory): {counts['users']:,} users, "
                      f"{counts['items']:,} items, {counts['interactions']:,} interactions.\n"
                      f"The full card (what the protocol keeps at L={max_seq_len}, min_seq_len={min_seq_len}, "
                      "popularity, content, baselines): `python scripts/describe_dataset.py` on this folder "
                      "(it reads every line into memory).\n")


def _write_users(path: Path, user_codes: np.ndarray, item_codes: np.ndarray, user_names: list[str],
                 item_names: list[str]) -> None:
    """``user \\t item item ...`` per user, USERS_PER_WRITE users at a time (sorted codes in)."""
    ends = np.cumsum(np.bincount(user_codes, minlength=len(user_names)))
    items = pl.Series(item_names)
    users = pl.Series(user_names)
    with open(path, "wb") as f:
        for first in range(0, len(user_names), USERS_PER_WRITE):
            last = min(first + USERS_PER_WRITE, len(user_names))
            start, stop = (ends[first - 1] if first else 0), ends[last - 1]
            block = pl.DataFrame({"user": user_codes[start:stop], "item": items.gather(item_codes[start:stop])})
            joined = block.group_by("user", maintain_order=True).agg(pl.col("item").str.join(" "))
            lines = users.gather(joined["user"]) + "\t" + joined["item"]
            if len(lines):                                    # a block of users of a user file may have none
                f.write(("\n".join(lines.to_list()) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
