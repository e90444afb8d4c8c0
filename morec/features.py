"""What a modality item tower needs, prepared once per data set and cached on disk.

- Text end to end: the token ids and attention masks of every item (`morec.data.text`), cached
  under ``<cache_dir>/tokens/`` and handed to the TextTower.
- Vision end to end: the item images (`morec.data.images.ItemImages`: the dataset's LMDB by item
  id); the training loop decodes each batch's pixels in DataLoader workers.
- Two-stage (TS, SPEC "Item towers"): the frozen encoder's feature of every item (text: the
  last-layer CLS, OPT: masked mean, several attributes averaged; ResNet: the pooled vector; Swin:
  the pooler output; ViT-MAE: the CLS), computed once and cached as
  ``<cache_dir>/features/<dataset>-<encoder>-<attributes or image size>-<items>.npy`` (loaded memory-mapped)
  with a ``.json`` sidecar that records what it was built from. With ``--ts_layers all`` (text)
  the cache holds every layer's pooled vector, (N+1, num_layers + 1, H) with the embedding
  output first, in a ``...-layers.npy`` file of its own. A cache built from another
  version of the encoder (its config.json or weights changed) or tokenizer is detected through
  the sidecar and rebuilt; an unreadable one is an error that names the file.

This is the "prepare item inputs" step: from typed values (morec.specs.ItemInputSpec, built by
morec.resolve.item_input_spec) it returns the data a tower needs (tokens, cached features, the
image store); it wires morec.data and morec.models and never reads the Config.
`scripts/extract_features.py` runs the extraction on its own, e.g. on a GPU node before the
training runs.
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
from morec.data import SequenceData
from morec.data.text import item_texts, item_tokens, texts_digest, tokenizer_fingerprint
from morec.data.images import ImageStore, ItemImages
from morec.data.empty_text import check_item_texts
from morec.digests import (FULL_CHECK_BYTES, ChunkHasher, check_size, folder_record, note_input,
                           verify_chunks)
from morec.errors import InputError
from morec.specs import EncoderSpec, ImageSpec, ItemInputSpec

log = logging.getLogger("morec")

FEATURE_FORMAT = 1
MODALITY_TOWERS = ("text", "vision")


def encoder_folder(text: EncoderSpec) -> Path:
    """The folder of the text encoder `text` (checked to hold an encoder)."""
    from morec.models.text import resolve_encoder_dir
    return resolve_encoder_dir(text.name, text.root)


def text_tokens(spec: ItemInputSpec, data: SequenceData, tokenizer=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) tensors, (N+1, W) each, for every attribute; cached on disk."""
    if tokenizer is None:
        from morec.models.text import load_tokenizer
        tokenizer = load_tokenizer(encoder_folder(spec.tower.text))
    tokens = item_tokens(data.items, tokenizer, list(spec.attributes), spec.cache_dir, spec.data.dataset,
                         spec.unescape_text)
    return [(torch.from_numpy(t.input_ids), torch.from_numpy(t.attention_mask)) for t in tokens]


def item_images(spec: ImageSpec, data: SequenceData) -> ItemImages:
    """The dataset's image LMDB as pixels by item id; every item must have an image."""
    files = spec.data
    path, items_file = files.lmdb_file, files.items_file
    if not path.exists() and files.dataset == "ml-100k" and files.image_lmdb == "posters.lmdb" and items_file.is_file():
        from morec.tools.posters import render_posters
        log.info("drawing the generated ml-100k posters into %s (once; dataset/ml-100k/README_posters.md)", path)
        render_posters(items_file, path)
    if not path.exists():
        how = ("render it with `python dataset/ml-100k/render_posters.py`" if files.dataset == "ml-100k"
               else "build it from a folder of <item>.jpg files with `python scripts/build_lmdb.py`, or "
                    "convert the original release's LMDB with `python scripts/convert_legacy_lmdb.py`")
        raise InputError(f"image LMDB {path} not found (--image_lmdb {files.image_lmdb}); {how}")
    images = ItemImages(ImageStore(path, spec.size, spec.norm), [""] + [row.name for row in data.items[1:]])
    images.check_complete()
    images.check_decodes()               # a damaged image fails here, not mid-epoch
    return images


def run_item_images(spec: ItemInputSpec, data: SequenceData) -> ItemImages | None:
    """What the training loop feeds a vision tower end to end (None for other towers); its
    encoder's files are noted as an input of the run (morec.digests)."""
    encoded = set(spec.modalities) - spec.tower.cached
    if "vision" not in encoded:
        return None
    from morec.models.vision import resolve_vision_encoder
    note_input("vision_encoder", vision_encoder_record(resolve_vision_encoder(spec.tower.vision.name,
                                                                              spec.tower.vision.root)[1]))
    return item_images(spec.images, data)


