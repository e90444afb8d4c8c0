"""Pack a folder of item images (<item_name>.jpg|jpeg|png) into one image LMDB.

    python scripts/build_lmdb.py --images DIR --items items.tsv --out path.lmdb
        [--resize N] [--allow_missing] [--report FILE]

Without --items every image in the folder is stored. Items of --items without an image are
listed in --report (default <out>.missing.txt) and stop the build unless --allow_missing (then
they read as a blank image). See docs/images.md for the format.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
import logging

from morec.tools.lmdb_builder import build_lmdb
from morec.errors import InputError


def parse_args(argv=None, **defaults) -> argparse.Namespace:
    """The command line; `defaults` pre-fill options (dataset/HM/build_lmdb.py uses this)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=pathlib.Path, required="images" not in defaults,
                        help="folder holding <item_name>.jpg|jpeg|png")
    parser.add_argument("--items", type=pathlib.Path, default=None,
                        help="items tsv (item name in the first column); default: every image")
    parser.add_argument("--out", type=pathlib.Path, required="out" not in defaults,
                        help="the LMDB file to write")
    parser.add_argument("--resize", type=int, default=None,
                        help="store N x N JPEGs instead of the original bytes")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality with --resize")
    parser.add_argument("--allow_missing", action="store_true",
                        help="items without an image read as a blank image instead of an error")
    parser.add_argument("--report", type=pathlib.Path, default=None,
                        help="where to list items without an image (default <out>.missing.txt)")
    parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def main(argv=None, **defaults) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv, **defaults)
    try:
        summary = build_lmdb(args.images, args.out, args.items, resize=args.resize,
                             allow_missing=args.allow_missing, report_path=args.report,
                             quality=args.quality)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {summary['count']} images to {summary['path']}"
          + (f"; {summary['missing']} items without an image, listed in {summary['report']}"
             if summary["missing"] else ""))
    return summary


if __name__ == "__main__":
    main()
