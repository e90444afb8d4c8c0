"""Shared by the text tests: tiny random encoders (built once per test process) and ml-100k data."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from conftest import REPO

TINY = {"bert": "random_tiny_bert", "roberta": "random_tiny_roberta", "opt": "random_tiny_opt"}


@functools.lru_cache(maxsize=None)
def tiny_encoders() -> Path:
    """A pretrained_dir holding random_tiny_{bert,roberta,opt} (2 blocks, hidden 32)."""
    import sys
    sys.path.insert(0, str(REPO / "pretrained_models"))
    from make_tiny import make_all
    root = Path(tempfile.mkdtemp(prefix="morec-tiny-encoders-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    make_all(root)
    return root


@functools.lru_cache(maxsize=None)
def ml100k():
    from morec.data import load_sequence_data
    return load_sequence_data(REPO / "dataset" / "ml-100k", "users.tsv", "items.tsv", 20, 5)


TINY_DECODERS = {"llama": "random_tiny_llama", "qwen2": "random_tiny_qwen2"}


@functools.lru_cache(maxsize=None)
def tiny_decoders() -> Path:
    """tiny_encoders()'s folder, with random_tiny_{llama,qwen2} (2 blocks, hidden 32) added."""
    root = tiny_encoders()                   # puts pretrained_models/ on sys.path
    from make_tiny import make_decoders
    make_decoders(root)
    return root
