"""The readers of morec.tools.convert: one short reader per public format turns its files into
a `Source` (the interactions in file order, the item table, the user table, the cover folder);
the shared writer in morec.tools.convert checks and writes it.

Layouts, and where each was read (GitHub repository: file)
- ``pixelrec``: westlake-repl/PixelRec: dataset/readme.md (folders ``pixelrec_interaction/`` with
  ``item_id,user_id,timestamp`` csvs, ``pixelrec_iteminfo/`` with ``item_id, view_number, ...,
  title, tag, description``, and ``cover/<item_id>.jpg``; an older version names the item file
  ``item_info.csv`` with ``title_en, title, description, tag``), code/REC/data/dataload.py (the
  interaction csv has a header, columns item_id, user_id, timestamp), code/generate_lmdb.py
  (covers in ``images/<item_id>.jpg``). bytedance/HLLM README.md stores the same files as
  ``dataset/Pixel200K.csv`` and ``information/Pixel200K.csv``; both layouts are found.
  title <- ``title_en`` when the column exists, else ``title``; abstract <- ``description``.
- ``microlens``: westlake-repl/MicroLens README.md (MicroLens-100K: a pairs file, "each row
  indicates a user and the videos they interacted with, sorted by interaction timestamp", titles,
  covers) and the data set's readme.txt, as quoted in sananm/multimodal-video-recommender
  data/raw/microlens/readme.txt: ``*_pairs.tsv`` holds ``user \t item item ...`` in time order,
  ``*_pairs.csv`` three columns "userID", "videoID" and "timestamp" with a header. MicroLens'
  Code/IDRec/process_data.ipynb reads a pairs tsv the same way (the item's position is its time
  stamp). The pairs csv is used when present, else the
  pairs tsv (its position is the time; a user on two lines is refused). title <- the title; no abstract. ASSUMED, from other public
  code that reads these files (the repository does not document them): the csv header may also
  read ``user,item,timestamp`` (columns are taken by name: user|userID|user_id,
  item|videoID|item_id|video_id, timestamp); ``MicroLens-100k_title_en.csv`` has no header, one
  ``item_id,title`` per line (a title holding unquoted commas keeps them: the fields after the
  first are joined), but public copies disagree: a first row that reads as a header (no item of
  the interactions, and a column name or a non-number above numeric ids) is skipped with a log
  line, here and in NineRec's item csv; so is a first line of a headerless interaction file (the
  pairs tsv, NineRec's pair csv, SASRec's txt) that names the columns (``user_id item_id``); the
  covers unpack from ``MicroLens-100k_covers.zip`` into ``covers/<item_id>.jpg``.
- ``ninerec``: westlake-repl/NineRec: get_behaviour.py (``<Name>_pair.csv``, no header:
  video_id, user_id, timestamp), get_lmdb.py (``<Name>_item.csv`` whose first column is the item,
  covers in ``<Name>_cover/<item>.jpg``), Baseline/BERT4Rec/BERT4Rec_txt/data_utils/preprocess.py
  (the item csv has no header: video_id, title (Chinese), title_en). title <- title_en;
  abstract <- the Chinese title.
- ``amazon_hllm``: bytedance/HLLM: dataset/readme.md (interaction csv ``item_id,user_id,timestamp``
  with a header), information/readme.md (item csv ``item_id, description, title[, tag]``),
  README.md (``dataset/NAME.csv`` + ``information/NAME.csv``), process_books.py (writes the
  Amazon Books files, flat: ``amazon_books.csv`` and ``amazon_books_item.csv``; both layouts are
  found). title <- title; abstract <- description. No images.
- ``sasrec_txt``: kang205/SASRec: util.py (``data/NAME.txt``: one ``user item`` pair per line,
  space separated; each user's lines in time order) and data/DataProcessing.py (writes it).
  The line order is the time; no item file, so items have no text. No images.
- ``recbole``: RUCAIBox/RecBole docs/source/user_guide/data/atomic_files.rst (tab-separated atomic
  files ``NAME.inter`` / ``NAME.item`` / ``NAME.user``; the header's entries read
  ``feat_name:feat_type``, types token, token_seq, float, float_seq). Columns user_id, item_id
  and (optional; else file order) timestamp of ``.inter``; ``.item`` and ``.user`` are optional.
  title <- the first token / token_seq field of ``.item`` whose name holds "title" (else the first
  such field); abstract <- the other token / token_seq fields, joined by a space, in file order.

``--inter``, ``--items`` and ``--images`` override where a file is looked for; ``--images`` also
adds covers to a format without them.
"""
from __future__ import annotations

