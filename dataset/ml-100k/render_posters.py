"""Draw a small synthetic "poster" for every MovieLens-100k movie into an image LMDB.

MovieLens-100k ships no images, so the vision pipeline is tested on pictures drawn from the
movie's real metadata in items.tsv. They are NOT real posters. Each one carries three signals:

- genres: the background is split into vertical stripes, one per genre, coloured by genre
  (fixed palette below; "unknown" is grey);
- decade: a dark band at the top holds one white square per decade since the 1910s
  (1920s: 1 ... 1990s: 8) on a band colour that also depends on the decade; no squares when the
  year is unknown;
- title: the title's words, wrapped, in black on a white panel in the lower half (PIL's built-in
  bitmap font, so the pixels do not depend on the FreeType version).

The same items file always gives the same bytes (PNG, no randomness, no timestamps).

    python dataset/ml-100k/render_posters.py [--items dataset/ml-100k/items.tsv]
        [--out dataset/ml-100k/posters.lmdb] [--size 96] [--limit N]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
from pathlib import Path

from morec.data.posters import render_posters
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
