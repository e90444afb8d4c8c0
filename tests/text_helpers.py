"""Shared by the text tests: tiny random encoders (built once per test process), ml-100k data,
and the steps of the feature-cache tests (a private copy of an encoder, a newer version of its
weights, extraction forbidden while a fresh cache must be read)."""
from __future__ import annotations

import atexit
import functools
import os
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


def tiny_bert_copy(tmp_path: Path) -> Path:
    """A pretrained_dir (tmp_path/encoders) holding a copy of the tiny random BERT named "tiny",
    whose files a test may change."""
    enc_root = tmp_path / "encoders"
    shutil.copytree(tiny_encoders() / TINY["bert"], enc_root / "tiny")
    return enc_root


def one_second_newer(path: Path) -> None:
    """Move `path`'s modification time 1 s forward, its bytes unchanged: to the feature cache,
    a new version of the file."""
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))


def forbid_text_feature_extraction(monkeypatch) -> None:
    """Until monkeypatch.undo(), extracting text features fails the test ("extracted again"):
    a fresh feature cache must be read, not rebuilt."""
    import morec.features

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")
    monkeypatch.setattr(morec.features, "extract_text_features", no_extraction)


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
