"""Files a run writes, never half-written: write to a temp file in the same folder, fsync, rename.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``; a file that fails to load is reported, never silently skipped.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch

from morec.errors import InputError


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


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically; on failure (disk full, ...) the previous file stays intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as err:
        raise InputError(f"could not write {path} ({err}); the previous checkpoint is intact: "
                         "free space, then continue with --resume") from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise InputError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         "delete it and resume from another checkpoint or retrain") from None
