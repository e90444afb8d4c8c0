"""Convert RecBole's MovieLens-100k atomic files into this project's users / items tsv layout.

users.tsv: ``user_id \\t item_id item_id ...`` -- every rating is an interaction, sorted by
timestamp; ties keep the order of ml-100k.inter (a stable sort).
items.tsv: ``item_id \\t title \\t year genres`` in the order of ml-100k.item.

    python dataset/ml-100k/convert.py [--src DIR_WITH_ml-100k.inter] [--out dataset/ml-100k]

The converted files are committed, so a fresh clone needs neither the source nor this script.
"""
import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def read_atomic(path: Path) -> list[list[str]]:
    """Rows of a RecBole atomic file (tab separated, typed header line skipped)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def write_atomically(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def convert(src: Path, out: Path) -> tuple[int, int]:
    items = read_atomic(src / "ml-100k.item")
    item_lines = [f"{item_id}\t{title}\t{year} {genres}".rstrip()
                  for item_id, title, year, genres in items]

    by_user: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for order, (user, item, _rating, timestamp) in enumerate(read_atomic(src / "ml-100k.inter")):
        by_user[user].append((float(timestamp), order, item))
    user_lines = [f"{user}\t" + " ".join(item for _, _, item in sorted(events))
                  for user, events in sorted(by_user.items(), key=lambda kv: int(kv[0]))]

    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "items.tsv", item_lines)
    write_atomically(out / "users.tsv", user_lines)
    return len(user_lines), len(item_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE.parents[2] / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if not (args.src / "ml-100k.inter").is_file():
        sys.exit(f"error: {args.src / 'ml-100k.inter'} not found; pass --src DIR holding "
                 "RecBole's ml-100k.inter and ml-100k.item")
    n_users, n_items = convert(args.src, args.out)
    print(f"wrote {n_users} users and {n_items} items to {args.out}")


if __name__ == "__main__":
    main()
