"""Split MovieLens-100k into a source and a target domain by item genre (the transfer
setting of scripts/study_q6_transfer.py), each a normal data set folder with users.tsv,
items.tsv and posters.lmdb, so the study runs offline:

    python scripts/make_domains.py                   # dataset/ml-100k -> dataset/ml-100k-source, -target
    python scripts/make_domains.py --genres_file /path/to/ml-100k.item --target_genres Horror,Sci-Fi

Rule (morec/tools/domains.py): an item goes to the target domain if it has one of the target
genres (default Action, Adventure, Sci-Fi, Fantasy), else to the source; no item is in both;
users keep only their items of each domain, and the loader's filters then apply. Prints the sizes.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
from pathlib import Path

from morec.config import REPO_ROOT
from morec.tools.domains import TARGET_GENRES, make_domains
from morec.data.sequences import load_sequence_data
from morec.errors import InputError


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default=str(REPO_ROOT / "dataset" / "ml-100k"), help="data set folder to split")
    parser.add_argument("--out", default=str(REPO_ROOT / "dataset"), help="where <name>-source/ and <name>-target/ go")
    parser.add_argument("--genres_file", default="", help="RecBole's ml-100k.item (default: the genres in items.tsv)")
    parser.add_argument("--target_genres", default=",".join(TARGET_GENRES))
    parser.add_argument("--poster_size", type=int, default=96)
    parser.add_argument("--max_seq_len", type=int, default=10, help="for the printed sizes after the loader's filters")
    parser.add_argument("--min_seq_len", type=int, default=5)
    args = parser.parse_args(argv)
    genres = tuple(g.strip() for g in args.target_genres.split(",") if g.strip())
    folders = make_domains(Path(args.src), Path(args.out), Path(args.genres_file) if args.genres_file else None,
                           genres, args.poster_size)
    for name, folder in folders.items():
        data = load_sequence_data(folder, "users.tsv", "items.tsv", args.max_seq_len, args.min_seq_len)
        users = (folder / "users.tsv").read_text().splitlines()
        print(f"{name}: {folder}: {sum(1 for _ in (folder / 'items.tsv').open())} items, {len(users)} users, "
              f"{sum(len(u.split(chr(9))[1].split()) for u in users)} interactions; after the loader's filters "
              f"(max_seq_len {args.max_seq_len}, min_seq_len {args.min_seq_len}): {data.num_users} users, "
              f"{data.num_items} items")
    return folders


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
