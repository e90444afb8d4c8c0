"""What a modality item tower needs, prepared once per data set and cached on disk.

- Text end to end: the token ids and attention masks of every item (`morec.data.text`), cached
  under ``<cache_dir>/tokens/`` and handed to the TextTower.
- Two-stage (TS, SPEC "Item towers"): the frozen encoder's feature of every item (text: the
  last-layer CLS, OPT: masked mean; several attributes averaged), computed once and cached as
  ``<cache_dir>/features/<dataset>-<encoder>-<attributes>-<items>.npy`` (loaded memory-mapped)
  with a ``.json`` sidecar that records what it was built from. A cache built from another
  version of the encoder (its config.json or weights changed) or tokenizer is detected through
  the sidecar and rebuilt; an unreadable one is an error that names the file.

This module wires morec.data and morec.models (as train.py does); `scripts/extract_features.py`
runs the extraction on its own, e.g. on a GPU node before the training runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from morec.checkpoint import write_json_atomic
from morec.config import REPO_ROOT, Config
from morec.data import SequenceData
from morec.data.text import item_texts, item_tokens, parse_attributes, texts_digest, tokenizer_fingerprint
from morec.errors import InputError

log = logging.getLogger("morec")

FEATURE_FORMAT = 1
MODALITY_TOWERS = ("text",)


def cache_path(cfg: Config) -> Path:
    root = Path(cfg.cache_dir)
    return root if root.is_absolute() else REPO_ROOT / root


def check_modality_config(cfg: Config) -> None:
    """The values of the modality fields, checked before anything is loaded."""
    from morec.models import FUSIONS
    if cfg.fusion not in FUSIONS:
        raise InputError(f"fusion {cfg.fusion!r} is not available; choose one of {FUSIONS}")
    if cfg.item_tower == "id" and (cfg.two_stage or cfg.fusion != "none"):
        raise InputError("two_stage and fusion need a modality item tower: set --item_tower text")
    for name in ("freeze_paras_before", "dnn_layers", "mo_dnn_layers"):
        if getattr(cfg, name) < 0:
            raise InputError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.trainable_layers < -1:
        raise InputError(f"trainable_layers must be -1 (off) or >= 0, got {cfg.trainable_layers}")
    if cfg.item_tower == "text":
        parse_attributes(cfg.news_attributes)
        for name in ("num_words_title", "num_words_abstract"):
            if getattr(cfg, name) < 2:
                raise InputError(f"{name} must be at least 2 (the special tokens), got {getattr(cfg, name)}")


def text_attributes(cfg: Config) -> list[tuple[str, int]]:
    widths = {"title": cfg.num_words_title, "abstract": cfg.num_words_abstract}
    return [(name, widths[name]) for name in parse_attributes(cfg.news_attributes)]


def encoder_folder(cfg: Config) -> Path:
    from morec.models import pretrained_path
    from morec.models.text import resolve_encoder_dir
    return resolve_encoder_dir(cfg.bert_model_load, pretrained_path(cfg))


def text_tokens(cfg: Config, data: SequenceData, tokenizer=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) tensors, (N+1, W) each, for every attribute; cached on disk."""
    if tokenizer is None:
        from morec.models.text import load_tokenizer
        tokenizer = load_tokenizer(encoder_folder(cfg))
    tokens = item_tokens(data.items, tokenizer, text_attributes(cfg), cache_path(cfg), cfg.dataset)
    return [(torch.from_numpy(t.input_ids), torch.from_numpy(t.attention_mask)) for t in tokens]


def item_tower_inputs(cfg: Config, data: SequenceData, device: torch.device) -> dict:
    """{} for IDs; {"tokens": [...]} for text end to end; {"features": (N+1, F)} for two-stage."""
    check_modality_config(cfg)
    if cfg.item_tower not in MODALITY_TOWERS:
        return {}                                    # build_item_tower reports an unknown tower
    if cfg.two_stage:
        return {"features": torch.from_numpy(text_features(cfg, data, device)[0])}
    return {"tokens": text_tokens(cfg, data)}


# ----------------------------------------------------------------------------- two-stage features

def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def text_feature_key(cfg: Config, data: SequenceData, folder: Path, tokenizer) -> dict:
    """Everything the features depend on; stored in the sidecar and compared on load."""
    weights = sorted(p for p in folder.iterdir() if p.name.startswith(("model", "pytorch_model")))
    return {
        "format": FEATURE_FORMAT,
        "dataset": cfg.dataset,
        "encoder": cfg.bert_model_load,
        "encoder_config_sha1": _file_digest(folder / "config.json"),
        "encoder_weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "attributes": [[name, width] for name, width in text_attributes(cfg)],
        "items_sha1": {name: texts_digest(item_texts(data.items, name))
                       for name, _ in text_attributes(cfg)},
        "num_items": data.num_items,
        "layer": "last",
    }


