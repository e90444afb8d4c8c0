"""Draw a small synthetic "poster" for every MovieLens-100k movie into an image LMDB.

They are NOT real posters: genre stripes, decade squares and the title, drawn from items.tsv
(the layout and the signals: morec/tools/posters.py, README_posters.md). Deterministic bytes.

    python dataset/ml-100k/render_posters.py [--items dataset/ml-100k/items.tsv]
        [--out dataset/ml-100k/posters.lmdb] [--size 96] [--limit N]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
from pathlib import Path

from morec.tools.posters import render_posters
from morec.errors import InputError

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=Path, default=HERE / "items.tsv")
    parser.add_argument("--out", type=Path, default=HERE / "posters.lmdb")
    parser.add_argument("--size", type=int, default=96, help="side of the square poster in pixels")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (tests)")
    args = parser.parse_args(argv)
    try:
        summary = render_posters(args.items, args.out, args.size, args.limit)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {summary['count']} posters ({args.size}x{args.size} PNG) to {args.out}")
    return summary


if __name__ == "__main__":
    main()
