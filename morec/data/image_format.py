"""The image LMDB format, shared by its reader (morec.data.images) and the tools that write it
(morec.tools.lmdb_builder, morec.tools.legacy_lmdb): reserved keys, item keys, the report of items
without an image, decoding.

An image LMDB (format_version 1) is a single file (LMDB ``subdir=False``, no lock
file) holding, for every item:

    key   = the item name, utf-8 (as in the items tsv)
    value = the encoded image (JPEG / PNG), byte for byte as in the source file; or, when built
            with ``resize=side``, the image resized to side x side and re-encoded as JPEG

and reserved keys, all starting with ``__meta__/`` (item names may not start with it), whose
values are JSON (utf-8):

    __meta__/format_version   1
    __meta__/count            number of images stored
    __meta__/missing          item names that have no image (built with allow_missing=True);
                              they read as a blank image, with a warning
    __meta__/info             how it was built (source folder, resize, generator, ...)
    __meta__/content_sha256   sha256 of the image entries in key order, each as its key's and value's
                              lengths and bytes (morec.data.images.lmdb_content_sha256); readers
                              refuse an LMDB whose images no longer match it (absent in older LMDBs)

Nothing is pickled. The original MoRec release stored pickled ``LMDB_Image`` objects (raw pixels);
morec.tools.legacy_lmdb converts those once, with a restricted unpickler, into this format.
"""
from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path
from typing import Iterable

from PIL import Image
from tqdm import tqdm

from morec.atomic_io import write_text_atomic
from morec.errors import InputError

log = logging.getLogger(__name__)

META_PREFIX = "__meta__/"
FORMAT_VERSION = 1
REBUILD = "rebuild the LMDB with scripts/build_lmdb.py (or scripts/convert_legacy_lmdb.py)"
LEGACY_META_KEYS = (b"__keys__", b"__len__")  # pickled index keys of the original release


def progress_bar(iterable: Iterable, total: int | None, desc: str):
    """A tqdm bar on stderr, off when stderr is not a terminal (logs, SLURM)."""
    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not sys.stderr.isatty())


def item_key(name: str) -> bytes:
    """LMDB key of an item: its name in utf-8. Reserved or unusable names are an InputError."""
    if not isinstance(name, str) or not name:
        raise InputError(f"item name {name!r} must be a non-empty string")
    if name.startswith(META_PREFIX):
        raise InputError(f"item name {name!r} starts with {META_PREFIX!r}, which is reserved for "
                         "the LMDB's metadata; rename the item")
    key = name.encode("utf-8")
    if len(key) > 511:  # LMDB's default maximum key size
        raise InputError(f"item name {name[:40]!r}... is longer than 511 bytes; shorten it")
    return key


def missing_report_path(lmdb_path: str | os.PathLike) -> Path:
    """Where the list of items without an image goes by default: next to the LMDB."""
    lmdb_path = Path(lmdb_path)
    return lmdb_path.with_name(lmdb_path.name + ".missing.txt")


BUILD_FIX = "Add the images, or pass --allow_missing (allow_missing=True) to give them a blank image"


def check_missing(missing: list[str], total: int, where: str, report: Path,
                  allow_missing: bool, fix: str = BUILD_FIX) -> None:
    """Write the names of items without an image to `report`; raise (saying `fix`) unless `allow_missing`."""
    if not missing:
        report.unlink(missing_ok=True)  # a stale list from an earlier build would mislead
        return
    report.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(report, "".join(f"{name}\n" for name in missing))
    if not allow_missing:
        raise InputError(f"{len(missing)} of {total} items have no image in {where}; their names "
                         f"are listed in {report}. {fix}")
    log.warning("%d of %d items have no image in %s (listed in %s); they will read as a blank "
                "image", len(missing), total, where, report)


def decode_image(data: bytes) -> Image.Image:
    """Encoded bytes -> an RGB PIL image. Raises whatever PIL raises on bad bytes."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")
