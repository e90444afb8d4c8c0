"""Convert an image LMDB of the original MoRec release (pickled LMDB_Image records) once.

    python scripts/convert_legacy_lmdb.py --src OLD.lmdb --out NEW.lmdb
        [--items items.tsv] [--format png|jpeg] [--quality 95] [--allow_missing]

The old values are read with a restricted unpickler that accepts only LMDB_Image records, numpy
arrays and bytes, and refuses (names and never runs) anything else. With --items, the legacy keys
(str(int(name without 'v')), e.g. '27903' for item 'v27903') are mapped back to item names.
PNG keeps the exact pixels; JPEG is about 4x smaller. See docs/images.md.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
import logging

from morec.tools.legacy_lmdb import convert_legacy_lmdb
from morec.errors import InputError


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=pathlib.Path, required=True, help="the legacy LMDB")
    parser.add_argument("--out", type=pathlib.Path, required=True, help="the LMDB to write")
    parser.add_argument("--items", type=pathlib.Path, default=None,
                        help="items tsv: map legacy keys to these item names")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality")
    parser.add_argument("--allow_missing", action="store_true",
                        help="items without a record read as a blank image instead of an error")
    parser.add_argument("--report", type=pathlib.Path, default=None,
                        help="where to list items without a record (default <out>.missing.txt)")
    args = parser.parse_args(argv)
    try:
        summary = convert_legacy_lmdb(args.src, args.out, args.items, args.format, args.quality,
                                      args.allow_missing, args.report)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"converted {summary['count']} images to {summary['path']} "
          f"({summary['skipped']} records of other items skipped, {summary['missing']} items "
          "without a record)")
    return summary


if __name__ == "__main__":
    main()