def features_file(cfg: Config, key: dict) -> Path:
    items = hashlib.sha1(json.dumps(key["items_sha1"], sort_keys=True).encode()).hexdigest()[:10]
    attrs = "+".join(f"{name}{width}" for name, width in key["attributes"])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{cfg.dataset}-{cfg.bert_model_load}")
    return cache_path(cfg) / "features" / f"{safe}-{attrs}-{items}.npy"


def _load_features(path: Path, sidecar: Path, num_items: int) -> np.ndarray:
    try:
        meta = json.loads(sidecar.read_text())
        features = np.load(path, mmap_mode="c", allow_pickle=False)   # copy-on-write: never changes the file
    except Exception as err:
        raise InputError(f"feature cache {path} cannot be read ({type(err).__name__}: {err}); "
                         "delete it and its .json, it is rebuilt on the next run") from None
    if features.ndim != 2 or features.shape[0] != num_items + 1 or list(features.shape) != meta.get("shape"):
        raise InputError(f"feature cache {path} has shape {features.shape}, expected "
                         f"({num_items + 1}, {meta.get('shape', ['?', '?'])[1]}); delete it and its "
                         ".json, it is rebuilt on the next run")
    return features


def _write_features(path: Path, features: np.ndarray) -> None:
    """Write the .npy next to its final place, fsync, then rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=features.shape)
        out[:] = features
        out.flush()
        del out
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@torch.no_grad()
def extract_text_features(encoder, pooling: str, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                          device: torch.device, batch_size: int = 256) -> np.ndarray:
    """(N+1, H) float32 features of the frozen encoder, attributes averaged; row 0 zero.
    Items are encoded in batches of similar length, each cut to its longest text."""
    from morec.models.text import encode_pooled
    encoder.eval().to(device)
    num_rows = tokens[0][0].shape[0]
    out = None
    for ids, mask in tokens:
        order = torch.argsort(mask[1:].sum(1), stable=True) + 1
        for chunk in order.split(batch_size):
            chunk_mask = mask[chunk]
            width = max(int(chunk_mask.sum(1).max()), 1)
            pooled = encode_pooled(encoder, pooling, ids[chunk, :width].to(device),
                                   chunk_mask[:, :width].to(device)).float().cpu()
            if out is None:
                out = torch.zeros(num_rows, pooled.shape[1])
            out[chunk] += pooled / len(tokens)
    return out.numpy()


def text_features(cfg: Config, data: SequenceData, device: torch.device,
                  batch_size: int = 256) -> tuple[np.ndarray, Path]:
    """The cached two-stage features of every item (memory-mapped, (N+1, F) float32) and their
    file; extracted when missing or stale."""
    from morec.models.text import encoder_config, load_text_encoder, load_tokenizer, pooling_of
    folder = encoder_folder(cfg)
    tokenizer = load_tokenizer(folder)
    key = text_feature_key(cfg, data, folder, tokenizer)
    path = features_file(cfg, key)
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        try:
            saved = json.loads(sidecar.read_text())["key"]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"feature cache sidecar {sidecar} cannot be read ({type(err).__name__}: "
                             f"{err}); delete it and {path.name}, they are rebuilt on the next run") from None
        if saved == key:
            log.info("two-stage features read from %s", path)
            return _load_features(path, sidecar, data.num_items), path
        changed = sorted(k for k in key if (saved or {}).get(k) != key[k])
        log.warning("feature cache %s was built from another encoder / tokenizer (%s differ); "
                    "rebuilding it", path, ", ".join(changed))
    start = time.perf_counter()
    tokens = text_tokens(cfg, data, tokenizer)
    encoder = load_text_encoder(folder)
    features = extract_text_features(encoder, pooling_of(encoder_config(folder)), tokens, device,
                                     batch_size)
    del encoder
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar.unlink(missing_ok=True)                  # no sidecar = no valid cache while writing
    _write_features(path, features)
    seconds = time.perf_counter() - start
    write_json_atomic(sidecar, {"key": key, "shape": list(features.shape), "dtype": "float32",
                                "seconds": round(seconds, 2), "device": str(device)})
    log.info("extracted %s two-stage features of %d items with %s in %.1fs, cached at %s",
             features.shape[1], data.num_items, cfg.bert_model_load, seconds, path)
    return _load_features(path, sidecar, data.num_items), path


def ensure_features(cfg: Config, data: SequenceData, device: torch.device, batch_size: int = 256) -> Path:
    """Extract (or find) the two-stage features of cfg's modality encoder; returns the cache file."""
    check_modality_config(cfg)
    if cfg.item_tower == "text":
        return text_features(cfg, data, device, batch_size)[1]
    raise InputError(f"feature extraction for item_tower {cfg.item_tower!r} is not available; "
                     f"choose one of {MODALITY_TOWERS}")
