"""The interaction-log formats (``pixelrec``, ``amazon_hllm``: a csv of ``item_id,user_id,timestamp``
with a header, plus an item csv) converted with bounded memory: ``convert_dataset.py --stream``.

`morec.tools.convert.convert` holds every interaction as Python strings (0.27 GB per million
interactions over the imports, measured at 3.75M: docs/benchmarks.md); this path writes the same
users.tsv and items.tsv (byte for byte: tests/test_prepared.py) while holding, per interaction,
20 bytes of integer codes:

1. the interaction csv is scanned by Polars (lazy, its streaming engine): each user's first row
   gives the user order (first seen), the item csv (read as `convert` reads it) the item codes;
2. one more streaming pass turns every row into (user code u32, item code u32, time i64, row u32)
   and sorts them (user, time, row: equal times keep file order, as convert's stable sort);
3. users.tsv is written 131,072 users at a time, the item names gathered by Polars.

Why Polars (not DuckDB, not pandas): its lazy csv scan and streaming engine run the group-by,
the joins and the sort over the file without making Python objects of its rows, as a dataframe
API in Python from one wheel (no SQL strings, no database file, no second type system); pandas
reads the whole file into memory. The sorted codes (20 bytes per interaction, ~2 GB at 100M)
are held in memory: within the bound of 0.1 GB per million interactions (7.5 GB peak RSS
measured at 100M, imports included), so nothing needs to spill to disk at Pixel8M's size.

The same checks as `convert`, with the same messages (a blank line, an empty or whitespace-holding
name, a timestamp that is not a number, an item the item file lacks, an item listed twice), and
the same writing: a temp folder ``.DST.tmpPID`` renamed to DST at the end, removed on any error; a
conversion killed midway leaves only that temp folder, removed by the next conversion to DST.
Differences: integer timestamps must fit int64 and others float64 below 2**53 (else one error
pointing to the converter without --stream); CARD.md holds the counts only (the full card of
scripts/describe_dataset.py reads every line into memory). Line numbers count one record per line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from morec.atomic_io import write_text_atomic
from morec.errors import InputError
from morec.tools.convert import (IMAGE_LMDB, _check_destination, _check_names, _check_options, _first_duplicate,
                                 _one_line, write_folder_into_place)
from morec.tools.formats import _covers, _extra_images, _item_table, _locate
from morec.tools.lmdb_builder import build_lmdb, find_image_files

USERS_PER_WRITE = 1 << 17                # users.tsv is written this many users at a time
# format: (interaction csv patterns, item csv patterns, item columns, item layout, cover folder patterns)
FORMATS = {
    "pixelrec": (["pixelrec_interaction/*.csv", "dataset/*.csv", "*interaction*.csv"],
                 ["pixelrec_iteminfo/*.csv", "information/*.csv", "item_info*.csv"],
                 {"item": "item_id", "title": ("title_en", "title"), "abstract": "description"},
                 "a header with item_id, title (or title_en) and description", ["cover", "covers", "images"]),
    "amazon_hllm": (["dataset/*.csv"], ["information/*.csv"],
                    {"item": "item_id", "title": "title", "abstract": "description"},
                    "a header with item_id, description and title", None),
}


def stream_convert(fmt: str, src: str | Path, dst: str | Path, inter=None, items=None, images=None,
                   no_images: bool = False, allow_missing_images: bool = False, resize: int | None = None,
                   max_seq_len: int = 20, min_seq_len: int = 5) -> dict:
    """Convert `src` (format `fmt`) into the new folder `dst` with bounded memory; returns the counts."""
    if fmt not in FORMATS:
        raise InputError(f"--stream converts {', '.join(FORMATS)} (interaction-log csv files); convert {fmt!r} "
                         "without --stream")
    _check_options(max_seq_len, min_seq_len, resize)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"source {src} not found; pass the folder holding the {fmt} files")
    _check_destination(dst)
    inter_glob, items_glob, columns, layout, covers = FORMATS[fmt]
    inter_path = _locate(src, inter, inter_glob, "interaction csv", "inter")
    items_path = _locate(src, items, items_glob, "item information csv", "items")
    cover_folder = _covers(src, images, no_images, covers) if covers else _extra_images(src, images)
    if resize is not None and cover_folder is None:
        raise InputError(f"--resize {resize} applies to covers, and this conversion has none; drop "
                         "--resize (or give the covers with --images)")
    table = _item_table(items_path, True, columns, layout)
    log_rows = _interactions(inter_path, table, items_path)
    item_names = list(table.item)
    if cover_folder is not None:
        _check_covers(item_names, cover_folder, allow_missing_images)
    counts = {"users": len(log_rows[2]), "items": len(item_names), "interactions": len(log_rows[0])}
    item_lines = [f"{name}\t{title}\t{abstract}".rstrip("\t") for name, title, abstract in
                  zip(table.item, _one_line(table.title), _one_line(table.abstract))]
    del table
    write_folder_into_place(dst, lambda folder: _write_files(folder, log_rows, item_names, item_lines, cover_folder,
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

def _scan(path: Path) -> pl.LazyFrame:
    """The csv as strings with its record index `row` (line = row + 2); user, item stripped."""
    header = pl.read_csv(path, n_rows=0, infer_schema=False).columns if path.stat().st_size else []
    for name in ("user_id", "item_id", "timestamp"):
        if name not in header:
            raise InputError(f"{path}, line 1: no {name} column (looked for {name}; the header has "
                             f"{', '.join(header) or 'nothing'}); fix the header or point the option at the right file")
    return pl.scan_csv(path, infer_schema=False).with_row_index("row").select(
        "row", pl.col("user_id").str.strip_chars().alias("user"), pl.col("item_id").str.strip_chars().alias("item"),
        pl.col("timestamp").str.strip_chars().alias("time"))


def _collect(query: pl.LazyFrame, path: Path) -> pl.DataFrame:
    try:
        return query.collect(engine="streaming")
    except pl.exceptions.PolarsError as err:
        raise InputError(f"{path}: {str(err).splitlines()[0]}; each line must hold the same columns "
                         "(and the file must be UTF-8)") from None


def _interactions(path: Path, table, items_path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The log's (interactions,) user codes and item codes (0-based rows of `table`, the item file)
    sorted by user, time and row, and the user names in first-seen order; checked as convert
    checks (a blank line, timestamps, names, then the item file's names, then unknown items)."""
    scan = _scan(path)
    blank = pl.col("user").is_null() & pl.col("item").is_null() & pl.col("time").is_null()
    last = _collect(scan.select(pl.col("row").filter(~blank).max()), path)["row"][0]
    if last is None:
        raise InputError(f"{path} holds no records")
    scan = scan.filter(pl.col("row") <= last)                     # trailing blank lines are dropped
    kind = _refuse_bad_rows(scan, path)
    _check_names(table, "item", items_path, "item")
    _first_duplicate(table, "item", items_path, "item")
    users = _collect(scan.group_by("user").agg(pl.col("row").min().alias("first")).sort("first"), path)
    user_names = users["user"].to_list()
    codes = pl.LazyFrame({"user": users["user"], "user_code": pl.Series(np.arange(len(users), dtype=np.uint32))})
    item_codes = pl.LazyFrame({"item": list(table.item), "item_code": pl.Series(np.arange(len(table), dtype=np.uint32))})
    del users
    joined = scan.join(codes, on="user").join(item_codes, on="item", how="left")
    unknown = _collect(joined.filter(pl.col("item_code").is_null()).select("row", "item").sort("row").head(1), path)
    if len(unknown):
        raise InputError(f"{path}, line {unknown['row'][0] + 2}: item {unknown['item'][0]!r} is not in the item file "
                         f"{items_path}; add it there or delete the line")
    ordered = _collect(joined.select("user_code", "item_code", pl.col("time").cast(kind).alias("time"), "row")
                       .sort(["user_code", "time", "row"]).select("user_code", "item_code"), path)
    return ordered["user_code"].to_numpy(), ordered["item_code"].to_numpy(), user_names


