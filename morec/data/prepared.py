"""The prepared form of a data set: the users file parsed once into flat arrays on disk, which every
run (and every DDP rank) maps instead of parsing the tsv again (SPEC "Data" computes the same).

One folder per data identity under ``<cache_dir>/prepared/<dataset>-<key>/``; the key is a digest
of the sha256 of the users and the items file (and of this format's version), so other source
files never find this folder:

    users.i32        (interactions,) int32   every user's item ids in time order, 1-based in the
                                             items file's order (morec.data.files.UserIds.ids)
    offsets.i64      (U+1,) int64            user k holds users.i32[offsets[k]:offsets[k+1]]
    names.u8         the user names, UTF-8, concatenated; name_offsets.i64 (U+1,) int64 their bounds
    prepared.json    the data identity, the counts and each file's size and sha256 chunks
                     (morec.digests.ChunkHasher), written last

and, for each protocol setting (L, min_seq_len, warm_min_count), a subfolder
``split-L<L>-min<m>-warm<w>/`` with what `morec.data.sequences.protocol_arrays` computes from them:
``full.i64`` (U', L+3) the re-indexed cut sequences, ``users.i64`` (U',) the kept users' rows,
``items.i64`` the kept items' 0-based rows of the items file, and ``split.json``.

Every folder is written into a temp folder ``.NAME.tmpPID`` next to it and renamed at the end,
so a reader sees a whole folder or none; a builder killed midway leaves a temp folder that the
next build removes. Builders take an exclusive lock (``.NAME.lock``), so DDP ranks started
together build once: the first builds, the others wait and map its folder. Opening checks the identity recorded against the current files' sha256 and
each file's size and chunks (morec.digests.verify_chunks) before mapping it: a truncated,
overwritten or foreign folder is one InputError naming the file and the fix, never read.
Arrays are mapped copy-on-write (np.memmap mode "c"): the pages come from the page cache,
shared by every process that maps them, and a write would stay private to its process.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from morec.atomic_io import process_alive, temp_siblings, write_json_atomic
from morec.data.files import UserIds, _check_is_file, _ItemLookup, _plain_user_ids, read_items, read_user_ids
from morec.data.sequences import SequenceData, protocol_arrays
from morec.digests import ChunkHasher, file_sha256, verify_chunks
from morec.errors import InputError

FORMAT = 1                           # raise when the files' layout changes: old folders are not found
READ_BYTES = 64 << 20                # the users file is parsed this many bytes (whole lines) at a time
BOM = b"\xef\xbb\xbf"
SIDECAR, SPLIT_SIDECAR = "prepared.json", "split.json"
DTYPES = {".i32": np.int32, ".i64": np.int64, ".u8": np.uint8}


def source_identity(users_file: Path, items_file: Path) -> dict:
    """The data identity of the prepared form: each source file's path, size and sha256 (large
    files' digests are memoised by path, inode, size and mtime: morec.digests.file_sha256)."""
    for path, what in ((users_file, "users"), (items_file, "items")):
        _check_is_file(path, what)
    return {what: {"file": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for what, path in (("users", users_file), ("items", items_file))}


def identity_key(identity: dict) -> str:
    text = f"{FORMAT}\n{identity['users']['sha256']}\n{identity['items']['sha256']}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepared_folder(cache_dir: Path, dataset: str, identity: dict) -> Path:
    return Path(cache_dir) / "prepared" / f"{dataset}-{identity_key(identity)}"


def fix_for(folder: Path) -> str:
    return f"delete the folder {folder} (the next run with --prepared_data builds it again from the tsv files)"


# ----------------------------------------------------------------------------- writing

class _FolderWriter:
    """Files written into the temp folder ``.NAME.tmpPID`` next to `folder`, each hashed in
    chunks as it is written; `commit` writes the sidecar and renames the temp folder to `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        remove_dead_temp_folders(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self.records: dict[str, dict] = {}
        self.open: dict[str, tuple] = {}
        self.name_bytes = 0                                  # bytes of user names written so far

    def append(self, name: str, array: np.ndarray) -> None:
        """Append `array` (the dtype of `name`'s suffix) to the file `name`."""
        if name not in self.open:
            handle = open(self.tmp / name, "wb")
            self.open[name] = (handle, ChunkHasher(handle))
        self.open[name][1].write(np.ascontiguousarray(array, dtype=DTYPES[Path(name).suffix]).data)

    def commit(self, sidecar: str, record: dict) -> None:
        for name, (handle, hasher) in self.open.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self.records[name] = hasher.record()
        write_json_atomic(self.tmp / sidecar, {**record, "format": FORMAT, "files": self.records})
        try:
            os.rename(self.tmp, self.folder)
        except OSError:
            if not (self.folder / sidecar).is_file():      # not another process's whole folder: a real error
                raise
        self.close()

    def close(self) -> None:
        for handle, _ in self.open.values():
            handle.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def remove_dead_temp_folders(folder: Path) -> None:
    """The temp folders of builders of `folder` that were killed midway (their process is gone)."""
    for temp, pid in temp_siblings(folder):
        if pid != os.getpid() and not process_alive(pid):
            shutil.rmtree(temp, ignore_errors=True)


def _write_errors(folder: Path, write) -> None:
    """Run `write`; an OSError (full disk, read-only cache) is one InputError naming the folder."""
    try:
        write()
    except OSError as err:
        raise InputError(f"cannot write the prepared data {folder} ({err.strerror or err}); nothing was kept; "
                         "point --cache_dir at a writable folder with free space, or run without "
                         "--prepared_data") from None


def build_users(users_file: Path, item_names: list[str], folder: Path, identity: dict,
                read_bytes: int | None = None) -> None:
    """Parse `users_file` `read_bytes` at a time (whole lines, morec.data.files' array reader) into
    the arrays of the prepared form in `folder`. A file the array reader does not take as plain
    (an odd byte, a bad line, an unknown item, a user twice) is read whole by `read_user_ids`,
    which raises its usual error naming the line, or reads it (then written as read)."""
    writer = _FolderWriter(folder)
    try:
        users = _stream_users(users_file, item_names, writer, read_bytes or READ_BYTES)
        if users is None:                                   # not plain: the whole-file reader decides
            writer.close()
            writer = _FolderWriter(folder)
            whole = read_user_ids(users_file, item_names)
            _append_users(writer, whole, 0)
            users = (len(whole.names), len(whole.ids))
        writer.append("offsets.i64", np.array([users[1]]))
        writer.append("name_offsets.i64", np.array([writer.name_bytes]))
        writer.commit(SIDECAR, {"identity": identity, "users": users[0], "interactions": users[1]})
    finally:
        writer.close()


def _append_users(writer: _FolderWriter, block: UserIds, first_item: int) -> None:
    """One block's users; offsets continue from `first_item`, name offsets from the names written."""
    first_name_byte = writer.name_bytes
    encoded = [name.encode("utf-8") for name in block.names]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    writer.append("users.i32", block.ids)
    writer.append("offsets.i64", first_item + block.offsets[:-1])
    writer.append("names.u8", np.frombuffer(b"".join(encoded), np.uint8))
    writer.append("name_offsets.i64", first_name_byte + np.cumsum(lengths) - lengths)
    writer.name_bytes = first_name_byte + int(lengths.sum())


def _stream_users(users_file: Path, item_names: list[str], writer: _FolderWriter,
                  read_bytes: int) -> tuple[int, int] | None:
    """(users, interactions) written block by block, or None when a block is not plain (or a user
    name comes twice across blocks)."""
    _check_is_file(users_file, "users")
    lookup, hashes = _ItemLookup(item_names), []
    users = items = 0
    with open(users_file, "rb") as f:
        rest = b""
        while True:
            data = f.read(read_bytes)
            block, at_end = rest + data, not data
            cut = len(block) if at_end else block.rfind(b"\n") + 1
            if cut == 0 and not at_end:
                rest = block
                continue
            block, rest = block[:cut], block[cut:]
            if block.strip(b" \t\r\n") or users == 0:
                if (users and block.startswith(BOM)) or (not at_end and _drops_lines(block)):
                    return None                           # what only the file's start or end may hold
                parsed = _plain_user_ids(block, item_names, lookup)
                if parsed is None:
                    return None
                _append_users(writer, parsed, items)
                hashes.append(np.fromiter(map(hash, parsed.names), dtype=np.int64, count=len(parsed.names)))
                users, items = users + len(parsed.names), items + len(parsed.ids)
            elif not at_end:                               # blank lines before more users: the reader's error
                return None
            if at_end:
                break
    return (users, items) if _names_unique(np.concatenate(hashes)) else None


def _drops_lines(block: bytes) -> bool:
    """Whether the array reader would drop more than the last line end and spaces at the end of
    this block (blank lines or a tab, which it drops only at the end of a file)."""
    tail = block[len(block.rstrip(b" \t\r\n")):].replace(b"\r\n", b"\n")
    return b"\t" in tail or tail.count(b"\n") + tail.count(b"\r") > 1


def _names_unique(hashes: np.ndarray) -> bool:
    """No two user names share a hash (a shared hash, even without equal names, hands the file to
    the whole-file reader, which checks names exactly)."""
    return len(np.unique(hashes)) == len(hashes)


# ----------------------------------------------------------------------------- reading

def _read_sidecar(folder: Path, name: str) -> dict:
    path = folder / name
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"the prepared data {folder} has no {name} (not written by morec, or "
                         f"damaged); {fix_for(folder)}") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path} ({err}); {fix_for(folder)}") from None
    if record.get("format") != FORMAT:
        raise InputError(f"{path} is of format {record.get('format')}, this code reads {FORMAT}; {fix_for(folder)}")
    return record


