"""The layer cache of `--cache_frozen_layers true`: the token states entering the first trained
block, computed once per item and kept on disk (morec.models.cached_text trains on them).

File: ``<cache_dir>/layers/<dataset>-<encoder>-top<k>-<dtype>-<key hash>.bin``, raw little-endian
arrays, one per text attribute, (N+1, W_a, H) each (W_a: the attribute's longest tokenised text),
read into memory whole up to 1 GiB (memory-mapped above); float16 (default), float32, or bfloat16 stored as its 16-bit patterns (numpy
has no bfloat16). Its ``.json`` sidecar holds the key (encoder name and the sha256 of its config and
weight files, tokenizer fingerprint, a digest of every attribute's item texts, the attributes and
their token widths, k, the number of blocks below, dtype), the layout (shape and byte offset of
each attribute) and the file's content record (morec.digests: its size and the sha256 of every
16 MiB chunk, computed while writing).

The states are computed in eval mode (no dropout): with the encoder's dropout on, the uncached
path drops units in the frozen blocks and the cached path does not (equal only with
`--encoder_dropout 0`).

The key's hash is part of the file name, so another k, encoder, tokenizer, text or dtype builds
another file, never reads this one. Refused with one InputError naming the file and the fix
(delete it; it is rebuilt on the next run), before anything trains: a cache file without a
readable sidecar, a sidecar whose key differs from the run's (the differing entries named), a file
whose size is not the one written (checked before mapping it), a chunk whose sha256 differs
(morec.digests.verify_chunks: every chunk of a file up to FULL_CHECK_BYTES, 1 GiB; above that the
first, the last and 8 chunks spread over the file). The cache read is noted as an input of the run
(role "layer_cache", its size and sha256), so config.json records it and `--resume` and the test
scripts refuse a cache rebuilt with other bytes (morec.data.identity). The data file is written to
a temp file, its sidecar next, then the data renamed into place: a killed build leaves no cache
that looks complete.
"""
from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from morec.atomic_io import cache_write, write_json_atomic
from morec.digests import FULL_CHECK_BYTES, ChunkHasher, check_size, note_input, verify_chunks
from morec.errors import InputError
from morec.specs import ItemInputSpec

log = logging.getLogger("morec")

LAYER_CACHE_FORMAT = 2              # 2: sha256 of the encoder files, a morec.digests content record
CHUNK_ROWS = 256                    # items per encoder pass while building
BLOCK_ROWS = 8 * CHUNK_ROWS         # items computed (length-sorted) and held in memory before writing
# dtype name -> (torch dtype computed in, numpy dtype stored as)
DTYPES = {"float16": (torch.float16, np.float16), "bfloat16": (torch.bfloat16, np.int16),
          "float32": (torch.float32, np.float32)}


def layer_cache_key(spec: ItemInputSpec, folder: Path, tokenizer, texts_sha1: dict, num_items: int) -> dict:
    """Everything the cached states depend on."""
    from morec.data.text import tokenizer_fingerprint
    from morec.models.text import encoder_record
    text = spec.tower.text
    return {"format": LAYER_CACHE_FORMAT, "dataset": spec.data.dataset, "encoder": text.name,
            "encoder_files": encoder_record(folder)["files"],          # {name: sha256}, memoised for big weights
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "attributes": [[name, width] for name, width in spec.attributes], "texts_sha1": texts_sha1,
            "num_items": num_items, "top_blocks": text.top_blocks, "dtype": text.layer_cache_dtype}


def cache_file(spec: ItemInputSpec, key: dict) -> Path:
    """The cache's data file; its name holds a hash of `key`."""
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{key['dataset']}-{key['encoder']}")
    return spec.cache_dir / "layers" / f"{safe}-top{key['top_blocks']}-{key['dtype']}-{digest}.bin"


def frozen_layer_states(spec: ItemInputSpec, data, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                        device: torch.device) -> list[torch.Tensor]:
    """Per attribute the cached states entering the first trained block, (N+1, W_a, H) CPU tensors
    read from the cache (built first when there is none for this key; under DDP by rank
    0 while the other ranks wait)."""
    from morec.data.text import item_texts, texts_digest
    from morec.features import encoder_folder
    from morec.models.text import load_tokenizer
    folder = encoder_folder(spec.tower.text)
    texts_sha1 = {name: texts_digest(item_texts(data.items, name, spec.unescape_text)) for name, _ in spec.attributes}
    key = layer_cache_key(spec, folder, load_tokenizer(folder), texts_sha1, data.num_items)
    path = cache_file(spec, key)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not path.exists() and (not distributed or torch.distributed.get_rank() == 0):
        build_cache(path, key, folder, tokens, device)
    if distributed:
        torch.distributed.barrier()
    return read_cache(path, key)


def sidecar_of(path: Path) -> Path:
    return path.with_suffix(".json")


def delete_hint(path: Path) -> str:
    return f"delete {path} and {sidecar_of(path).name}; the cache is rebuilt on the next run"


def build_cache(path: Path, key: dict, folder: Path, tokens, device: torch.device) -> None:
    """Compute the states of every item (eval mode, fp32, then stored in key["dtype"]) and write
    the data file and its sidecar."""
    from morec.models.cached_text import first_trained_block
    from morec.models.text import load_text_encoder
    start = time.perf_counter()
    encoder = load_text_encoder(folder).eval().to(device)
    first = first_trained_block(encoder, key["top_blocks"])
    with cache_write(path, "layer cache"):
        layout, offset, seconds = write_cache_files(path, key, encoder, first, tokens, device, start)
    log.info("layer cache: the states entering block %d of %s for %d items built in %.1fs (%.1f MiB, %s), at %s",
             first, key["encoder"], key["num_items"], seconds, offset / 2 ** 20, key["dtype"], path)