import csv
import logging
import sys
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
    A blank line in the middle is an error; blank lines at the end are dropped."""
    try:
        df = pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, na_filter=False,
                         skip_blank_lines=False, quoting=quoting, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: {err}; each line must hold the same columns") from None
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


# ----------------------------------------------------------------------------- one reader per format

def read_pixelrec(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path = _locate(src, inter, ["pixelrec_interaction/*.csv", "dataset/*.csv", "*interaction*.csv"],
                         "interaction csv", "inter")
    items_path = _locate(src, items, ["pixelrec_iteminfo/*.csv", "information/*.csv", "item_info*.csv"],
                         "item information csv", "items")
    df = _read_table(inter_path, header=True)
    cols = [_column(df, inter_path, (name,), name) for name in ("user_id", "item_id", "timestamp")]
    table = _item_table(items_path, True, {"item": "item_id", "title": ("title_en", "title"),
                                           "abstract": "description"},
                        "a header with item_id, title (or title_en) and description")
    return Source(_interactions(df, inter_path, *cols), inter_path, table, items_path,
                  images=_covers(src, images, no_images, ["cover", "covers", "images"]))


def _microlens_tsv(path: Path) -> pd.DataFrame:
    """MicroLens-*_pairs.tsv: ``user \\t item item ...`` in time order (the position is the time)."""
    rows, first_line = [], {}
    for line, values in _csv_records(path, "\t", csv.QUOTE_NONE):
        if len(values) != 2:
            raise InputError(f"{path}, line {line}: expected 'user\\titem item ...'")
        user = values[0].strip()
        if not rows and user.lower() in USER_HEADERS and values[1].strip().lower() in ITEM_HEADERS:
            log.warning("%s, line %d: %r is a header row, not a user; skipped", path, line, user)
            continue
        if user in first_line:               # positions are times only within one line
            raise InputError(f"{path}, line {line}: user {user!r} already has line {first_line[user]}; "
                             "a pairs tsv holds each user once: join the two lines in time order")
        first_line[user] = line
        rows += [(user, item, len(rows) + k, line) for k, item in enumerate(values[1].split())]
    if not rows:
        raise InputError(f"{path} holds no user lines")
    return pd.DataFrame(rows, columns=["user", "item", "time", "line"])


def read_microlens(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path = _locate(src, inter, ["*_pairs.csv", "*_pairs.tsv"], "pairs file", "inter")
    items_path = _locate(src, items, ["*_title_en.csv", "*_titles.csv", "*title*.csv"], "title csv", "items")
    if inter_path.suffix == ".tsv":
        table = _microlens_tsv(inter_path)
    else:
        df = _read_table(inter_path, header=True)
        user = _column(df, inter_path, ("user", "userID", "user_id"), "user")
        item = _column(df, inter_path, ("item", "videoID", "item_id", "video_id"), "item")
        table = _interactions(df, inter_path, user, item, _column(df, inter_path, ("timestamp",), "timestamp"))
    titles = _item_table(items_path, False, {"item": 0, "title": lambda fields: ",".join(fields[1:]),
                                             "abstract": None},
                         "'item_id,title' (no header)")
    return Source(table, inter_path, _without_header_row(titles, table, items_path), items_path,
                  images=_covers(src, images, no_images, ["covers", "cover"]))


def read_ninerec(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path = _locate(src, inter, ["*_pair.csv"], "pair csv", "inter")
    stem = inter_path.name[:-len("_pair.csv")] if inter_path.name.endswith("_pair.csv") else "*"
    items_path = _locate(src, items, [f"{stem}_item.csv", "*_item.csv"], "item csv", "items")
    df = _read_table(inter_path, header=False)
    _need_columns(df, inter_path, 3, "'video_id,user_id,timestamp' (no header)")
    table = _item_table(items_path, False, {"item": 0, "title": 2, "abstract": 1},
                        "'video_id,title,title_en' (no header)")
    inter_table = _interactions(_without_header_line(df, inter_path, "1", "0"), inter_path, "1", "0", "2")
    return Source(inter_table, inter_path, _without_header_row(table, inter_table, items_path), items_path,
                  images=_covers(src, images, no_images, [f"{stem}_cover", "*_cover"]))


def read_amazon_hllm(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    hllm = (src / "dataset").is_dir()                  # HLLM's layout, else process_books.py's
    if inter is None and not hllm:
        found = [p for p in sorted(src.glob("*.csv")) if not p.name.endswith("_item.csv")]
        if len(found) != 1:
            raise InputError(f"{src}: expected dataset/NAME.csv + information/NAME.csv, or one NAME.csv "
                             f"+ NAME_item.csv; found {len(found)} interaction csv(s); point --inter at it")
        inter = found[0]
    inter_path = _locate(src, inter, ["dataset/*.csv"], "interaction csv", "inter")
    items_path = _locate(src, items, [f"information/{inter_path.name}", "information/*.csv"] if hllm
                         else [f"{inter_path.stem}_item.csv", "*_item.csv"], "item information csv", "items")
    df = _read_table(inter_path, header=True)
    cols = [_column(df, inter_path, (name,), name) for name in ("user_id", "item_id", "timestamp")]
    table = _item_table(items_path, True, {"item": "item_id", "title": "title", "abstract": "description"},
                        "a header with item_id, description and title")
    return Source(_interactions(df, inter_path, *cols), inter_path, table, items_path,
                  images=_extra_images(src, images))


def read_sasrec_txt(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    if items is not None:
        raise InputError("sasrec_txt has no item file; drop --items")
    inter_path = src if src.is_file() and inter is None else _locate(src, inter, ["*.txt"], "txt file", "inter")
    df = _read_table(inter_path, header=False, sep=r"\s+")
    _need_columns(df, inter_path, 2, "'user item' per line")
    df = _without_header_line(df, inter_path, "0", "1")
    return Source(_interactions(df, inter_path, "0", "1", None), inter_path, images=_extra_images(src, images))


def _recbole_fields(path: Path) -> list[tuple[str, str]]:
    """(name, type) of each entry of an atomic file's header ``name:type``."""
    first = next(_csv_records(path, "\t", csv.QUOTE_NONE), None)
    if first is None:
        raise InputError(f"{path} is empty")
    fields = []
    for entry in first[1]:
        name, colon, kind = entry.strip().partition(":")
        if not colon or kind not in ("token", "token_seq", "float", "float_seq"):
            raise InputError(f"{path}, line 1: header entry {entry!r} is not 'name:type' with type "
                             "token, token_seq, float or float_seq (RecBole atomic files)")
        fields.append((name, kind))
    return fields