def _refuse_bad_rows(scan: pl.LazyFrame, path: Path) -> type[pl.DataType]:
    """convert's checks of the log's lines, in its order: a blank line, timestamps (`_time_kind`,
    returned), then the first bad user name, then the first bad item name (empty or holding whitespace)."""
    blank = pl.col("user").is_null() & pl.col("item").is_null() & pl.col("time").is_null()
    bad = {"blank": blank}
    for column in ("user", "item"):
        bad[column] = ~blank & (pl.col(column).fill_null("").eq("") | pl.col(column).str.contains(r"[\s\x1c-\x1f]"))
    found = _collect(scan.select([pl.col("row").filter(test).min().alias(name) for name, test in bad.items()]
                                 + [pl.col(c).filter(bad[c]).first().alias(f"{c}_value") for c in ("user", "item")]), path)
    if found["blank"][0] is not None:
        raise InputError(f"{path}, line {found['blank'][0] + 2}: blank line; delete it")
    kind = _time_kind(scan, path)
    for what in ("user", "item"):
        if found[what][0] is not None:
            name = found[f"{what}_value"][0] or ""
            problem = "is empty" if name == "" else f"{name!r} holds whitespace"
            raise InputError(f"{path}, line {found[what][0] + 2}: {what} name {problem}; the users file "
                             "separates names by spaces, so fix or rename it")
    return kind


def _time_kind(scan: pl.LazyFrame, path: Path) -> type[pl.DataType]:
    """Int64 when every timestamp is an integer, else Float64 when every one is a number below
    2**53 in magnitude (float64 keeps their order exactly); anything else is an error."""
    found = _collect(scan.select(
        pl.col("time").cast(pl.Int64, strict=False).is_null().any().alias("not_int"),
        pl.col("row").filter(pl.col("time").cast(pl.Float64, strict=False).is_null()).min().alias("bad_row"),
        pl.col("time").filter(pl.col("time").cast(pl.Float64, strict=False).is_null()).first().alias("bad"),
        pl.col("time").cast(pl.Float64, strict=False).abs().max().alias("largest")), path)
    if found["bad_row"][0] is not None:
        raise InputError(f"{path}, line {found['bad_row'][0] + 2}: timestamp {found['bad'][0] or ''!r} is "
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
            f.write(("\n".join(lines.to_list()) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
