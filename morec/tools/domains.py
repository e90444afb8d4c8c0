"""A transfer setting on the shipped data: MovieLens-100k split into two domains by
item genre, each written as a normal data set folder (users.tsv, items.tsv, posters.lmdb).

The rule (`split_by_genre`): an item goes to the TARGET domain if it has at least one of the
target genres (default Action, Adventure, Sci-Fi, Fantasy: 361 of the 1682 movies), otherwise to
the SOURCE domain; no item is in both. Each user keeps, in each domain, only that domain's
items in their original (time) order; users left with no item are dropped. The loader's usual
filters (min_seq_len, the last L+3 items, SPEC "Data") then apply when a run reads the folder.
Users appear in both domains under the same names (MovieLens has one user base): the transfer
study moves the user encoder and the modality tower, never a user or item id.

Genres come from RecBole's ml-100k.item (`recbole_genres`, column `class`) or, equivalently,
from the items file that dataset/ml-100k/convert.py made from it (`items_file_genres`: the
abstract column is "year genre genre ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from morec.atomic_io import write_text_atomic
from morec.data.files import ItemRow, UserRow, read_items, read_users
from morec.errors import InputError

TARGET_GENRES = ("Action", "Adventure", "Sci-Fi", "Fantasy")
DOMAINS = ("source", "target")


@dataclass
class Domain:
    items: list[ItemRow]         # in the order of the full items file
    users: list[UserRow]         # users with at least one item of the domain, items in time order


def recbole_genres(path: Path) -> dict[str, list[str]]:
    """{item id: genres} from RecBole's ml-100k.item (item_id, movie_title, release_year, class)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"cannot read the RecBole item file {path} ({err}); give --genres_file "
                         "DIR/ml-100k.item or leave it out to read the genres from items.tsv") from None
    header = lines[0].split("\t") if lines else []
    if "class:token_seq" not in header or "item_id:token" not in header:
        raise InputError(f"{path}: expected RecBole's ml-100k.item header with item_id:token and "
                         f"class:token_seq, got {header}")
    id_col, genre_col = header.index("item_id:token"), header.index("class:token_seq")
    rows = [line.split("\t") for line in lines[1:] if line]
    return {row[id_col]: row[genre_col].split() if len(row) > genre_col else [] for row in rows}


def items_file_genres(items: list[ItemRow]) -> dict[str, list[str]]:
    """{item name: genres} from an items.tsv whose abstract is 'year genre genre ...': its words
    that are MovieLens genres (the year may be missing or misspelled, e.g. item 267's 'unkonwn')."""
    from morec.tools.posters import GENRE_COLOURS          # the 19 MovieLens genres, "unknown" included
    return {row.name: [w for w in row.abstract.split() if w in GENRE_COLOURS] for row in items}


def split_by_genre(items: list[ItemRow], users: list[UserRow], genres: dict[str, list[str]],
                   target_genres: tuple[str, ...] = TARGET_GENRES) -> dict[str, Domain]:
    """{"source": Domain, "target": Domain} by the rule of the module doc."""
    missing = [row.name for row in items if row.name not in genres]
    if missing:
        raise InputError(f"{len(missing)} items have no genres (e.g. {missing[:3]}); the genre file and "
                         "the items file must describe the same items")
    known = {g for gs in genres.values() for g in gs}
    unknown = sorted(set(target_genres) - known)
    if unknown or not target_genres:
        raise InputError(f"target genres {unknown or '(none)'} do not occur; choose from {', '.join(sorted(known))}")
    in_target = {row.name for row in items if set(genres[row.name]) & set(target_genres)}
    domains = {}
    for name in DOMAINS:
        keep = (lambda item: item in in_target) if name == "target" else (lambda item: item not in in_target)
        kept_users = [UserRow(u.line_no, u.name, [i for i in u.items if keep(i)]) for u in users]
        domains[name] = Domain([row for row in items if keep(row.name)], [u for u in kept_users if u.items])
    return domains


def write_domain(domain: Domain, folder: Path, poster_size: int = 96) -> None:
    """users.tsv, items.tsv and posters.lmdb (morec.tools.posters, drawn from the items) in `folder`."""
    from morec.tools.posters import render_posters
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "items.tsv", "".join(f"{r.name}\t{r.title}\t{r.abstract}".rstrip("\t") + "\n"
                                                    for r in domain.items))
    write_text_atomic(folder / "users.tsv", "".join(f"{u.name}\t{' '.join(u.items)}\n" for u in domain.users))
    render_posters(folder / "items.tsv", folder / "posters.lmdb", size=poster_size)


def make_domains(src: Path, out: Path, genres_file: Path | None = None,
                 target_genres: tuple[str, ...] = TARGET_GENRES, poster_size: int = 96,
                 prefix: str = "") -> dict[str, Path]:
    """Split the data set folder `src` (users.tsv, items.tsv) into `out/<prefix>-source` and
    `out/<prefix>-target` (prefix: src's folder name); returns the two folders."""
    items, users = read_items(src / "items.tsv"), read_users(src / "users.tsv")
    genres = recbole_genres(genres_file) if genres_file else items_file_genres(items)
    domains = split_by_genre(items, users, genres, target_genres)
    folders = {}
    for name, domain in domains.items():
        folders[name] = out / f"{prefix or src.name}-{name}"
        write_domain(domain, folders[name], poster_size)
    return folders