def vision_encoder_record(folder: Path) -> dict:
    """The sha256 of every file of a vision encoder's folder (morec.digests.folder_record)."""
    return folder_record(folder, [p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")])


def item_tower_inputs(spec: ItemInputSpec, data: SequenceData, device: torch.device) -> dict:
    """What each branch of the item tower reads besides the batch: {} for IDs and vision end to
    end (pixels come with each batch); "tokens" [...] for text end to end; "features" (N+1, F) for
    a two-stage head (text, or vision alone); "vision_features" (N+1, F') for the cached vision
    branch of text+vision (spec.tower.cached says which branches are cached)."""
    modalities = spec.modalities
    if not modalities:
        return {}                                    # build_item_tower reports an unknown tower
    if "text" in modalities:                         # a tower that would see no text is refused
        check_item_texts(data.items, [name for name, _ in spec.attributes], spec.tower.fusion != "none",
                         str(spec.data.items_file), spec.unescape_text)
    inputs = {}
    if "text" in spec.tower.cached:
        inputs["features"] = torch.from_numpy(text_features(spec, data, device)[0])
    elif "text" in modalities:
        inputs["tokens"] = text_tokens(spec, data)
    if "vision" in spec.tower.cached:
        key = "vision_features" if "text" in modalities else "features"
        inputs[key] = torch.from_numpy(vision_features(spec, data, device)[0])
    return inputs


# ----------------------------------------------------------------------------- two-stage features

def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def text_feature_key(spec: ItemInputSpec, data: SequenceData, folder: Path, tokenizer) -> dict:
    """Everything the features depend on; stored in the sidecar and compared on load."""
    weights = sorted(p for p in folder.iterdir() if p.name.startswith(("model", "pytorch_model")))
    return {
        "format": FEATURE_FORMAT,
        "dataset": spec.data.dataset,
        "encoder": spec.tower.text.name,
        "encoder_config_sha1": _file_digest(folder / "config.json"),
        "encoder_weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "attributes": [[name, width] for name, width in spec.attributes],
        "items_sha1": {name: texts_digest(item_texts(data.items, name, spec.unescape_text))
                       for name, _ in spec.attributes},
        "num_items": data.num_items,
        "layer": spec.tower.ts_layers,                      # "last": (N+1, H); "all": (N+1, layers + 1, H)
        **({"pooling": spec.tower.text.pooling} if spec.tower.text.pooling != "auto" else {}),    # auto: the keys of older caches
    }


def vision_feature_key(spec: ItemInputSpec, data: SequenceData, folder: Path, images: ItemImages) -> dict:
    """Everything the vision features depend on: encoder files, the LMDB file, size and norm."""
    def stamp(path: Path) -> list:
        return [path.name, path.stat().st_size, path.stat().st_mtime_ns]
    return {
        "format": FEATURE_FORMAT,
        "dataset": spec.data.dataset,
        "encoder": spec.tower.vision.name,
        "encoder_files": [stamp(p) for p in sorted(folder.iterdir()) if p.is_file()],
        "images": stamp(images.store.path),
        "image_size": spec.images.size,
        "image_norm": spec.images.norm,
        "items_sha1": {"names": texts_digest(images.names[1:])},
        "num_items": data.num_items,
        "layer": "all" if spec.tower.side.kind == "iisan" else "pooled",   # all: (N+1, layers + 1, H), the side network's
    }


def features_file(spec: ItemInputSpec, key: dict) -> Path:
    items = hashlib.sha1(json.dumps(key["items_sha1"], sort_keys=True).encode()).hexdigest()[:10]
    if "attributes" in key:
        what = "+".join(f"{name}{width}" for name, width in key["attributes"])
    else:
        what = f"img{key['image_size']}{key['image_norm']}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{spec.data.dataset}-{key['encoder']}")
    layers = "-layers" if key.get("layer") == "all" else ""        # every layer: a file of its own
    return spec.cache_dir / "features" / f"{safe}-{what}-{items}{layers}.npy"


CACHE_FIX = "delete it and its .json, it is rebuilt on the next run"


def _load_features(path: Path, sidecar: Path, num_items: int) -> np.ndarray:
    """The cached features, checked against the content record of their sidecar (morec.digests):
    the size before anything is read, then the bytes. A cache of up to FULL_CHECK_BYTES is read
    into memory whole (all of it is hashed anyway; a file truncated or rewritten while a run
    trains cannot touch it, where a memory map dies with SIGBUS); a bigger one is memory-mapped
    after its size and sampled chunks are checked."""
    try:
        meta = json.loads(sidecar.read_text())
        content = meta["content"]
        check_size(path, content, CACHE_FIX, "feature cache")
        if content["bytes"] <= FULL_CHECK_BYTES:
            features = _read_whole(path, content)
        else:
            verify_chunks(path, content, CACHE_FIX, what="feature cache")
            log.warning("%s is memory-mapped (%.1f GiB): if it is truncated or replaced while this run "
                        "reads it, the process dies with SIGBUS (faulthandler prints where)", path,
                        content["bytes"] / 2 ** 30)
            faulthandler.enable()
            features = np.load(path, mmap_mode="c", allow_pickle=False)   # copy-on-write: never changes the file
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"feature cache {path} cannot be read ({type(err).__name__}: {err}); "
                         f"{CACHE_FIX}") from None
    expected = meta.get("shape") or ["?", "?"]
    if features.shape[0] != num_items + 1 or list(features.shape) != expected:
        raise InputError(f"feature cache {path} has shape {features.shape}, expected "
                         f"({num_items + 1}, {', '.join(map(str, expected[1:]))}); {CACHE_FIX}")
    return features


