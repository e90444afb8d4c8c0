"""Convert RecBole's MovieLens-100k atomic files into this folder's users.tsv / items.tsv / CARD.md.

A call of the shared converter (morec/tools/convert.py, format ``recbole``):
users.tsv: ``user_id \\t item_id item_id ...`` -- every rating is an interaction, sorted by
timestamp; ties keep the order of ml-100k.inter (a stable sort); users in ml-100k.user's order.
items.tsv: ``item_id \\t title \\t year genres`` in the order of ml-100k.item.

    python dataset/ml-100k/convert.py [--src DIR_WITH_ml-100k.inter] [--out dataset/ml-100k]

The converted files are committed, so a fresh clone needs neither the source nor this script.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
import os
import shutil
import tempfile
from pathlib import Path

from morec.tools.convert import convert
from morec.errors import InputError, run_cli

HERE = Path(__file__).resolve().parent
FILES = ("users.tsv", "items.tsv", "CARD.md")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE.parents[2] / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if not (args.src / "ml-100k.inter").is_file():
        raise InputError(f"{args.src / 'ml-100k.inter'} not found; pass --src DIR holding RecBole's "
                         "ml-100k.inter and ml-100k.item")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".convert-") as tmp:   # same file system
        done = convert("recbole", args.src, Path(tmp) / "ml-100k")
        for name in FILES:                                  # each file replaced whole, never half
            os.replace(Path(tmp) / "ml-100k" / name, args.out / name)
        shutil.rmtree(Path(tmp) / "ml-100k")
    print(f"wrote {len(done.user_lines)} users and {len(done.item_lines)} items to {args.out}")


if __name__ == "__main__":
    run_cli(main)
