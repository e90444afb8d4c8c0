"""Files a run writes, never half-written: write to a temp file in the same folder, fsync, rename.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``; a file that fails to load is reported, never silently skipped.
"""
from __future__ import annotations

import io
import json
import os
import re
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


TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)$")


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                  # alive, another user's
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically; on failure (disk full, ...) the previous file stays intact."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    had_one = path.exists()
    try:
        write_bytes_atomic(path, buffer.getvalue())
    except OSError as err:
        kept = ("the previous checkpoint is intact: free space, then continue with --resume" if had_one
                else "no earlier checkpoint exists: free space, then start the run again")
        raise InputError(f"could not write {path} ({err}); {kept}") from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise InputError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and what to do
        raise InputError(f"checkpoint {path} cannot be read ({load_failure(err)}); "
                         "delete it and resume from another checkpoint or retrain") from None


def load_failure(err: Exception) -> str:
    """Why torch.load failed, without PyTorch's hint to retry with weights_only=False (which
    would run whatever code the file holds: never the fix)."""
    text = str(err)
    if "weights_only" not in text and "Weights only" not in text:
        return f"{type(err).__name__}: {text}"
    found = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    what = found.group(1) if found else "an object that is not a tensor or a plain value"
    return f"it holds more than tensors and plain values, refused unread: {what}"


def require_entries(checkpoint, path: Path, keys: tuple[str, ...]) -> None:
    """A run checkpoint is a dict with `keys`; say what the file holds instead."""
    if not isinstance(checkpoint, dict):
        held = f"a {type(checkpoint).__name__}"
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        held = "bare model weights (a state_dict)"
    else:
        missing = [key for key in keys if key not in checkpoint]
        if not missing:
            return
        held = f"a dict without {', '.join(missing)}"
    raise InputError(f"checkpoint {path} holds {held}, not a checkpoint of this code (a dict with "
                     f"{', '.join(keys)}); it was written by something else: put back the run's own "
                     "checkpoint or retrain")


def load_weights(module: torch.nn.Module, state, path: Path, shown: int = 3,
                 reloaded: set[str] = frozenset()) -> None:
    """Load a checkpoint's weights into `module`, or say which tensors differ (another run's
    checkpoint, another model size). `reloaded`: names the checkpoint may leave out (frozen
    pretrained weights under PEFT, already loaded from the encoder folder)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"checkpoint {path}: its 'model' entry is not a set of weights; put back the "
                         "run's own checkpoint or retrain")
    own = module.state_dict()
    missing, extra = sorted(own.keys() - state.keys() - reloaded), sorted(state.keys() - own.keys())
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} here"
              for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape]
    problems = [f"{len(names)} {label}: {', '.join(names[:shown])}{' ...' if len(names) > shown else ''}"
                for label, names in (("missing", missing), ("unexpected", extra), ("of another shape", shapes))
                if names]
    if problems:
        raise InputError(f"checkpoint {path} does not fit this run's model ({'; '.join(problems)}): "
                         "it belongs to another run or model; put back the run's own checkpoint or retrain")
    module.load_state_dict(state, strict=not reloaded)