def _map(folder: Path, record: dict, name: str, shape: tuple[int, ...] | None = None,
         check_bytes: bool = True) -> np.ndarray:
    """The file `name` of `folder`, checked against its record (size, then chunks), mapped."""
    path, written = folder / name, record["files"].get(name)
    if written is None or not path.is_file():
        raise InputError(f"the prepared data {folder} lacks {name}; {fix_for(folder)}")
    if check_bytes:
        verify_chunks(path, written, fix_for(folder), what="prepared data file")
    dtype = DTYPES[path.suffix]
    if written["bytes"] == 0:
        return np.zeros(shape or (0,), dtype=dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="c", shape=shape))


class MappedNames(Sequence):
    """User names read from the mapped ``names.u8`` when asked: `rows` (U',) picks the users."""

    def __init__(self, blob: np.ndarray, bounds: np.ndarray, rows: np.ndarray):
        self.blob, self.bounds, self.rows = blob, bounds, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        row = int(self.rows[k])
        return self.blob[self.bounds[row]:self.bounds[row + 1]].tobytes().decode("utf-8")


def _users_record(folder: Path, identity: dict) -> dict:
    """The sidecar of `folder`, which must record the data identity `identity`."""
    record = _read_sidecar(folder, SIDECAR)
    for what in ("users", "items"):
        then = str(record.get("identity", {}).get(what, {}).get("sha256"))
        if then != identity[what]["sha256"]:
            raise InputError(f"the prepared data {folder} was built from other source files than "
                             f"{identity[what]['file']} (sha256 {then[:12]} there, {identity[what]['sha256'][:12]} "
                             f"now); {fix_for(folder)}")
    return record