def read_recbole(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path = _locate(src, inter, ["*.inter"], ".inter file", "inter")
    stem = inter_path.with_suffix("")
    items_path = _locate(src, items, [stem.name + ".item"], ".item file", "items", required=False)
    users_path = stem.with_suffix(".user") if stem.with_suffix(".user").is_file() else None
    names = [name for name, _ in _recbole_fields(inter_path)]
    df = _read_table(inter_path, header=True, sep="\t", quoting=csv.QUOTE_NONE)
    df.columns = names + ["line"]
    cols = [_column(df, inter_path, (name,), name) for name in ("user_id", "item_id")]
    table = _interactions(df, inter_path, *cols, "timestamp" if "timestamp" in names else None)
    source = Source(table, inter_path, users_path=users_path)
    if items_path is not None:
        source.items, source.items_path = _recbole_items(items_path), items_path
    if users_path is not None:
        source.users = _recbole_users(users_path)
    source.images = _extra_images(src, images)
    return source


def _recbole_items(items_path: Path) -> pd.DataFrame:
    """The item table of a ``.item`` file (also read by morec.tools.stream_formats)."""
    fields = _recbole_fields(items_path)
    if "item_id" not in [name for name, _ in fields]:
        raise InputError(f"{items_path}, line 1: no item_id column; the header has "
                         f"{', '.join(name for name, _ in fields)}")
    column = {name: k for k, (name, _) in enumerate(fields)}
    texts = [name for name, kind in fields if kind in ("token", "token_seq") and name != "item_id"]
    title = next((name for name in texts if "title" in name), texts[0] if texts else None)
    rest = [column[name] for name in texts if name != title]
    return _item_table(items_path, True, {
        "item": column["item_id"], "title": column.get(title),
        "abstract": lambda values: " ".join(v for v in (values[k].strip() for k in rest) if v)},
        "tab-separated fields under the 'name:type' header", "\t", csv.QUOTE_NONE)


def _recbole_users(users_path: Path) -> pd.DataFrame:
    """The users (user, line) of a ``.user`` file, in file order (also read by stream_formats)."""
    if [name for name, _ in _recbole_fields(users_path)][:1] != ["user_id"]:
        raise InputError(f"{users_path}, line 1: the first column must be user_id")
    records = list(_csv_records(users_path, "\t", csv.QUOTE_NONE))[1:]         # after the header
    return pd.DataFrame([(fields[0].strip(), line) for line, fields in records], columns=["user", "line"])


READERS = {"pixelrec": read_pixelrec, "microlens": read_microlens, "ninerec": read_ninerec,
           "amazon_hllm": read_amazon_hllm, "sasrec_txt": read_sasrec_txt, "recbole": read_recbole}
