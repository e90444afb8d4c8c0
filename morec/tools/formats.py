"""The readers of morec.tools.convert: one short reader per public format turns its files into
a `Source` (the interactions in file order, the item table, the user table, the cover folder);
the shared writer in morec.tools.convert checks and writes it. What the readers share (finding
files, reading a delimited table with line numbers, header rows) is in morec.tools.tables.

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
from pathlib import Path

import pandas as pd

from morec.errors import InputError
from morec.tools.tables import (ITEM_HEADERS, USER_HEADERS, Source, _column, _covers, _csv_records, _extra_images,
                                _interactions, _item_table, _locate, _need_columns, _read_table,
                                _without_header_line, _without_header_row, log)



# ----------------------------------------------------------------------------- one reader per format

PIXELREC_ITEMS = ({"item": "item_id", "title": ("title_en", "title"), "abstract": "description"},
                  "a header with item_id, title (or title_en) and description")   # the item csv: columns, layout
PIXELREC_COVERS = ["cover", "covers", "images"]


def pixelrec_files(src: Path, inter, items) -> tuple[Path, Path]:
    """(interaction csv, item csv) of PixelRec's layouts; --inter / --items override."""
    inter_path = _locate(src, inter, ["pixelrec_interaction/*.csv", "dataset/*.csv", "*interaction*.csv"],
                         "interaction csv", "inter")
    items_path = _locate(src, items, ["pixelrec_iteminfo/*.csv", "information/*.csv", "item_info*.csv"],
                         "item information csv", "items")
    return inter_path, items_path


def read_pixelrec(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path, items_path = pixelrec_files(src, inter, items)
    df = _read_table(inter_path, header=True)
    cols = [_column(df, inter_path, (name,), name) for name in ("user_id", "item_id", "timestamp")]
    table = _item_table(items_path, True, *PIXELREC_ITEMS)
    return Source(_interactions(df, inter_path, *cols), inter_path, table, items_path,
                  images=_covers(src, images, no_images, PIXELREC_COVERS))


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


AMAZON_HLLM_ITEMS = ({"item": "item_id", "title": "title", "abstract": "description"},
                     "a header with item_id, description and title")     # the item csv: columns, layout


def amazon_hllm_files(src: Path, inter, items) -> tuple[Path, Path]:
    """(interaction csv, item csv) of HLLM's layout (dataset/NAME.csv + information/NAME.csv) or
    process_books.py's (NAME.csv + NAME_item.csv in `src`); --inter / --items override."""
    hllm = (src / "dataset").is_dir()
    if inter is None and not hllm:
        found = [p for p in sorted(src.glob("*.csv")) if not p.name.endswith("_item.csv")]
        if len(found) != 1:
            raise InputError(f"{src}: expected dataset/NAME.csv + information/NAME.csv, or one NAME.csv "
                             f"+ NAME_item.csv; found {len(found)} interaction csv(s); point --inter at it")
        inter = found[0]
    inter_path = _locate(src, inter, ["dataset/*.csv"], "interaction csv", "inter")
    items_path = _locate(src, items, [f"information/{inter_path.name}", "information/*.csv"] if hllm
                         else [f"{inter_path.stem}_item.csv", "*_item.csv"], "item information csv", "items")
    return inter_path, items_path


def read_amazon_hllm(src: Path, inter=None, items=None, images=None, no_images=False) -> Source:
    inter_path, items_path = amazon_hllm_files(src, inter, items)
    df = _read_table(inter_path, header=True)
    cols = [_column(df, inter_path, (name,), name) for name in ("user_id", "item_id", "timestamp")]
    table = _item_table(items_path, True, *AMAZON_HLLM_ITEMS)
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