def _mapped_names(folder: Path, record: dict, rows: np.ndarray) -> MappedNames:
    return MappedNames(_map(folder, record, "names.u8"), _map(folder, record, "name_offsets.i64", (record["users"] + 1,)),
                       rows)


def open_users(folder: Path, identity: dict) -> UserIds:
    """The prepared users of `folder` as UserIds (arrays mapped; names: MappedNames)."""
    record = _users_record(folder, identity)
    users = record["users"]
    return UserIds(_mapped_names(folder, record, np.arange(users)), _map(folder, record, "offsets.i64", (users + 1,)),
                   _map(folder, record, "users.i32", (record["interactions"],)))


def split_name(max_seq_len: int, min_seq_len: int, warm_min_count: int) -> str:
    return f"split-L{max_seq_len}-min{min_seq_len}-warm{warm_min_count}"


def prepared_sequence_data(data_dir: Path, behaviors: str, news: str, max_seq_len: int, min_seq_len: int,
                           warm_min_count: int, cache_dir: Path) -> SequenceData:
    """`load_sequence_data`'s SequenceData, from the prepared form in `cache_dir` (built from the
    tsv files first when absent): the same items, user names and split, `full` mapped."""
    users_path, items_path = data_dir / behaviors, data_dir / news
    identity = source_identity(users_path, items_path)
    folder = prepared_folder(cache_dir, data_dir.name, identity)
    items = read_items(items_path)
    split = folder / split_name(max_seq_len, min_seq_len, warm_min_count)
    if not (split / SPLIT_SIDECAR).is_file():
        with _building(folder):                 # DDP ranks started together: one builds, the others wait
            _build_missing(folder, split, identity, items, users_path, (max_seq_len, min_seq_len, warm_min_count))
    return _open_split(folder, split, items, identity)


