"""Convert a public data set into this project's users.tsv / items.tsv (and images.lmdb), then
write its CARD.md (morec/tools/formats.py lists each format's layout and where it was read).

    python scripts/convert_dataset.py --from FORMAT SRC DST
        [--inter FILE] [--items FILE] [--images DIR] [--no_images] [--allow_missing_images]
        [--resize N] [--max_seq_len 20] [--min_seq_len 5] [--stream] [--prepare CACHE_DIR]

FORMAT: pixelrec, microlens, ninerec, amazon_hllm, sasrec_txt, recbole. DST must not exist.
--stream (every format): the same users.tsv / items.tsv with bounded memory (Polars;
morec/tools/stream_convert.py), for logs of tens of millions of interactions; CARD.md then
holds the counts only. --prepare CACHE_DIR: then build the prepared form that runs with
--prepared_data --cache_dir CACHE_DIR map (morec/data/prepared.py), at --max_seq_len / --min_seq_len
(a relative CACHE_DIR is taken from the repository root, as runs take --cache_dir).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse
import logging

from morec.tools.convert import READERS, convert
from morec.errors import run_cli


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="fmt", required=True, choices=sorted(READERS), help="the source format")
    parser.add_argument("src", type=pathlib.Path, help="the source folder (sasrec_txt: or the .txt file)")
    parser.add_argument("dst", type=pathlib.Path, help="the new data set folder (must not exist)")
    parser.add_argument("--inter", help="the interaction file, when it is not found in SRC")
    parser.add_argument("--items", help="the item file, when it is not found in SRC")
    parser.add_argument("--images", help="the folder of <item>.jpg covers, when not found in SRC")
    parser.add_argument("--no_images", action="store_true", help="convert an image format without its covers")
    parser.add_argument("--allow_missing_images", action="store_true",
                        help="items without a cover read as a blank image instead of an error")
    parser.add_argument("--resize", type=int, default=None, help="store N x N JPEGs (N from 1 to 4096) instead of the files' bytes")
    parser.add_argument("--max_seq_len", type=int, default=20, help="L of the card's protocol numbers (at least 1)")
    parser.add_argument("--min_seq_len", type=int, default=5, help="min_seq_len of the card's protocol numbers (at least 3)")
    parser.add_argument("--stream", action="store_true",
                        help="bounded memory (every format): Polars streams the interaction file")
    parser.add_argument("--prepare", type=pathlib.Path, metavar="CACHE_DIR",
                        help="also build the prepared form (--prepared_data) under CACHE_DIR/prepared")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    convert_only(args)
    if args.prepare is not None:
        from morec.data.prepared import prepared_sequence_data
        from morec.resolve import from_repo_root
        cache = from_repo_root(str(args.prepare))                # as a run reads --cache_dir
        data = prepared_sequence_data(args.dst, "users.tsv", "items.tsv", args.max_seq_len, args.min_seq_len, 0, cache)
        print(f"prepared form under {cache / 'prepared'}: {data.num_users:,} users, {data.num_items:,} items "
              f"kept at L={args.max_seq_len}, min_seq_len={args.min_seq_len}")


def convert_only(args) -> None:
    if args.stream:
        from morec.tools.stream_convert import stream_convert
        counts = stream_convert(args.fmt, args.src, args.dst, inter=args.inter, items=args.items, images=args.images,
                                no_images=args.no_images, allow_missing_images=args.allow_missing_images,
                                resize=args.resize, max_seq_len=args.max_seq_len, min_seq_len=args.min_seq_len)
        print(f"wrote {counts['users']:,} users, {counts['items']:,} items and {counts['interactions']:,} "
              f"interactions to {args.dst}")
        return
    done = convert(args.fmt, args.src, args.dst, inter=args.inter, items=args.items, images=args.images,
                   no_images=args.no_images, allow_missing_images=args.allow_missing_images,
                   resize=args.resize, max_seq_len=args.max_seq_len, min_seq_len=args.min_seq_len)
    print(f"wrote {len(done.user_lines):,} users, {len(done.item_lines):,} items and "
          f"{done.num_interactions:,} interactions to {args.dst}"
          + (" (with images.lmdb)" if done.images else ""))
    print((args.dst / "CARD.md").read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    run_cli(main)
