"""Item texts -> token tensors for the text towers, tokenised once and cached on disk.

For each attribute (``title``, ``abstract``) of the items of a `SequenceData`, the lower-cased
text of item i (cleaned first by `clean_text` when the run's ``--unescape_text`` is true, the
default: HTML entities decoded, runs of whitespace made one space, ends stripped) is tokenised to ``width`` tokens (padding on the right, truncation) into row i of
an (N+1, width) ``input_ids`` array and its ``attention_mask``; row 0 (padding) holds the empty
text, so every row has at least the tokenizer's special tokens.

The arrays are cached as ``<cache_dir>/tokens/<dataset>-<attribute>-w<width>-<key>.npz`` (plain
numpy arrays, no pickle, written atomically). The key hashes the tokenizer (its full
serialisation), the width and the texts themselves, so another tokenizer, length or data set
gives another file, and a run with the same values reuses it.

The tokenizer is any HuggingFace tokenizer object handed in by the caller; this module imports
nothing from morec.models.
"""
from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morec.atomic_io import cache_write, write_bytes_atomic
from morec.data.files import ItemRow
from morec.errors import InputError

log = logging.getLogger("morec")

ATTRIBUTES = ("title", "abstract")
CACHE_FORMAT = 1


def parse_attributes(spec: str) -> list[str]:
    """'title', 'abstract' or 'title,abstract' -> the list of attributes (file order kept)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    bad = [name for name in names if name not in ATTRIBUTES]
    if not names or bad or len(set(names)) != len(names):
        raise InputError(f"news_attributes {spec!r} is not valid; use one or more of {ATTRIBUTES} "
                         "separated by commas, e.g. 'title' or 'title,abstract'")
    return names


def clean_text(text: str) -> str:
    """Marketplace text as an encoder was pretrained on it (SPEC "Item towers", text clean-up
    option `--unescape_text`): HTML entities decoded (``&amp;`` -> ``&``, ``&#39;`` -> ``'``),
    every run of whitespace (also a decoded ``&nbsp;``) made one space, both ends stripped.
    Text without entities or stray spaces (every ml-100k title) is returned unchanged."""
    return " ".join(html.unescape(text).split())


def item_texts(items: list[ItemRow | None], attribute: str, clean: bool = False) -> list[str]:
    """Lower-cased text of `attribute` for ids 0..N; id 0 (padding) is the empty text.
    clean: through `clean_text` first (a run's `--unescape_text true`); false: as in the file."""
    prepare = clean_text if clean else (lambda text: text)
    return [""] + [prepare(getattr(row, attribute)).lower() for row in items[1:]]


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides how the tokenizer maps text to ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:                  # without the padding / truncation left by the last call
        backend.no_padding()                 # (transformers sets both again on every call)
        backend.no_truncation()
        body = backend.to_str()
    else:                                    # a slow tokenizer: its class, vocabulary and options
        body = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
                           getattr(tokenizer, "do_lower_case", None)])
    extra = json.dumps([type(tokenizer).__name__, tokenizer.pad_token_id, tokenizer.padding_side])
    return hashlib.sha1((body + extra).encode("utf-8")).hexdigest()


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha1("\n".join(t.replace("\n", " ") for t in texts).encode("utf-8")).hexdigest()


@dataclass
class ItemTokens:
    """Tokens of one attribute for every item id; row 0 is padding."""
    attribute: str
    input_ids: np.ndarray        # (N+1, width) int64
    attention_mask: np.ndarray   # (N+1, width) int64, 1 on real tokens (a prefix of the row)


