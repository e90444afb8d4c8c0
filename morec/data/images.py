"""Item images read from an image LMDB (format: morec.data.image_format) and handed to
DataLoader workers: `ImageStore` reads images by item name, `ItemImages` by item id,
`BatchesWithImages` / `ItemChunks` pair ids with their pixels, `image_loader` runs them in workers.

Building an LMDB, or converting the original release's pickled one, is tooling:
morec.tools.lmdb_builder and morec.tools.legacy_lmdb. Nothing here writes an LMDB or unpickles.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import lmdb
import numpy as np
import torch
from PIL import Image

from morec.data.image_format import (FORMAT_VERSION, LEGACY_META_KEYS, META_PREFIX, REBUILD, check_missing,
                                     decode_image, item_key, missing_report_path, progress_bar)
from morec.errors import InputError

log = logging.getLogger(__name__)

NORMS = {  # name -> (mean, std) per RGB channel, applied after scaling pixels to [0, 1]
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # what the original MoRec code used
}


# ----------------------------------------------------------------------------- pixels

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
_CONTENT_DIGESTS: dict[tuple, str] = {}    # (path, inode, size, mtime_ns) -> content sha256


def lmdb_content_sha256(env: lmdb.Environment) -> str:
    """sha256 of the image entries (not ``__meta__/``) of an LMDB in key order, each as the
    lengths and bytes of its key and value (morec.data.image_format: ``content_sha256``)."""
    digest, prefix = hashlib.sha256(), META_PREFIX.encode()
    with env.begin() as txn:
        for key, value in txn.cursor():
            if not key.startswith(prefix):
                digest.update(len(key).to_bytes(4, "little") + key + len(value).to_bytes(8, "little"))
                digest.update(value)
    return digest.hexdigest()


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

    def content_sha256(self) -> str:
        """sha256 of every image in key order (each key and value with its length): what the
        images are, whatever their keys. Read once per file version in a process (memo by inode,
        size and mtime); checked against the ``content_sha256`` its builder recorded, if any."""
        stat = self.path.stat()
        stamp = (str(self.path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp not in _CONTENT_DIGESTS:
            _CONTENT_DIGESTS[stamp] = lmdb_content_sha256(self._open())
        digest, built = _CONTENT_DIGESTS[stamp], self.meta.get("content_sha256")
        if built is not None and built != digest:
            raise InputError(f"the images in {self.path} changed after it was built (the sha256 of its "
                             f"images is {digest[:12]}, {built[:12]} when it was written); {REBUILD}")
        return digest

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


# ----------------------------------------------------------------------------- DataLoader workers

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
