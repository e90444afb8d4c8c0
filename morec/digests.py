"""Content digests: a cache, a store or an encoder folder is checked by what it holds, not only by
its name, size or modification time.

- `file_sha256(path)`: sha256 of a file's bytes. Files of `MEMO_MIN_BYTES` or more (a large
  encoder's weights) keep their digest in a memo keyed by (path, inode, size, mtime_ns), in this
  process and on disk (``$MOREC_DIGEST_MEMO``, default ``~/.cache/morec/digests``), so a
  seven-GB checkpoint is hashed once, not on every run. MiniLM's 90 MB hash in about 0.2 s.
- `ChunkHasher` / `chunk_record`: per-chunk sha256 (`CHUNK_BYTES` each) computed while a cache
  file is written, kept in its sidecar; `verify_chunks` checks a file against that record.
- `folder_record(folder, names)`: the sha256 of each file an encoder is loaded from.
- The inputs a run read (`note_input`, `inputs_read`, `forget_inputs`): the loaders note each
  input's record as they read it (encoder, tokenizer, feature cache); a new run writes them to
  its config.json, and `--resume` and the test scripts compare (morec.data.identity.run_inputs).

What `verify_chunks` checks: the file's size against the record always (before anything is
mapped: a truncated file is never read past its end); every chunk when the file holds at most
`FULL_CHECK_BYTES`; above that the first, the last and 8 chunks spread evenly over the file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO

from morec.atomic_io import write_json_atomic
from morec.errors import InputError

CHUNK_BYTES = 16 << 20          # 16 MiB a chunk
FULL_CHECK_BYTES = 1 << 30      # files up to 1 GiB are verified whole
SAMPLED_CHUNKS = 8              # bigger ones: first, last and this many chunks between
MEMO_MIN_BYTES = 256 << 20      # digests of files from this size on are memoised


# ----------------------------------------------------------------------------- files

_MEMO: dict[tuple, str] = {}


def memo_folder() -> Path:
    return Path(os.environ.get("MOREC_DIGEST_MEMO") or Path.home() / ".cache" / "morec" / "digests")


def file_sha256(path: Path, memo_min_bytes: int = MEMO_MIN_BYTES) -> str:
    """sha256 of `path`'s bytes; memoised by (path, inode, size, mtime_ns) from `memo_min_bytes` on."""
    path = Path(path).resolve()
    stat = path.stat()
    stamp = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if stat.st_size < memo_min_bytes:
        return _hash_file(path)
    if stamp in _MEMO:
        return _MEMO[stamp]
    memo = memo_folder() / f"{hashlib.sha1(str(path).encode()).hexdigest()}.json"
    try:
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == list(stamp):
            _MEMO[stamp] = saved["sha256"]
            return saved["sha256"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    _MEMO[stamp] = digest = _hash_file(path)
    try:                                           # a read-only home only costs the next run a hash
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo, {"stamp": list(stamp), "sha256": digest})
    except OSError:
        pass
    return digest


def _hash_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def folder_record(folder: Path, names: list[str]) -> dict:
    """{"folder", "files": {name: sha256}} of the files `names` of `folder` that exist."""
    return {"folder": str(folder),
            "files": {name: file_sha256(folder / name) for name in sorted(names) if (folder / name).is_file()}}


def folder_changes(record: dict, what: str) -> list[str]:
    """The files of a `folder_record` whose bytes differ now, one phrase each ([] if none). A
    folder no longer there (moved, a reinstalled package) is left to the check of what is read."""
    folder, changes = Path(record["folder"]), []
    if not folder.is_dir():
        return []
    for name, digest in record.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            changes.append(f"{what} file {path} is gone")
        elif file_sha256(path) != digest:
            changes.append(f"{what} file {path} changed since training (sha256 {digest[:12]} then, "
                           f"{file_sha256(path)[:12]} now)")
    return changes