def write_cache_files(path: Path, key: dict, encoder, first: int, tokens, device: torch.device,
                      start: float) -> tuple[list[dict], int, float]:
    """Write the data file (temp + rename) and its sidecar; returns (layout, bytes, seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar_of(path).unlink(missing_ok=True)           # a sidecar alone (its data deleted) is rebuilt
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    layout, offset = [], 0
    try:
        with open(tmp, "wb") as f:
            out = ChunkHasher(f)                           # the content record, computed while writing
            for (name, _), (ids, mask) in zip(key["attributes"], tokens):
                part = write_attribute(out, encoder, first, ids, mask, key["dtype"], device)
                layout.append({"attribute": name, "offset": offset, **part})
                offset += int(np.prod(part["shape"])) * np.dtype(DTYPES[key["dtype"]][1]).itemsize
            f.flush()
            os.fsync(f.fileno())
        seconds = time.perf_counter() - start
        write_json_atomic(sidecar_of(path), {"key": key, "blocks_below": first, "layout": layout,
                                             "content": out.record(), "seconds": round(seconds, 2)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return layout, offset, seconds


def write_attribute(f, encoder, first: int, ids: torch.Tensor, mask: torch.Tensor, dtype: str,
                    device: torch.device) -> dict:
    """Write one attribute's (N+1, W, H) states to `f` (a ChunkHasher), in blocks of BLOCK_ROWS
    items computed by text length (FrozenBlockStates); returns its shape. Row 0 (padding) is zeros."""
    from morec.models.cached_text import FrozenBlockStates
    width = max(int(mask.sum(1).max()), 1)                 # the longest text: padding beyond is never read
    frozen = FrozenBlockStates(encoder, first, (ids, mask), width, CHUNK_ROWS)
    compute, _ = DTYPES[dtype]
    hidden = None
    for start in range(0, len(ids), BLOCK_ROWS):
        block = frozen.all_item_vectors(len(ids) - 1, torch.arange(start, min(start + BLOCK_ROWS, len(ids))))
        stored = block.to(compute)                                             # (n, W, H)
        stored = stored.view(torch.int16) if dtype == "bfloat16" else stored
        for rows in stored.split(CHUNK_ROWS):
            f.write(rows.numpy().tobytes())
        hidden = block.shape[-1]
    return {"shape": [len(ids), width, hidden]}


def read_sidecar(path: Path) -> dict:
    sidecar = sidecar_of(path)
    try:
        meta = json.loads(sidecar.read_text())
        meta["key"], meta["layout"], meta["content"]["bytes"], meta["content"]["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"layer cache {path}: its sidecar {sidecar.name} cannot be read ({type(err).__name__}: "
                         f"{err}), so the cache cannot be checked; {delete_hint(path)}") from None
    return meta


def read_cache(path: Path, key: dict) -> list[torch.Tensor]:
    """The cached states of `path`, checked against `key`, its size and its chunk digests."""
    meta = read_sidecar(path)
    if meta["key"] != key:
        saved = meta["key"] if isinstance(meta["key"], dict) else {}
        differ = sorted(k for k in set(key) | set(saved) if saved.get(k) != key.get(k))
        raise InputError(f"layer cache {path} was built for another run ({', '.join(differ)} differ: e.g. "
                         f"{differ[0]} {saved.get(differ[0])!r} there, {key.get(differ[0])!r} here); nothing is "
                         f"trained on it: {delete_hint(path)}")
    content, fix = meta["content"], delete_hint(path)
    start = time.perf_counter()
    check_size(path, content, fix, "layer cache")                   # before anything is read or mapped
    stored = DTYPES[key["dtype"]][1]
    if content["bytes"] <= FULL_CHECK_BYTES:
        states = _read_whole(path, meta, stored, fix)
    else:
        verify_chunks(path, content, fix, what="layer cache")
        log.warning("%s is memory-mapped (%.1f GiB): if it is truncated or replaced while this run reads it, "
                    "the process dies with SIGBUS (faulthandler prints where)", path, content["bytes"] / 2 ** 30)
        faulthandler.enable()
        states = [torch.from_numpy(np.memmap(path, dtype=stored, mode="c", offset=part["offset"],
                                             shape=tuple(part["shape"]))) for part in meta["layout"]]
    log.info("layer cache read from %s (%.1f MiB, %s; digests checked in %.1fs)", path, content["bytes"] / 2 ** 20,
             key["dtype"], time.perf_counter() - start)
    note_input("layer_cache", {"file": str(path), "bytes": content["bytes"], "sha256": content["sha256"]})
    return states


def _read_whole(path: Path, meta: dict, stored, fix: str) -> list[torch.Tensor]:
    """The cache read into memory in one pass and its bytes checked (every chunk is hashed anyway
    up to FULL_CHECK_BYTES): a file truncated or rewritten while the run trains cannot touch it,
    where a memory map dies with SIGBUS. One (items, W, H) tensor per attribute."""
    content = meta["content"]
    data = bytearray(content["bytes"])
    with open(path, "rb") as f:
        if f.readinto(data) != len(data):
            raise InputError(f"layer cache {path} changed while being read; {fix}")
    verify_chunks(path, content, fix, data, "layer cache")
    return [torch.from_numpy(np.frombuffer(data, dtype=stored, count=int(np.prod(part["shape"])),
                                           offset=part["offset"]).reshape(part["shape"]))
            for part in meta["layout"]]