def _read_whole(path: Path, content: dict) -> np.ndarray:
    """The .npy at `path` read into memory in one pass, its bytes checked against `content`."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
        f.seek(0)
        data = bytearray(content["bytes"])
        if f.readinto(data) != len(data):
            raise InputError(f"feature cache {path} changed while being read; {CACHE_FIX}")
    verify_chunks(path, content, CACHE_FIX, data, "feature cache")
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


def _write_features(path: Path, features: np.ndarray) -> dict:
    """Write the .npy next to its final place, fsync, then rename (never half-written); returns
    the content record (size, per-chunk sha256) computed while writing."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            out = ChunkHasher(f)
            np.lib.format.write_array(out, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return out.record()


@torch.no_grad()
def extract_text_features(encoder, pooling: str, tokens: list[tuple[torch.Tensor, torch.Tensor]],
                          device: torch.device, batch_size: int = 256, all_layers: bool = False) -> np.ndarray:
    """(N+1, H) float32 features of the frozen encoder, attributes averaged; row 0 zero.
    all_layers: (N+1, num_layers + 1, H), every layer's pooled vector (embedding output first).
    Each attribute goes through the item towers' catalogue path (ItemTower.all_item_vectors of a
    PooledTextFeatures tower): items in chunks of `batch_size` by text length, each cut to its
    longest text; the tokens and the features stay on the CPU, the encoder runs on `device`."""
    from morec.models.text import PooledTextFeatures
    encoder.eval().to(device)
    num_rows = tokens[0][0].shape[0]
    ids = torch.arange(num_rows)                                              # the catalogue, on the CPU
    out = 0
    for attribute in tokens:
        tower = PooledTextFeatures(encoder, pooling, attribute, batch_size, all_layers)
        out = out + tower.all_item_vectors(num_rows - 1, ids) / len(tokens)     # (N+1, H) or (N+1, L+1, H)
    return out.numpy()


@torch.no_grad()
def extract_vision_features(encoder, kind: str, images: ItemImages, device: torch.device,
                            batch_size: int = 256, num_workers: int = 0, all_layers: bool = False) -> np.ndarray:
    """(N+1, H) float32 features of the frozen vision encoder; row 0 (padding) zero. all_layers:
    (N+1, num_layers + 1, H), every layer's [CLS] state (ViT-MAE; morec.models.side_network)."""
    from morec.data.images import ItemChunks, image_loader
    from morec.models.side_network import encode_image_layers
    from morec.models.vision import encode_images
    encoder.eval().to(device)
    ids = torch.arange(1, len(images.names))
    out = None
    chunks = image_loader(ItemChunks(ids, batch_size, images), num_workers, device.type == "cuda")
    for chunk_ids, pixels in chunks:
        encode = encode_image_layers if all_layers else encode_images
        features = encode(encoder, kind, pixels.to(device)).float().cpu()            # (K, H) or (K, L+1, H)
        if out is None:
            out = torch.zeros(len(images.names), *features.shape[1:])
        out[chunk_ids] = features
    return out.numpy()


def cached_features(spec: ItemInputSpec, data: SequenceData, key: dict, extract) -> tuple[np.ndarray, Path]:
    """The features cached under `key` (memory-mapped, (N+1, F) or (N+1, L+1, F) float32) and their file;
    `extract()` builds them when the cache is missing or was built from something else."""
    path = features_file(spec, key)
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        try:
            saved = json.loads(sidecar.read_text())["key"]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"feature cache sidecar {sidecar} cannot be read ({type(err).__name__}: "
                             f"{err}); delete it and {path.name}, they are rebuilt on the next run") from None
        if saved == key and "content" in json.loads(sidecar.read_text()):
            log.info("two-stage features read from %s", path)
            return _noted(path, _load_features(path, sidecar, data.num_items), sidecar, key)
        changed = sorted(k for k in key if (saved or {}).get(k) != key[k])
        why = (f"built from another encoder / input ({', '.join(changed)} differ)" if changed
               else "written before caches recorded a digest of their content")
        log.warning("feature cache %s was %s; rebuilding it", path, why)
    start = time.perf_counter()
    features = extract()
    with cache_write(path, "feature cache"):
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar.unlink(missing_ok=True)              # no sidecar = no valid cache while writing
        content = _write_features(path, features)
        seconds = time.perf_counter() - start
        write_json_atomic(sidecar, {"key": key, "shape": list(features.shape), "dtype": "float32",
                                    "seconds": round(seconds, 2), "content": content})
    log.info("extracted %s two-stage features of %d items with %s in %.1fs (%.1f MiB), cached at %s",
             "x".join(map(str, features.shape[1:])), data.num_items, key["encoder"], seconds,
             features.nbytes / 2 ** 20, path)
    return _noted(path, _load_features(path, sidecar, data.num_items), sidecar, key)


