"""Convert public sequential-recommendation data sets into this project's files.

One short reader per format turns its files into a `Source`: the interactions (user, item, time,
source line) in file order, the item table (name, title, abstract) and the cover folder, if any.
One shared writer, `convert`, checks everything, then writes into a temp folder next to DST
(``.DST.tmpPID``) and renames it to DST at the end (nothing half-written; an error leaves no DST;
a conversion killed midway leaves only the temp folder, which the next conversion to DST removes):

    users.tsv    user \\t item item ...     each user's items sorted by time; equal times keep
                                           file order (a stable sort)
    items.tsv    item \\t title \\t abstract  (see morec/data/files.py)
    images.lmdb  the covers, through morec.tools.lmdb_builder.build_lmdb (formats with images)
    CARD.md      the dataset card of morec.tools.card

Order: items follow the item file (first seen there); without an item file, first seen in the
interactions. Users are first seen in the interactions, except with RecBole's optional ``.user``
file, whose order they follow (as items follow ``.item``). A user of the user file without
interactions, and an item of the item file without interactions, are kept out of users.tsv /
kept in items.tsv (the loader drops unused items; SPEC "Data").

Filtering: none. The conversion is faithful: every interaction is kept (repeats too), whatever
its rating; min_seq_len, the L+3 cut and unused items are the loader's job (SPEC "Data"), and
CARD.md shows what the loader keeps. Texts are only normalised: every run of whitespace (tabs,
line breaks) becomes one space and the ends are stripped, since the tsv files are tab and line
separated. Timestamps keep the order of the written values exactly: integer timestamps are
read as integers (nanosecond epochs exceed float64's 2**53), see `_exact_times`.

Bad input is one InputError naming the file and line: a missing column, an empty or
whitespace-holding user / item name (the users file separates items by spaces), a timestamp that is
not a number, a user on two lines of a MicroLens pairs tsv, an item of the interactions missing from the item file, an item listed twice, an
image that is missing (unless allow_missing_images) or unreadable. So is a protocol value out of
training's range (max_seq_len < 1, min_seq_len < 3), a --resize outside 1..4096 or without covers,
and a DST that cannot be written (below a file, read-only, a full disk). Line numbers of csv files count
one record per line; the item files are read with the csv module, which counts lines inside quoted
fields too.

Each format's reader, its layout and where it was read: morec.tools.formats.

``--inter``, ``--items`` and ``--images`` override where a file is looked for; ``--images`` also
adds covers to a format without them.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np
import pandas as pd

from morec.tools.card import write_card
from morec.atomic_io import process_alive, temp_siblings, write_text_atomic
from morec.tools.lmdb_builder import build_lmdb, find_image_files
from morec.errors import InputError
from morec.tools.formats import READERS, Source


IMAGE_LMDB = "images.lmdb"
MAX_RESIZE = 4096                                       # --resize: a side length in pixels
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the shared writer

@dataclass
class Converted:
    """The checked result, in memory, before anything is written."""
    user_lines: list[str]
    item_lines: list[str]
    item_names: list[str]
    images: Path | None
    num_interactions: int


def _check_names(df: pd.DataFrame, column: str, path: Path, what: str) -> None:
    """Names must be non-empty and hold no whitespace (the users file separates by spaces)."""
    bad = ((df[column] == "") | df[column].str.contains(r"\s", regex=True)).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        name = df[column].iloc[row]
        problem = "is empty" if name == "" else f"{name!r} holds whitespace"
        raise InputError(f"{path}, line {int(df.line.iloc[row])}: {what} name {problem}; the users file "
                         "separates names by spaces, so fix or rename it")


def _first_duplicate(df: pd.DataFrame, column: str, path: Path, what: str) -> None:
    dup = df[column].duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        first = int(df.line[df[column] == df[column].iloc[row]].iloc[0])
        raise InputError(f"{path}, line {int(df.line.iloc[row])}: {what} {df[column].iloc[row]!r} already "
                         f"listed on line {first}; each {what} once")


def _one_line(texts: pd.Series) -> pd.Series:
    """Every run of whitespace (tab, line break, ...) -> one space; ends stripped."""
    return texts.str.split().str.join(" ")


def _user_codes(source: Source) -> tuple[np.ndarray, list[str]]:
    """Each interaction's user index into the user order (user file, else first seen)."""
    inter = source.inter
    if source.users is None:
        codes, names = pd.factorize(inter.user)                    # first-seen order
        return codes, list(names)
    _check_names(source.users, "user", source.users_path, "user")
    _first_duplicate(source.users, "user", source.users_path, "user")
    codes = pd.Index(source.users.user).get_indexer(inter.user)
    if (codes < 0).any():
        row = int(np.argmax(codes < 0))
        raise InputError(f"{source.inter_path}, line {int(inter.line.iloc[row])}: user "
                         f"{inter.user.iloc[row]!r} is not in {source.users_path}; add the user there")
    return codes, list(source.users.user)


