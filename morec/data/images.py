"""Item images in one LMDB file: build it, read it, convert the original release's pickled LMDBs.

An image LMDB written here (format_version 1) is a single file (LMDB ``subdir=False``, no lock
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

Nothing is pickled. The original MoRec release stored pickled ``LMDB_Image`` objects (raw pixels);
``convert_legacy_lmdb`` reads those once, with a restricted unpickler, into this format.
"""
from __future__ import annotations

import codecs
import copyreg
import io
import json
import logging
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import lmdb
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from morec.atomic_io import write_text_atomic
from morec.data.files import read_items
from morec.errors import InputError

log = logging.getLogger(__name__)

META_PREFIX = "__meta__/"
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NORMS = {  # name -> (mean, std) per RGB channel, applied after scaling pixels to [0, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # what the original MoRec code used
}
REBUILD = "rebuild the LMDB with scripts/build_lmdb.py (or scripts/convert_legacy_lmdb.py)"
LEGACY_META_KEYS = (b"__keys__", b"__len__")  # pickled index keys of the original release


# ----------------------------------------------------------------------------- helpers

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


def item_names_from(items: str | os.PathLike | Sequence[str]) -> list[str]:
    """Item names from an items tsv path, or the sequence of names itself."""
    if isinstance(items, (str, os.PathLike)):
        return [row.name for row in read_items(Path(items))]
    return list(items)


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


def image_to_tensor(img: Image.Image, image_size: int = 224, norm: str = "imagenet") -> torch.Tensor:
    """RGB PIL image -> (3, image_size, image_size) float tensor: bilinear resize, /255, normalise.

    Same result as torchvision's Resize((s, s)) + ToTensor + Normalize(mean, std) on a PIL image.
    """
    if img.size != (image_size, image_size):
        img = img.resize((image_size, image_size), Image.BILINEAR)
    mean, std = NORMS[norm]
    scale = torch.tensor([1 / (255 * s) for s in std]).view(3, 1, 1)  # (x / 255 - m) / s
    shift = torch.tensor([-m / s for m, s in zip(mean, std)]).view(3, 1, 1)  # = x*scale + shift
    pixels = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))  # (3, H, W) uint8
    return torch.from_numpy(pixels).float().mul_(scale).add_(shift)


# ----------------------------------------------------------------------------- writing

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
        """Write the metadata, flush to disk, and rename the temp file to the final path."""
        for field, value in self._metadata().items():
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


# ----------------------------------------------------------------------------- reading

_OPEN_ENVS: dict[tuple[int, int], tuple[int, lmdb.Environment]] = {}  # (dev, inode) -> (pid, env)


def open_readonly(path: Path) -> lmdb.Environment:
    """The read-only handle (no lock file) of the LMDB at `path`, one per file and process.

    LMDB refuses to open one file twice in a process, so stores on the same file share a handle.
    A handle inherited through fork is closed and reopened: it must not be used in the child.
    """
    if not path.exists():
        raise InputError(f"image LMDB {path} not found; build it with scripts/build_lmdb.py "
                         "(see docs/images.md)")
    stat = path.stat()
    file_id = (stat.st_dev, stat.st_ino)
    pid, env = _OPEN_ENVS.get(file_id, (None, None))
    if env is not None and pid == os.getpid():
        return env
    if env is not None:
        env.close()  # the parent's handle, inherited through fork
    env = open_checked(path)
    _OPEN_ENVS[file_id] = (os.getpid(), env)
    return env


def open_checked(path: Path) -> lmdb.Environment:
    """Open the LMDB at `path` read-only and check, before any read touches a page, that the file
    holds every page its header says is in use. A truncated file (an interrupted copy) would
    otherwise kill the process with SIGBUS at the first read past its end."""
    data_file = path / "data.mdb" if path.is_dir() else path
    if path.is_dir() and not data_file.exists():
        raise InputError(f"image LMDB {path} is a folder without data.mdb, not an LMDB; point "
                         f"--image_lmdb at the LMDB file (or {REBUILD})")
    try:
        env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False,
                        readahead=False, meminit=False, max_readers=1024)
    except lmdb.Error as err:
        raise InputError(f"{data_file} is not a readable LMDB ({str(err).removeprefix(f'{path}: ')}); point "
                         f"--image_lmdb at the image LMDB, or {REBUILD}") from None
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]      # bytes up to the end of its last page
    size = data_file.stat().st_size
    if size < used:
        env.close()
        raise InputError(f"image LMDB {data_file} is truncated: {size} bytes, but its pages run to "
                         f"{used} bytes (an interrupted copy?); copy it again or {REBUILD}")
    return env


