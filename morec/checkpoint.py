"""Checkpoints: save (atomically, through morec.atomic_io), load, and check that they fit a model.

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``; a file that fails to load is reported, never silently skipped.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from morec.atomic_io import write_bytes_atomic
from morec.errors import InputError


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