def tokenize_texts(tokenizer, texts: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(len(texts), width) input ids and attention mask, padded on the right, truncated.
    A text without any token (an empty text, with a tokenizer that adds no special token, e.g.
    Qwen2 or GPT-2) is given one real token, the pad token, so that no row is fully masked."""
    tokenizer.padding_side = "right"         # TextTower trims trailing padding columns
    encoded = tokenizer(texts, max_length=width, padding="max_length", truncation=True,
                        return_attention_mask=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64).reshape(len(texts), width)
    mask = np.asarray(encoded["attention_mask"], dtype=np.int64).reshape(len(texts), width)
    mask[mask.sum(1) == 0, 0] = 1            # ids there are the pad token already
    return ids, mask


def cache_path(cache_dir: Path, dataset: str, attribute: str, width: int, key: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return cache_dir / "tokens" / f"{safe}-{attribute}-w{width}-{key[:16]}.npz"


def _read_cache(path: Path, rows: int, width: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as saved:
            ids, mask, saved_key = saved["input_ids"], saved["attention_mask"], str(saved["key"])
    except Exception as err:  # truncated, not a zip, missing arrays: say which file and what to do
        raise InputError(f"token cache {path} cannot be read ({type(err).__name__}: {err}); "
                         "delete it, it is rebuilt on the next run") from None
    if saved_key != key or ids.shape != (rows, width) or mask.shape != (rows, width):
        raise InputError(f"token cache {path} does not match this data set and tokenizer "
                         f"(shape {ids.shape}, expected {(rows, width)}); delete it, it is rebuilt "
                         "on the next run")
    return ids.astype(np.int64), mask.astype(np.int64)


def _write_cache(path: Path, ids: np.ndarray, mask: np.ndarray, key: str) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.int8),
             key=np.asarray(key))
    with cache_write(path, "token cache"):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue())


def item_tokens(items: list[ItemRow | None], tokenizer, attributes: list[tuple[str, int]],
                cache_dir: Path, dataset: str, clean: bool = False) -> list[ItemTokens]:
    """Tokens of each (attribute, width) for ids 0..N, from the cache or tokenised and cached.
    clean: the texts go through `clean_text` (the cache key hashes the texts, so cleaned and raw
    texts that differ get different files, and identical ones share a file)."""
    fingerprint = tokenizer_fingerprint(tokenizer)
    result = []
    for attribute, width in attributes:
        if width < 2:
            raise InputError(f"the token length of {attribute} must be at least 2, got {width}")
        texts = item_texts(items, attribute, clean)
        key = hashlib.sha1(json.dumps([CACHE_FORMAT, fingerprint, attribute, width,
                                       texts_digest(texts)]).encode()).hexdigest()
        path = cache_path(cache_dir, dataset, attribute, width, key)
        start = time.perf_counter()
        if path.exists():
            ids, mask = _read_cache(path, len(texts), width, key)
            log.info("tokens of %d item %ss read from %s (%.2fs)", len(texts) - 1, attribute, path,
                     time.perf_counter() - start)
        else:
            ids, mask = tokenize_texts(tokenizer, texts, width)
            _write_cache(path, ids, mask, key)
            log.info("tokenised %d item %ss to %d tokens in %.2fs, cached at %s", len(texts) - 1,
                     attribute, width, time.perf_counter() - start, path)
        check_tokens(ids, mask, tokenizer, attribute)
        result.append(ItemTokens(attribute, ids, mask))
    return result


def check_tokens(ids: np.ndarray, mask: np.ndarray, tokenizer, attribute: str) -> None:
    """Catch a tokenizer that maps (almost) everything to the unknown token."""
    unk = tokenizer.unk_token_id
    real = mask[1:].astype(bool)
    if unk is None or real.sum() == 0:
        return
    share = float((ids[1:][real] == unk).mean())
    if share > 0.5:
        raise InputError(f"{share:.0%} of the {attribute} tokens are the unknown token: the "
                         "tokenizer files do not fit the texts (or were not loaded); check the "
                         "encoder folder's tokenizer.json / vocab.txt")
    if (mask[:, 1:] > mask[:, :-1]).any():
        raise InputError(f"the {attribute} attention mask is not right-padded; the tokenizer "
                         "must pad on the right")