# ----------------------------------------------------------------------------- chunked files

class ChunkHasher:
    """A write-only file object that hashes what passes through it in `chunk_bytes` chunks."""

    def __init__(self, out: BinaryIO, chunk_bytes: int = CHUNK_BYTES):
        self.out, self.chunk_bytes = out, chunk_bytes
        self.chunks: list[str] = []
        self.size = 0
        self._current, self._filled = hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self.out.write(view)
        while len(view):
            take = min(len(view), self.chunk_bytes - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_bytes:
                self._close_chunk()
        self.size += size
        return size

    def _close_chunk(self) -> None:
        self.chunks.append(self._current.hexdigest())
        self._current, self._filled = hashlib.sha256(), 0

    def record(self) -> dict:
        """{"bytes", "chunk_bytes", "chunks", "sha256"} of everything written."""
        if self._filled or not self.chunks:
            self._close_chunk()
        return {"bytes": self.size, "chunk_bytes": self.chunk_bytes, "chunks": self.chunks,
                "sha256": combined_digest(self.chunks)}


def combined_digest(chunks: list[str]) -> str:
    """One digest of a file from its chunk digests."""
    return hashlib.sha256("\n".join(chunks).encode()).hexdigest()


def chunk_record(data, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """The ChunkHasher record of the bytes `data` (bytes, bytearray, memoryview)."""
    hasher = ChunkHasher(_Discard(), chunk_bytes)
    hasher.write(data)
    return hasher.record()


class _Discard:
    def write(self, data) -> int:
        return len(data)


def checked_chunks(size: int, record: dict) -> list[int]:
    """The indices of the chunks `verify_chunks` reads for a file of `size` bytes."""
    count = len(record["chunks"])
    if size <= FULL_CHECK_BYTES or count <= SAMPLED_CHUNKS + 2:
        return list(range(count))
    return sorted({0, count - 1, *(round(k * (count - 1) / (SAMPLED_CHUNKS + 1)) for k in range(1, SAMPLED_CHUNKS + 1))})


def check_size(path: Path, record: dict, fix: str, what: str = "file") -> None:
    """The file holds as many bytes as when it was written, else an InputError naming it (as
    `what`) and `fix`."""
    size = path.stat().st_size
    if size != record["bytes"]:
        raise InputError(f"{what} {path} cannot be read: it holds {size} bytes, but {record['bytes']} were "
                         f"written (truncated or overwritten since); {fix}")


def verify_chunks(path: Path, record: dict, fix: str, data=None, what: str = "file") -> None:
    """Check `path` (or its bytes `data`, already read whole) against its write-time `record`:
    the size, then the chunks of `checked_chunks`; a mismatch is an InputError naming the file."""
    check_size(path, record, fix, what)
    step = record["chunk_bytes"]
    with open(path, "rb") if data is None else contextlib.nullcontext() as f:
        for index in checked_chunks(record["bytes"], record):
            if data is None:
                f.seek(index * step)
                chunk = f.read(step)
            else:
                chunk = memoryview(data)[index * step:(index + 1) * step]
            if hashlib.sha256(chunk).hexdigest() != record["chunks"][index]:
                raise InputError(f"{what} {path} does not hold the bytes it was written with (bytes "
                                 f"{index * step}..{index * step + len(chunk)} differ from the sha256 "
                                 f"recorded when it was written); {fix}")


# ----------------------------------------------------------------------------- what a run read

_READ: dict[str, dict] = {}


def note_input(role: str, record: dict) -> None:
    """Record that this process read the input `role` ("text_encoder", "tokenizer",
    "text_features", ...) with this content record."""
    _READ[role] = record


def inputs_read() -> dict[str, dict]:
    """Every input noted since the last `forget_inputs`, by role."""
    return {role: dict(record) for role, record in _READ.items()}


def forget_inputs() -> None:
    """Start a new run's list of inputs."""
    _READ.clear()
