"""Files written whole or not at all: write to a temp file in the same folder, fsync, rename.

A reader sees the old file or the new one, never a half-written one. A writer killed midway
leaves a temp file named ``.NAME.tmpPID``; `remove_stale_temp_files` clears those of dead
processes.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from morec.errors import InputError

TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` so that a reader sees the old file or the new one, nothing between."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temp_files(folder: Path) -> list[str]:
    """Delete the temp files (`.NAME.tmpPID`) that a killed writer left in `folder`: those whose
    process no longer runs on this machine. Call while holding the folder's run lock. Returns the
    names removed."""
    removed = []
    for path in folder.glob(".*.tmp*") if folder.is_dir() else []:
        match = TEMP_NAME.match(path.name)
        if match and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                  # alive, another user's
        return True
    return True


def temp_siblings(path: Path) -> list[tuple[Path, int]]:
    """The temp files or folders (``.NAME.tmpPID``) that writers of `path` made next to it, each
    with its writer's process id (a live one is still writing; a dead one was killed midway)."""
    prefix = f".{path.name}.tmp"
    if not path.parent.is_dir():
        return []
    return sorted((sibling, int(sibling.name[len(prefix):])) for sibling in path.parent.iterdir()
                  if sibling.name.startswith(prefix) and re.fullmatch(r"[0-9]+", sibling.name[len(prefix):]))


@contextlib.contextmanager
def cache_write(path: Path, what: str):
    """Around the writing of a cache file (tokens, features, layer states): an OSError (a
    read-only file system, a full disk, a file where a folder should be) becomes one InputError
    naming the file and the fix, not a traceback. A cache that exists is only read, so a
    read-only --cache_dir that already holds the run's caches still works."""
    try:
        yield
    except OSError as err:
        raise InputError(f"cannot write the {what} {path} ({err.strerror or err}); point --cache_dir at a "
                         "writable folder with free space (or build the cache where it can be written, "
                         "e.g. with scripts/extract_features.py, and copy it there)") from None