def read_metadata(txn: lmdb.Transaction, path: Path) -> dict:
    """The ``__meta__/*`` entries as a dict; checks that the LMDB is in this project's format."""
    meta, prefix = {}, META_PREFIX.encode()
    cursor = txn.cursor()
    if cursor.set_range(prefix):
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            try:
                meta[key[len(prefix):].decode()] = json.loads(value)
            except ValueError:
                raise InputError(f"metadata {key!r} of {path} is not JSON; {REBUILD}") from None
    version = meta.get("format_version")
    if version is None:
        if any(txn.get(key) is not None for key in LEGACY_META_KEYS):
            raise InputError(f"{path} is an LMDB of the original MoRec release (pickled records); "
                             "convert it once with scripts/convert_legacy_lmdb.py")
        raise InputError(f"{path} has no {META_PREFIX}format_version key, so it was not written "
                         f"by morec; {REBUILD}")
    if version > FORMAT_VERSION:
        raise InputError(f"{path} has format_version {version}, newer than this code reads "
                         f"({FORMAT_VERSION}); update the code or {REBUILD}")
    return meta


_WARNED_MISSING: set[Path] = set()  # LMDBs whose missing items this process has warned about


class ImageStore:
    """Reads item images from an LMDB by item name; safe to hand to DataLoader workers.

    The LMDB is opened lazily on first use in each process (read-only, no lock), so a store
    created before a fork, or pickled to a spawned worker, reopens it in the worker.
    image_size: side of the square tensor; norm: 'imagenet' (default) or 'half' (0.5 / 0.5, as
    the original code).
    """

    def __init__(self, path: str | os.PathLike, image_size: int = 224, norm: str = "imagenet"):
        if norm not in NORMS:
            raise InputError(f"norm {norm!r} unknown; use one of {sorted(NORMS)}")
        self.path = Path(path)
        self.image_size = image_size
        self.norm = norm
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None
        self._meta: dict = {}
        self._missing: frozenset[str] = frozenset()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"], state["_pid"] = None, None  # an open LMDB handle never crosses processes
        return state

    def _open(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            env = open_readonly(self.path)
            with env.begin() as txn:
                self._meta = read_metadata(txn, self.path)
            self._missing = frozenset(self._meta.get("missing", []))
            if self._missing and self.path not in _WARNED_MISSING:
                _WARNED_MISSING.add(self.path)
                log.warning("%s: %d items have no image and read as a blank image",
                            self.path, len(self._missing))
            self._env, self._pid = env, os.getpid()
        return self._env

    @property
    def meta(self) -> dict:
        """The LMDB's metadata (format_version, count, missing, info)."""
        self._open()
        return self._meta

    def __len__(self) -> int:
        return int(self.meta["count"])

    def names(self) -> list[str]:
        """Names of the items that have an image, in key order."""
        prefix = META_PREFIX.encode()
        with self._open().begin() as txn:
            return [key.decode("utf-8") for key in txn.cursor().iternext(values=False)
                    if not key.startswith(prefix)]

    def _get(self, txn: lmdb.Transaction, name: str) -> bytes | None:
        value = txn.get(item_key(name))
        if value is None and name not in self._missing:
            raise InputError(f"item {name!r} has no image in {self.path}; {REBUILD} with this "
                             "item's image (or with --allow_missing)")
        return value

    def get_bytes(self, name: str) -> bytes | None:
        """The stored (encoded) image of `name`; None for an item listed as missing."""
        with self._open().begin() as txn:
            return self._get(txn, name)

    def _to_tensor(self, name: str, data: bytes | None) -> torch.Tensor:
        if data is None:  # allowed missing: the mean colour, i.e. zeros after normalisation
            return torch.zeros(3, self.image_size, self.image_size)
        try:
            img = decode_image(data)
        except Exception as err:
            raise InputError(f"the image of item {name!r} in {self.path} does not decode "
                             f"({type(err).__name__}: {err}); the LMDB is damaged: {REBUILD}") from None
        return image_to_tensor(img, self.image_size, self.norm)

    def load_tensor(self, name: str) -> torch.Tensor:
        """(3, image_size, image_size) float tensor of item `name`: decoded, resized, normalised."""
        return self._to_tensor(name, self.get_bytes(name))

    def load_batch(self, names: Sequence[str]) -> torch.Tensor:
        """(B, 3, image_size, image_size) float tensor of the items `names` (one read transaction)."""
        with self._open().begin() as txn:
            values = [self._get(txn, name) for name in names]
        if not values:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([self._to_tensor(name, value) for name, value in zip(names, values)])


class ImageDataset(torch.utils.data.Dataset):
    """names[i] -> its image tensor; for DataLoader workers (feature extraction, benchmarks)."""

    def __init__(self, store: ImageStore, names: Sequence[str]):
        self.store, self.names = store, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.store.load_tensor(self.names[index])


# ----------------------------------------------------------------------------- images by item id

ITEM_ID_KEYS = ("seqs", "negatives", "items", "extra_negatives")   # the batch entries whose ids the item tower encodes


class ItemImages:
    """Pixels of items by item id: an ImageStore plus the id -> name table (names[0]: padding).

    Picklable (the store reopens its LMDB in each DataLoader worker)."""

    def __init__(self, store: ImageStore, names: Sequence[str]):
        self.store, self.names = store, list(names)

    def check_complete(self) -> None:
        """Every item (ids 1..N) has an image in the LMDB, or is listed there as missing (blank);
        otherwise an InputError naming how many lack one and the file that lists them."""
        listed_missing = set(self.store.meta.get("missing", []))
        stored = set(self.store.names())
        absent = [name for name in self.names[1:] if name not in stored and name not in listed_missing]
        if absent:                   # (none absent: a build's own report of allowed blanks stays)
            check_missing(absent, len(self.names) - 1, str(self.store.path), missing_report_path(self.store.path),
                          False, f"Add the images and {REBUILD} (with --allow_missing to give them a blank image)")

    def check_decodes(self) -> None:
        """Every stored image of items 1..N decodes (run before training, so that a damaged
        image is not found mid-epoch inside a DataLoader worker); otherwise an InputError
        naming how many do not and the first few."""
        start, bad = time.perf_counter(), []
        with self.store._open().begin() as txn:
            for name in progress_bar(self.names[1:], len(self.names) - 1, "checking images"):
                value = txn.get(item_key(name))
                try:
                    if value is not None:            # None: listed as missing (check_complete)
                        decode_image(value)
                except Exception:                    # PIL raises OSError, ValueError, SyntaxError...
                    bad.append(name)
        if bad:
            raise InputError(f"{len(bad)} of {len(self.names) - 1} images in {self.store.path} do not "
                             f"decode (items {', '.join(map(repr, bad[:5]))}{', ...' if len(bad) > 5 else ''}); "
                             f"the LMDB is damaged: {REBUILD}")
        log.info("checked the %d images of %s in %.2fs", len(self.names) - 1, self.store.path,
                 time.perf_counter() - start)

    def pixels(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (K,) of real items -> (K, 3, S, S) normalised float pixels."""
        return self.store.load_batch([self.names[i] for i in ids.tolist()])


def batch_image_ids(batch: dict) -> torch.Tensor:
    """(K,) the distinct real item ids a training batch encodes, sorted (torch.unique)."""
    ids = torch.cat([batch[key].reshape(-1) for key in ITEM_ID_KEYS if key in batch])
    unique = torch.unique(ids)
    return unique[unique != 0]


class BatchesWithImages(torch.utils.data.Dataset):
    """Training batches (dicts of id tensors) plus the pixels of their distinct items:
    batch["image_ids"] (K,) sorted, batch["images"] (K, 3, S, S). Decoded in DataLoader workers
    (one LMDB handle per worker) while the model trains on the batch before."""

    def __init__(self, batches: Sequence[dict], images: ItemImages):
        self.batches, self.images = list(batches), images

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        batch = dict(self.batches[index])
        batch["image_ids"] = batch_image_ids(batch)
        batch["images"] = self.images.pixels(batch["image_ids"])
        return batch


class ItemChunks(torch.utils.data.Dataset):
    """Chunks of item ids with their pixels, for encoding the whole catalogue: (ids, pixels)."""

    def __init__(self, ids: torch.Tensor, chunk_size: int, images: ItemImages):
        self.chunks, self.images = list(ids.split(chunk_size)), images

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = self.chunks[index]
        real = ids[ids != 0]
        pixels = torch.zeros(len(ids), 3, self.images.store.image_size, self.images.store.image_size)
        pixels[ids != 0] = self.images.pixels(real)          # padding (id 0): a blank image
        return ids, pixels


def image_loader(dataset: torch.utils.data.Dataset, num_workers: int, pin_memory: bool,
                 generator: torch.Generator | None = None):
    """A DataLoader that yields the dataset's items as they are (each is a batch already).

    Its iterator draws the workers' base seed from `generator` (default: a fixed one), never
    from the global torch RNG, which holds the training's dropout stream (a resumed run restores
    that stream, then builds a new iterator: it must not draw from it). An InputError in a worker
    reaches the caller as the same InputError, not wrapped in the worker's traceback."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(CarryInputErrors(dataset), batch_size=None, shuffle=False,
                                         num_workers=num_workers, pin_memory=pin_memory,
                                         prefetch_factor=4 if num_workers else None, generator=generator)
    return raise_carried_errors(loader)


class CarriedInputError:
    """The message of an InputError raised while loading an item, returned as a value so that
    it crosses from a DataLoader worker to the main process intact."""

    def __init__(self, message: str):
        self.message = message


class CarryInputErrors(torch.utils.data.Dataset):
    """`dataset`, with an InputError of __getitem__ returned as a CarriedInputError."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except InputError as err:
            return CarriedInputError(str(err))


def raise_carried_errors(loader: Iterable) -> Iterator:
    """The loader's items; a CarriedInputError is raised again as an InputError."""
    for item in loader:
        if isinstance(item, CarriedInputError):
            raise InputError(item.message)
        yield item


# ----------------------------------------------------------------------------- legacy format

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
