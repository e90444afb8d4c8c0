"""Build an image LMDB (format: morec.data.image_format) from a folder of
``<item>.jpg|jpeg|png`` files: `build_lmdb`, on top of `LmdbWriter` (temp file, then rename) and
`encode_image`. Command line: ``python scripts/build_lmdb.py`` (docs/images.md).
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import lmdb
from PIL import Image

from morec.data.files import read_items
from morec.data.image_format import (FORMAT_VERSION, META_PREFIX, check_missing, decode_image, item_key,
                                     missing_report_path, progress_bar)
from morec.data.images import lmdb_content_sha256
from morec.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def item_names_from(items: str | os.PathLike | Sequence[str]) -> list[str]:
    """Item names from an items tsv path, or the sequence of names itself."""
    if isinstance(items, (str, os.PathLike)):
        return [row.name for row in read_items(Path(items))]
    return list(items)


def encode_image(img: Image.Image, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """PIL image -> PNG (lossless) or JPEG bytes; the same image always gives the same bytes."""
    buffer = io.BytesIO()
    if image_format == "png":
        img.save(buffer, format="PNG", compress_level=6)
    elif image_format in ("jpeg", "jpg"):
        img.convert("RGB").save(buffer, format="JPEG", quality=quality)
    else:
        raise InputError(f"image format {image_format!r} unknown; use 'png' or 'jpeg'")
    return buffer.getvalue()


class LmdbWriter:
    """Writes an image LMDB to a temp file next to `path` and renames it into place when done.

        with LmdbWriter(path, info={...}) as writer:
            writer.put("item1", jpeg_bytes)
            writer.missing = [...]          # optional: items that read as a blank image

    On an exception inside the block the temp file is deleted and `path` is left as it was, so a
    half-built LMDB never sits at the final path.
    """

    def __init__(self, path: str | os.PathLike, info: dict | None = None, commit_every: int = 1000):
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"{self.path} is a directory (an LMDB in the older folder layout?); "
                             "delete it or choose another output path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.tmp.unlink(missing_ok=True)
        self.info = dict(info or {})
        self.missing: list[str] = []
        self.commit_every = commit_every
        self.map_size = 64 << 20  # grows by doubling when full
        self.env = lmdb.open(str(self.tmp), subdir=False, lock=False, map_size=self.map_size,
                             meminit=False)
        self._pending: list[tuple[bytes, bytes]] = []
        self._pending_bytes = 0
        self._keys: set[bytes] = set()

    def put(self, name: str, value: bytes) -> None:
        """Store the encoded image of item `name` (each name once)."""
        key = item_key(name)
        if key in self._keys:
            raise InputError(f"item {name!r} is written twice to {self.path}; item names must be "
                             "unique")
        self._keys.add(key)
        self._pending.append((key, bytes(value)))
        self._pending_bytes += len(value)
        if len(self._pending) >= self.commit_every or self._pending_bytes >= 64 << 20:
            self._flush()

    def _flush(self) -> None:
        """Commit the pending values in one transaction, growing the map when it is full."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self._pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        self._pending, self._pending_bytes = [], 0

    def _metadata(self) -> dict[str, object]:
        missing = [name for name in self.missing if name.encode("utf-8") not in self._keys]
        return {"format_version": FORMAT_VERSION, "count": len(self._keys),
                "missing": missing, "info": self.info}

    def finish(self) -> Path:
        """Write the metadata (with the content sha256 of the images, read back in key order),
        flush to disk, and rename the temp file to the final path."""
        self._flush()
        metadata = {**self._metadata(), "content_sha256": lmdb_content_sha256(self.env)}
        for field, value in metadata.items():
            self._pending.append(((META_PREFIX + field).encode(), json.dumps(value).encode()))
        self._flush()
        self.env.sync(True)
        self.env.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        self.env.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "LmdbWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()


def find_image_files(image_dir: str | os.PathLike) -> dict[str, Path]:
    """{item name: file} for the ``<item>.jpg|jpeg|png`` files directly inside `image_dir`."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"image folder {image_dir} not found; point --images at the folder that "
                         "holds <item_name>.jpg files")
    files: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise InputError(f"item {path.stem!r} has two images, {files[path.stem].name} and "
                             f"{path.name}, in {image_dir}; keep one")
        files[path.stem] = path
    return files


def _file_value(path: Path, resize: int | None, quality: int) -> bytes:
    """The LMDB value of one image file: its bytes, or a JPEG at resize x resize. Checks it decodes."""
    data = path.read_bytes()
    try:
        img = decode_image(data)
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError... on bad files
        raise InputError(f"{path} is not a readable image ({type(err).__name__}: {err}); replace "
                         "it, or delete it and build with --allow_missing") from None
    if resize is None:
        return data
    return encode_image(img.resize((resize, resize), Image.BILINEAR), "jpeg", quality)


def build_lmdb(image_dir: str | os.PathLike, lmdb_path: str | os.PathLike,
               item_names: str | os.PathLike | Sequence[str] | None = None,
               resize: int | None = None, allow_missing: bool = False,
               report_path: str | os.PathLike | None = None, quality: int = 95) -> dict:
    """Pack ``image_dir/<item>.jpg|jpeg|png`` into one LMDB at `lmdb_path` (see the module doc).

    item_names: the items to store (a list, or an items tsv path); None = every image in the folder.
    resize:     store every image resized to resize x resize as JPEG (`quality`); None = bytes as is.
    Items without an image are listed in `report_path` (default ``<lmdb_path>.missing.txt``) and
    are an InputError unless `allow_missing`, which makes them read as a blank image.
    Returns a summary: path, count, missing, report.
    """
    if resize is not None and resize <= 0:
        raise InputError(f"resize must be a positive side length, got {resize}")
    files = find_image_files(image_dir)
    names = sorted(files) if item_names is None else item_names_from(item_names)
    missing = [name for name in names if name not in files]
    report = Path(report_path) if report_path else missing_report_path(lmdb_path)
    check_missing(missing, len(names), str(image_dir), report, allow_missing)
    present = [name for name in names if name in files]
    info = {"source": str(image_dir), "resize": resize, "quality": quality if resize else None}
    with LmdbWriter(lmdb_path, info=info) as writer:
        for name in progress_bar(present, len(present), "images -> lmdb"):
            writer.put(name, _file_value(files[name], resize, quality))
        writer.missing = missing
    log.info("wrote %d images to %s (%d missing)", len(present), lmdb_path, len(missing))
    return {"path": str(lmdb_path), "count": len(present), "missing": len(missing),
            "report": str(report) if missing else None}
