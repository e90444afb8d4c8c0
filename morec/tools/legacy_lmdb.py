"""Convert the original MoRec release's image LMDBs into this project's format, once.

The original release stored pickled ``LMDB_Image`` objects (raw pixels). `convert_legacy_lmdb`
reads them through `RestrictedLegacyUnpickler`, the project's one unpickler: it accepts only
those records, numpy arrays and bytes, and refuses any other class or function before it can
run. Command line: ``python scripts/convert_legacy_lmdb.py`` (docs/images.md).
"""
from __future__ import annotations

import codecs
import copyreg
import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from morec.data.image_format import LEGACY_META_KEYS, check_missing, missing_report_path, progress_bar
from morec.data.images import open_readonly
from morec.errors import InputError
from morec.tools.lmdb_builder import LmdbWriter, encode_image, item_names_from

LEGACY_RECORD_CLASS = "LMDB_Image"
# Modules the original code pickled LMDB_Image under: its build scripts ran as __main__
# (dataset/HM, dataset/Hm-large build_lmdb_hm.py); its training code defines it in data_utils.
LEGACY_RECORD_MODULES = ("__main__", "data_utils", "data_utils.dataset", "dataset")


class LegacyImageRecord:
    """Stand-in for the original release's ``LMDB_Image``: holds its fields, runs nothing.

    channels: int; size: (height, width); image: raw uint8 pixels (bytes, HWC order); id: item id.
    """

    def to_array(self) -> np.ndarray:
        """The pixels as a (height, width, channels) uint8 array (the original ``get_image()``)."""
        height, width = (int(v) for v in self.size)
        channels = int(self.channels)
        if channels not in (1, 3, 4):
            raise ValueError(f"{channels} channels (expected 1, 3 or 4)")
        pixels = np.frombuffer(bytes(self.image), dtype=np.uint8)
        if pixels.size != height * width * channels:
            raise ValueError(f"{pixels.size} pixel bytes do not fill size {height}x{width}x{channels}")
        return pixels.reshape(height, width, channels)


class RefusedPickleError(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the allowed list."""


def _safe_dtype(*args) -> np.dtype:
    """numpy.dtype, refusing object dtypes (whose arrays could hold arbitrary objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedPickleError(f"refused numpy dtype {dtype}: object arrays are not accepted")
    return dtype


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    return _reconstruct, scalar


_RECONSTRUCT, _SCALAR = _numpy_reconstruct()
SAFE_GLOBALS = {  # (module, name) -> the object the unpickler may use; everything else is refused
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("_codecs", "encode"): codecs.encode,               # protocol 2 pickles bytes through it
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # protocol 0/1 objects
}


class RestrictedLegacyUnpickler(pickle.Unpickler):
    """Unpickles only legacy ``LMDB_Image`` records (as `LegacyImageRecord`), plain numpy arrays
    and bytes. Any other class or function -- os.system, eval, subprocess... -- is refused with a
    RefusedPickleError naming it, before it can run."""

    def find_class(self, module: str, name: str):
        if name == LEGACY_RECORD_CLASS and module in LEGACY_RECORD_MODULES:
            return LegacyImageRecord
        allowed = SAFE_GLOBALS.get((module, name))
        if allowed is None:
            raise RefusedPickleError(f"refused to load {module}.{name}: only {LEGACY_RECORD_CLASS} "
                                     "records, numpy arrays and bytes are accepted")
        return allowed

    def persistent_load(self, pid):
        raise RefusedPickleError("refused a persistent id: not used by legacy records")


def restricted_loads(data: bytes):
    """pickle.loads through RestrictedLegacyUnpickler."""
    return RestrictedLegacyUnpickler(io.BytesIO(data)).load()


def legacy_key(name: str) -> str:
    """The key the original code stored item `name` under: ``str(int(name without 'v'))``,
    e.g. 'v0123' -> '123' (dataset/HM); a name that is no number stays as it is."""
    try:
        return str(int(name.replace("v", "")))
    except ValueError:
        return name


def _legacy_names(items) -> dict[str, str]:
    """{legacy key: item name} for the items; two items on one legacy key are an InputError."""
    by_key: dict[str, str] = {}
    for name in item_names_from(items):
        key = legacy_key(name)
        if key in by_key:
            raise InputError(f"items {by_key[key]!r} and {name!r} both map to legacy key {key!r}; "
                             "the items file does not match the legacy LMDB's naming")
        by_key[key] = name
    return by_key


def load_legacy_record(key: bytes, value: bytes, src: Path) -> np.ndarray:
    """Pixels of one legacy value, through the restricted unpickler; bad values are InputErrors."""
    where = f"key {key.decode('utf-8', 'replace')!r} of {src}"
    try:
        record = restricted_loads(value)
    except RefusedPickleError as err:
        raise InputError(f"{where}: {err}. This LMDB holds more than legacy image records; it "
                         "was not written by the original MoRec code (or was tampered with)") from None
    except Exception as err:
        raise InputError(f"{where} is not a readable pickled record ({type(err).__name__}: "
                         f"{err}); rebuild it from the images with scripts/build_lmdb.py") from None
    if not isinstance(record, LegacyImageRecord):
        raise InputError(f"{where} holds a {type(record).__name__}, not an {LEGACY_RECORD_CLASS}")
    try:
        return record.to_array()
    except (AttributeError, TypeError, ValueError) as err:
        raise InputError(f"{where}: malformed {LEGACY_RECORD_CLASS} ({err})") from None


def _pixels_to_image(pixels: np.ndarray) -> Image.Image:
    """(H, W, 1 | 3 | 4) uint8 -> a grey, RGB or RGBA PIL image."""
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def convert_legacy_lmdb(src: str | os.PathLike, dst: str | os.PathLike, items=None,
                        image_format: str = "png", quality: int = 95, allow_missing: bool = False,
                        report_path: str | os.PathLike | None = None) -> dict:
    """Convert an LMDB of pickled ``LMDB_Image`` records (original release) into our format.

    items: None keeps the legacy keys as item names; an items tsv (or list of names) maps each
    legacy key back to its item name (see `legacy_key`), skips records of other items, and
    reports items without a record as `build_lmdb` does. image_format: 'png' keeps the exact
    pixels (the default); 'jpeg' (at `quality`) is about 4x smaller.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"converting {src} onto itself; give another output path")
    names_by_key = _legacy_names(items) if items is not None else None
    env = open_readonly(src)
    converted, skipped = [], 0
    info = {"source": str(src), "converted_from": "legacy pickled LMDB_Image",
            "image_format": image_format}
    with env.begin() as txn, LmdbWriter(dst, info=info) as writer:
        for key, value in progress_bar(txn.cursor(), env.stat()["entries"], "legacy -> lmdb"):
            if key in LEGACY_META_KEYS:
                continue
            name = key.decode("utf-8") if names_by_key is None \
                else names_by_key.get(key.decode("utf-8"))
            if name is None:
                skipped += 1
                continue
            img = _pixels_to_image(load_legacy_record(key, value, src))
            writer.put(name, encode_image(img, image_format, quality))
            converted.append(name)
        if names_by_key is not None:
            done = set(converted)
            writer.missing = [n for n in names_by_key.values() if n not in done]
            report = Path(report_path) if report_path else missing_report_path(dst)
            check_missing(writer.missing, len(names_by_key), str(src), report, allow_missing)
    return {"path": str(dst), "count": len(converted), "skipped": skipped,
            "missing": len(writer.missing)}
