"""Print a data set's card and write it as DIR/CARD.md (morec/tools/card.py: counts, sequence lengths
before / after the L+3 cut, item popularity, content, most-popular baseline).

    python scripts/describe_dataset.py DIR [--max_seq_len 20] [--min_seq_len 5]
        [--behaviors users.tsv] [--news items.tsv] [--image_lmdb images.lmdb]
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import argparse

from morec.tools.card import write_card
from morec.errors import InputError, run_cli


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=pathlib.Path, help="the data set folder (users.tsv, items.tsv)")
    parser.add_argument("--max_seq_len", type=int, default=20, help="L: sequences are cut to L+3 items")
    parser.add_argument("--min_seq_len", type=int, default=5, help="shorter users are dropped")
    parser.add_argument("--behaviors", default="users.tsv", help="users file in DIR")
    parser.add_argument("--news", default="items.tsv", help="items file in DIR")
    parser.add_argument("--image_lmdb", default="images.lmdb", help="image LMDB in DIR, if any")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        raise InputError(f"{args.dir} is not a folder; pass the data set folder (holding users.tsv)")
    if args.max_seq_len < 1 or args.min_seq_len < 1:
        raise InputError("--max_seq_len and --min_seq_len must be at least 1")
    print(write_card(args.dir, behaviors=args.behaviors, news=args.news, max_seq_len=args.max_seq_len,
                     min_seq_len=args.min_seq_len, image_lmdb=args.image_lmdb), end="")


if __name__ == "__main__":
    run_cli(main)