def _noted(path: Path, features: np.ndarray, sidecar: Path, key: dict) -> tuple[np.ndarray, Path]:
    """(features, path), noted as an input of the run (morec.digests) with their content digest."""
    content = json.loads(sidecar.read_text())["content"]
    role = "text_features" if "attributes" in key else "vision_features"
    note_input(role, {"file": str(path), "bytes": content["bytes"], "sha256": content["sha256"]})
    return features, path


def text_features(spec: ItemInputSpec, data: SequenceData, device: torch.device,
                  batch_size: int = 256) -> tuple[np.ndarray, Path]:
    """The cached two-stage text features of every item and their file."""
    from morec.models.text import encoder_config, encoder_record, load_text_encoder, load_tokenizer, pooling_of
    folder = encoder_folder(spec.tower.text)
    tokenizer = load_tokenizer(folder)
    note_input("text_encoder", encoder_record(folder))     # what a rebuild of the cache would read

    def extract() -> np.ndarray:
        tokens = text_tokens(spec, data, tokenizer)
        encoder = load_text_encoder(folder)
        return extract_text_features(encoder, pooling_of(encoder_config(folder), spec.tower.text.pooling), tokens, device,
                                     batch_size, all_layers=spec.tower.ts_layers == "all")
    return cached_features(spec, data, text_feature_key(spec, data, folder, tokenizer), extract)


def vision_features(spec: ItemInputSpec, data: SequenceData, device: torch.device,
                    batch_size: int = 256) -> tuple[np.ndarray, Path]:
    """The cached two-stage vision features of every item and their file."""
    from morec.models.vision import load_vision_encoder, resolve_vision_encoder
    vision = spec.tower.vision
    _, folder = resolve_vision_encoder(vision.name, vision.root)
    note_input("vision_encoder", vision_encoder_record(folder))
    images = item_images(spec.images, data)

    def extract() -> np.ndarray:
        encoder, kind = load_vision_encoder(vision.name, vision.root)
        return extract_vision_features(encoder, kind, images, device, batch_size, spec.num_workers,
                                       all_layers=spec.tower.side.kind == "iisan")
    return cached_features(spec, data, vision_feature_key(spec, data, folder, images), extract)


def modality_features(spec: ItemInputSpec, data: SequenceData, device: torch.device,
                      batch_size: int = 256) -> tuple[np.ndarray, Path]:
    """Two-stage features of the tower's modality encoder (text or vision), cached on disk."""
    if spec.tower.kind == "vision":
        return vision_features(spec, data, device, batch_size)
    return text_features(spec, data, device, batch_size)


def ensure_features(spec: ItemInputSpec, data: SequenceData, device: torch.device, batch_size: int = 256) -> Path:
    """Extract (or find) the two-stage features of the tower's modality encoder; returns the cache file."""
    if spec.tower.kind in MODALITY_TOWERS:
        return modality_features(spec, data, device, batch_size)[1]
    raise InputError(f"feature extraction for item_tower {spec.tower.kind!r} is not available; "
                     f"choose one of {MODALITY_TOWERS}")
