"""One process at a time in a run folder: an exclusive, non-blocking ``fcntl.flock``
on ``<run folder>/.lock``, held for the whole train, resume or test.

Two runs with the same label would otherwise mix their files (one seed's config.json and
metrics, the other's checkpoint). Under DDP only rank 0 takes the lock: the other ranks write
nothing. The lock dies with its process (kill -9 included), so a stale lock file never blocks a
resume. Taking the lock is also the run folder's writability check: a read-only folder is
refused before any training or evaluation starts.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from morec.errors import InputError

LOCK_NAME = ".lock"


def _not_writable(folder: Path, err: OSError) -> InputError:
    return InputError(f"cannot write to the run folder {folder} ({err.strerror or err}); "
                      "make it writable, free space, or choose another --runs_dir")


def _holder(lock_file: Path) -> str:
    """'process N' from the lock file, for the message (best effort)."""
    with contextlib.suppress(OSError, ValueError):
        return f"process {int(lock_file.read_text().strip())}"
    return "another process"


def _acquire(lock_file: Path) -> int:
    """An open descriptor holding the exclusive lock on `lock_file`; InputError if it is taken."""
    while True:
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise _not_writable(lock_file.parent, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"the run folder {lock_file.parent} is in use by {_holder(lock_file)} "
                             "(a run with the same label is training or testing); wait for it to "
                             "finish or pass another --label") from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)      # the holder removed the file as we locked it: lock the new one


@contextlib.contextmanager
def run_lock(folder: Path, take: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the body (creating the folder if needed); take=False
    (DDP ranks other than 0) does nothing. On exit the lock file is removed, and so are the
    folder and its parent when this call created them and they are left empty."""
    if not take:
        yield
        return
    created = [p for p in (folder.parent, folder) if not p.exists()]
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _not_writable(folder, err) from None
        with _locked(folder / LOCK_NAME):
            yield
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()                   # only if empty


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    fd = _acquire(lock_file)
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as err:
            raise _not_writable(lock_file.parent, err) from None
        yield
    finally:
        with contextlib.suppress(OSError):      # before unlocking: a waiting process then sees a new file
            lock_file.unlink()
        os.close(fd)


@contextlib.contextmanager
def source_lock(folder: Path, what: str) -> Iterator[None]:
    """Read another run's folder (`--init_from`) while no process trains or tests there: a shared
    lock on its `.lock` for the body, so a run starting there meanwhile is refused until the read
    ends; InputError naming the holder if a process trains or tests there now (its
    checkpoint_best.pt is not final). Refused rather than waited for: a training run may take
    hours, and a job that hangs silently is worse than one line saying what to wait for. No
    `.lock` (nobody holds it) or an unreadable one: read without a lock."""
    lock_file = folder / LOCK_NAME
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{what}: the run folder {folder} is in use by {_holder(lock_file)} (it is still "
                             "training or testing, so its checkpoint_best.pt is not final); wait for it to "
                             "finish, then run this again") from None
        yield
    finally:
        os.close(fd)
