"""Benchmark the image LMDB: decode + transform speed, and bytes on disk per image.

    python scripts/bench_images.py [--lmdb dataset/ml-100k/posters.lmdb] [--limit N]
        [--image_size 224] [--workers 0 1 2]

Reads every image of the LMDB (the rendered ml-100k posters by default, drawn first if absent)
through a DataLoader with 0, 1 and 2 workers, and the same images from one file each; then
compares bytes per image with the original release's format (a pickled LMDB_Image of raw
pixels), measured by pickling such records. Single-threaded torch; takes well under 2 minutes.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from morec.data.image_format import decode_image
from morec.data.images import ImageDataset, ImageStore, image_to_tensor
from morec.tools.lmdb_builder import build_lmdb
from morec.tools.posters import render_posters

ROOT = Path(__file__).resolve().parents[1]
POSTERS = ROOT / "dataset" / "ml-100k" / "posters.lmdb"


class LMDB_Image:  # noqa: N801 -- the original release's record, pickled as __main__.LMDB_Image
    def __init__(self, image, id):
        self.channels = image.shape[2]
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.id = id


class FileImageDataset(torch.utils.data.Dataset):
    """The same decode + transform, reading one image file per item instead of the LMDB."""

    def __init__(self, files: list[Path], image_size: int, norm: str):
        self.files, self.image_size, self.norm = files, image_size, norm

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        img = decode_image(self.files[index].read_bytes())
        return image_to_tensor(img, self.image_size, self.norm)


def images_per_second(dataset, workers: int, batch_size: int) -> float:
    """One full pass over `dataset`; the worker start-up is part of the time, as in training."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def legacy_bytes(data: bytes, side: int | None) -> int:
    """Size of the original release's value for this image: a pickled LMDB_Image of raw pixels."""
    img = decode_image(data)
    if side:
        img = img.resize((side, side), Image.BILINEAR)
    return len(pickle.dumps(LMDB_Image(np.asarray(img), 1)))


def speed_table(store, names, files, workers, batch_size) -> None:
    lmdb_set = ImageDataset(store, names)
    file_set = FileImageDataset(files, store.image_size, store.norm)
    print(f"\ndecode + resize to {store.image_size} + normalise, {len(names)} images, "
          f"batch {batch_size} (images/s):")
    print(f"{'workers':>8} {'LMDB':>10} {'files':>10}")
    for n in workers:
        print(f"{n:>8} {images_per_second(lmdb_set, n, batch_size):>10.0f} "
              f"{images_per_second(file_set, n, batch_size):>10.0f}")


def disk_table(lmdb_path: Path, names, files, tmp: Path, sample: int = 50) -> None:
    store = ImageStore(lmdb_path)
    side = Image.open(files[0]).size
    jpeg224 = tmp / "jpeg224.lmdb"
    build_lmdb(files[0].parent, jpeg224, names[:sample], resize=224)
    blobs = [files[i].read_bytes() for i in range(min(sample, len(files)))]
    rows = [
        (f"LMDB file, as stored ({side[0]}x{side[1]} PNG)", lmdb_path.stat().st_size / len(store)),
        (f"  values only ({side[0]}x{side[1]} PNG)", np.mean([len(b) for b in blobs])),
        (f"LMDB file, --resize 224 (JPEG q95), {len(blobs)} images",
         jpeg224.stat().st_size / len(blobs)),
        (f"legacy pickled raw pixels, {side[0]}x{side[1]}", np.mean([legacy_bytes(b, None) for b in blobs])),
        ("legacy pickled raw pixels, 224x224", np.mean([legacy_bytes(b, 224) for b in blobs])),
    ]
    print("\nbytes on disk per image:")
    for label, size in rows:
        print(f"  {label:<48} {size / 1024:8.1f} KB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lmdb", type=Path, default=POSTERS)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.lmdb.exists():
            print(f"{args.lmdb} not found: rendering the ml-100k posters into it")
            render_posters(ROOT / "dataset" / "ml-100k" / "items.tsv", args.lmdb)
        store = ImageStore(args.lmdb, image_size=args.image_size)
        names = store.names()[: args.limit]
        (tmp / "files").mkdir()
        files = []
        for name in names:  # the same bytes, one file per image
            files.append(tmp / "files" / f"{name}.png")
            files[-1].write_bytes(store.get_bytes(name))
        print(f"{args.lmdb}: {len(store)} images; info {store.meta.get('info')}")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch "
              "single-threaded per process")
        speed_table(store, names, files, args.workers, args.batch_size)
        disk_table(args.lmdb, names, files, tmp)


if __name__ == "__main__":
    main()