@contextlib.contextmanager
def _building(folder: Path):
    """An exclusive lock (fcntl.flock on ``.NAME.lock`` next to `folder`) while it is built."""
    lock = folder.with_name(f".{folder.name}.lock")
    _write_errors(folder, lambda: folder.parent.mkdir(parents=True, exist_ok=True))
    try:
        handle = open(lock, "a")
    except OSError as err:
        raise InputError(f"cannot write the prepared data {folder} ({err.strerror or err}); point --cache_dir at a "
                         "writable folder, or run without --prepared_data") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _build_missing(folder: Path, split: Path, identity: dict, items: list, users_path: Path,
                   setting: tuple[int, int, int]) -> None:
    """Build the users' arrays and the split of `setting` (L, min_seq_len, warm_min_count) if absent."""
    if not (folder / SIDECAR).is_file():
        if folder.exists():
            raise InputError(f"the prepared data {folder} has no {SIDECAR} (not written by morec, or damaged); "
                             f"{fix_for(folder)}")
        _write_errors(folder, lambda: build_users(users_path, [row.name for row in items], folder, identity))
    if not (split / SPLIT_SIDECAR).is_file():
        if split.exists():
            raise InputError(f"the prepared split {split} has no {SPLIT_SIDECAR}; {fix_for(folder)}")
        users = open_users(folder, identity)
        _write_errors(split, lambda: _build_split(users, len(items), split, users_path, *setting))


def _build_split(users: UserIds, num_items: int, split: Path, users_path: Path, max_seq_len: int,
                 min_seq_len: int, warm_min_count: int) -> None:
    kept_users, used, full = protocol_arrays(num_items, users.offsets, users.ids, max_seq_len, min_seq_len,
                                             users_path, warm_min_count)
    writer = _FolderWriter(split)
    try:
        writer.append("full.i64", full)
        writer.append("users.i64", kept_users)
        writer.append("items.i64", np.flatnonzero(used[1:]))
        writer.commit(SPLIT_SIDECAR, {"max_seq_len": max_seq_len, "min_seq_len": min_seq_len,
                                      "warm_min_count": warm_min_count, "users": len(kept_users),
                                      "items": int(used.sum())})
    finally:
        writer.close()


def _open_split(folder: Path, split: Path, items: list, identity: dict) -> SequenceData:
    """The SequenceData of a prepared split: `full` mapped, the items picked from `items`."""
    users = _users_record(folder, identity)
    record = _read_sidecar(split, SPLIT_SIDECAR)
    count, width = record["users"], record["max_seq_len"] + 3
    rows = _map(split, record, "users.i64", (count,))
    kept_items = _map(split, record, "items.i64", (record["items"],))
    if len(kept_items) and kept_items[-1] >= len(items):
        raise InputError(f"{split / 'items.i64'} names item rows the items file lacks; {fix_for(folder)}")
    return SequenceData([None] + [items[k] for k in kept_items.tolist()], _mapped_names(folder, users, rows),
                        _map(split, record, "full.i64", (count, width)), record["max_seq_len"])