def _item_table_checked(source: Source) -> pd.DataFrame:
    """The items (item, title, abstract) in output order; every interaction's item among them."""
    inter = source.inter
    if source.items is None:
        return pd.DataFrame({"item": pd.unique(inter.item), "title": "", "abstract": ""})
    items = source.items
    _check_names(items, "item", source.items_path, "item")
    _first_duplicate(items, "item", source.items_path, "item")
    unknown = (~inter.item.isin(items.item)).to_numpy()
    if unknown.any():
        row = int(np.argmax(unknown))
        raise InputError(f"{source.inter_path}, line {int(inter.line.iloc[row])}: item {inter.item.iloc[row]!r} "
                         f"is not in the item file {source.items_path}; add it there or delete the line")
    return items.assign(title=_one_line(items.title), abstract=_one_line(items.abstract))


def plan(source: Source, allow_missing_images: bool = False) -> Converted:
    """All checks and both files' lines, in memory (nothing is written)."""
    inter = source.inter
    _check_names(inter, "user", source.inter_path, "user")
    _check_names(inter, "item", source.inter_path, "item")
    items = _item_table_checked(source)
    codes, user_names = _user_codes(source)
    order = np.lexsort((inter.time.to_numpy(), codes))          # by user, then time; stable
    sorted_items = inter.item.to_numpy()[order]
    counts = np.bincount(codes, minlength=len(user_names))
    ends = np.cumsum(counts)
    user_lines = [f"{name}\t{' '.join(sorted_items[end - n:end])}"
                  for name, n, end in zip(user_names, counts, ends) if n]
    item_lines = [f"{name}\t{title}\t{abstract}".rstrip("\t")
                  for name, title, abstract in zip(items.item, items.title, items.abstract)]
    names = list(items.item)
    if source.images is not None:
        found = find_image_files(source.images)
        missing = [name for name in names if name not in found]
        if missing and not allow_missing_images:
            raise InputError(f"{len(missing)} of {len(names)} items have no image in {source.images} "
                             f"(first: {', '.join(missing[:3])}); add <item>.jpg files, or pass "
                             "--allow_missing_images (they then read as a blank image)")
    return Converted(user_lines, item_lines, names, source.images, len(inter))


def write_converted(converted: Converted, folder: Path, resize: int | None = None) -> None:
    """users.tsv, items.tsv and (with images) images.lmdb into `folder`."""
    write_text_atomic(folder / "users.tsv", "".join(line + "\n" for line in converted.user_lines))
    write_text_atomic(folder / "items.tsv", "".join(line + "\n" for line in converted.item_lines))
    if converted.images is not None:
        build_lmdb(converted.images, folder / IMAGE_LMDB, converted.item_names, resize=resize,
                   allow_missing=True)                      # plan() refused missing images unless allowed


def check_request(fmt: str, formats, src, dst, max_seq_len: int, min_seq_len: int,
                  resize: int | None) -> tuple[Path, Path]:
    """(src, dst) as paths, once the format is one of `formats`, the options are valid, the source
    exists and the destination can be written (both converters check these first, alike)."""
    if fmt not in formats:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(formats)}")
    _check_options(max_seq_len, min_seq_len, resize)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"source {src} not found; pass the folder holding the {fmt} files")
    _check_destination(dst)
    return src, dst


def _check_options(max_seq_len: int, min_seq_len: int, resize: int | None) -> None:
    """The card's protocol values (training's own bounds) and the cover size, before any work."""
    for option, value, low in (("max_seq_len", max_seq_len, 1), ("min_seq_len", min_seq_len, 3)):
        if value < low:
            raise InputError(f"--{option} {value} must be at least {low} (the card's protocol; "
                             "training refuses it too)")
    if resize is not None and not 1 <= resize <= MAX_RESIZE:
        raise InputError(f"--resize {resize} must be a side length from 1 to {MAX_RESIZE} pixels "
                         "(the paper's image towers read 224)")


def _check_destination(dst: Path) -> None:
    """DST can be made: the nearest existing folder above it is a folder and writable; temp
    folders of killed conversions to DST are removed (logged), a live one's is refused."""
    if dst.exists() or dst.is_symlink():
        raise InputError(f"{dst} already exists; the converter writes a new folder: delete it or "
                         "choose another DST")
    above = dst.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise InputError(f"cannot create {dst}: {above} is a file, not a folder; choose a DST outside it")
    if not os.access(above, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_mount(above) else "permission denied"
        raise InputError(f"cannot write in {above} ({reason}); choose a DST in a writable folder")
    for temp, pid in temp_siblings(dst):
        if pid != os.getpid() and process_alive(pid):
            raise InputError(f"{temp} belongs to process {pid}, which still runs (another conversion "
                             f"to {dst}?); wait for it to end, or, if no conversion runs, delete {temp}")
        try:
            shutil.rmtree(temp) if temp.is_dir() and not temp.is_symlink() else temp.unlink()
        except OSError as err:
            raise InputError(f"cannot remove {temp}, left by a killed conversion ({err.strerror}); "
                             "delete it by hand") from None
        log.warning("removed %s, the temp folder of a conversion to %s that was killed (process %d)",
                    temp, dst, pid)


def _read_only_mount(folder: Path) -> bool:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


def _write_error(err: Exception, dst: Path, written: list[Path]) -> InputError:
    """A failed write (disk full, read-only, a file in the way) as one line naming DST and the fix;
    an OSError on a file outside `written` (DST, its temp folder, the folders made) is a source
    file that could not be read."""
    if isinstance(err, OSError) and err.filename and not any(
            Path(err.filename) == path or path in Path(err.filename).parents for path in written):
        return InputError(f"could not read {err.filename} ({err.strerror}); make it readable, or leave "
                          "it out of SRC (nothing was written)")
    code = err.errno if isinstance(err, OSError) else errno.ENOSPC if isinstance(err, lmdb.DiskError) else None
    reason = (err.strerror or str(err)) if isinstance(err, OSError) else str(err)
    if isinstance(err, OSError) and err.filename:
        reason += f": {err.filename}"
    fix = {errno.ENOSPC: f"free space on the disk of {dst.parent} or choose a DST on another disk",
           errno.EDQUOT: f"free space in your quota on {dst.parent} or choose a DST on another disk",
           errno.EROFS: "choose a DST in a writable folder", errno.EACCES: "choose a DST in a writable folder",
           errno.EPERM: "choose a DST in a writable folder"}.get(code, "check that folder or choose another DST")
    if isinstance(err, lmdb.Error) and code is None:          # LMDB reports a full disk as an I/O error
        fix = f"free space on the disk of {dst.parent} (a full disk fails as an I/O error) or choose another DST"
    return InputError(f"could not write {dst} ({reason}); nothing was written; {fix}")


def write_folder_into_place(dst: Path, write) -> None:
    """`write(temp folder)` into ``.DST.tmpPID``, then one rename to `dst`. On any error the temp
    folder and the parent folders made for `dst` are removed; a failed write is one InputError
    naming DST and the fix (this converter's and morec.tools.stream_convert's)."""
    made = [folder for folder in (dst.parent, *dst.parent.parents) if not folder.exists()]   # deepest first
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    done = False
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        write(tmp)
        if dst.exists():
            raise InputError(f"{dst} appeared while converting (another conversion?); it was left "
                             "as it is: delete it and convert again, or choose another DST")
        os.rename(tmp, dst)
        done = True
    except (OSError, lmdb.Error) as err:
        raise _write_error(err, dst, [dst, tmp, *made]) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made if not done else []:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _write_converted_and_card(converted: Converted, folder: Path, resize: int | None, name: str,
                              **card_options) -> None:
    """The files and CARD.md of a conversion into `folder` (the temp folder of DST `name`)."""
    write_converted(converted, folder, resize)
    write_card(folder, image_lmdb=IMAGE_LMDB, name=name, **card_options)


def convert(fmt: str, src: str | Path, dst: str | Path, inter=None, items=None, images=None,
            no_images: bool = False, allow_missing_images: bool = False, resize: int | None = None,
            max_seq_len: int = 20, min_seq_len: int = 5) -> Converted:
    """Convert data set `src` of format `fmt` into the new folder `dst` (with its CARD.md).

    The options and DST are checked, then everything is read and checked; the files are written
    into a temp folder next to `dst` (``.DST.tmpPID``), which is renamed to `dst` at the end and
    removed on any error. A conversion killed midway leaves only that temp folder, which the next
    conversion to `dst` removes."""
    src, dst = check_request(fmt, READERS, src, dst, max_seq_len, min_seq_len, resize)
    converted = plan(READERS[fmt](src, inter=inter, items=items, images=images, no_images=no_images),
                     allow_missing_images)
    if resize is not None and converted.images is None:
        raise InputError(f"--resize {resize} applies to covers, and this conversion has none; drop "
                         "--resize (or give the covers with --images)")
    write_folder_into_place(dst, lambda folder: _write_converted_and_card(
        converted, folder, resize, dst.name, max_seq_len=max_seq_len, min_seq_len=min_seq_len))
    return converted
