"""Data converters (morec/tools/convert.py) and dataset cards (morec/tools/card.py).

Every format gets a tiny hand-made copy of its documented layout, holding the same 16
interactions in the same file order; the converted sequences are worked out by hand below.
"""
from __future__ import annotations

import csv
import json
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_in_process
from morec.tools.card import describe, gini, top_share, write_card
from morec.tools.convert import READERS, convert
from morec.data.images import ImageStore
from morec.errors import InputError

# (user, item, timestamp) in file order. Ties: u2's i3 and i1 at 50, u3's i1 and i2 at 9.
EVENTS = [("u2", "i3", 50), ("u1", "i1", 10), ("u1", "i2", 30), ("u2", "i1", 50), ("u1", "i3", 20),
          ("u3", "i4", 7), ("u2", "i2", 40), ("u1", "i4", 40), ("u3", "i5", 3), ("u2", "i4", 60),
          ("u1", "i5", 50), ("u3", "i1", 9), ("u2", "i5", 70), ("u3", "i2", 9), ("u3", "i3", 1),
          ("u1", "i6", 60)]
# Sorted by time, equal times in file order; users first seen in the file: u2, u1, u3.
EXPECTED = {"u2": "i2 i3 i1 i4 i5", "u1": "i1 i3 i2 i4 i5 i6", "u3": "i3 i5 i4 i1 i2"}
ITEMS = ["i4", "i1", "i2", "i3", "i5", "i6", "i7"]          # item-file order; i7 has no interaction
TITLES = {item: f"Title, of {item}" for item in ITEMS}       # a comma: csv quoting is exercised
COVERS = ("i1", "i4")                                        # the two items with a cover image


def write_csv(path: Path, rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return path


def write_covers(folder: Path, names=COVERS) -> None:
    folder.mkdir(parents=True)
    for k, name in enumerate(names):
        Image.new("RGB", (8, 6), (40 * k, 200, 90)).save(folder / f"{name}.jpg")


def time_ordered() -> list[tuple[str, str, int]]:
    """EVENTS sorted by time (stable): the one order a timestamp-free file (SASRec's) can give."""
    return sorted(EVENTS, key=lambda event: event[2])


def make_pixelrec(src: Path) -> None:
    write_csv(src / "pixelrec_interaction" / "Pixel_toy.csv",
              [["item_id", "user_id", "timestamp"]] + [[i, u, t] for u, i, t in EVENTS])
    counts = ["view_number", "comment_number", "thumbup_number", "share_number", "coin_number",
              "favorite_number", "barrage_number"]
    write_csv(src / "pixelrec_iteminfo" / "Pixel_toy.csv",
              [["item_id", *counts, "title", "tag", "description"]]
              + [[i, *range(7), TITLES[i], "tag", f"about\n{i}"] for i in ITEMS])    # a line break inside
    write_covers(src / "cover")


def make_microlens(src: Path) -> None:
    write_csv(src / "MicroLens-toy_pairs.csv", [["user", "item", "timestamp"]] + [[u, i, t] for u, i, t in EVENTS])
    lines = [f"{i},{TITLES[i]}\n" for i in ITEMS]              # as shipped: no header, commas unquoted
    (src / "MicroLens-toy_title_en.csv").write_text("".join(lines), encoding="utf-8")
    write_covers(src / "covers")


def make_ninerec(src: Path) -> None:
    write_csv(src / "Toy_pair.csv", [[i, u, t] for u, i, t in EVENTS])
    write_csv(src / "Toy_item.csv", [[i, f"标题 {i}", TITLES[i]] for i in ITEMS])
    write_covers(src / "Toy_cover")


def make_amazon_hllm(src: Path) -> None:
    write_csv(src / "dataset" / "toy.csv", [["item_id", "user_id", "timestamp"]] + [[i, u, t] for u, i, t in EVENTS])
    write_csv(src / "information" / "toy.csv",
              [["item_id", "description", "title"]] + [[i, f"about\t{i}", TITLES[i]] for i in ITEMS])


def make_sasrec_txt(src: Path) -> None:
    src.mkdir(parents=True)
    (src / "toy.txt").write_text("".join(f"{u[1:]} {i[1:]}\n" for u, i, _ in time_ordered()))


def make_recbole(src: Path) -> None:
    write_csv(src / "toy.inter", [["user_id:token", "item_id:token", "rating:float", "timestamp:float"]]
              + [[u, i, 4, t] for u, i, t in EVENTS], "\t")
    write_csv(src / "toy.item", [["item_id:token", "movie_title:token_seq", "year:token", "genre:token_seq"]]
              + [[i, TITLES[i], 1990 + int(i[1:]), "Drama Comedy"] for i in ITEMS], "\t")


MAKERS = {"pixelrec": make_pixelrec, "microlens": make_microlens, "ninerec": make_ninerec,
          "amazon_hllm": make_amazon_hllm, "sasrec_txt": make_sasrec_txt, "recbole": make_recbole}
# What items.tsv holds for item i4 in each format (title \t abstract as mapped in the docstring).
ITEM_LINE = {"pixelrec": "i4\tTitle, of i4\tabout i4", "microlens": "i4\tTitle, of i4",
             "ninerec": "i4\tTitle, of i4\t标题 i4", "amazon_hllm": "i4\tTitle, of i4\tabout i4",
             "sasrec_txt": "4", "recbole": "i4\tTitle, of i4\t1994 Drama Comedy"}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_each_format_converts_to_the_expected_sequences(fmt, tmp_path):
    MAKERS[fmt](tmp_path / "src")
    convert(fmt, tmp_path / "src", tmp_path / "out", allow_missing_images=True, max_seq_len=3)
    users, items = lines(tmp_path / "out" / "users.tsv"), lines(tmp_path / "out" / "items.tsv")
    if fmt == "sasrec_txt":          # integer names; users first seen in the time-ordered file
        assert users == [f"{u[1:]}\t{EXPECTED[u].replace('i', '')}" for u in ("u3", "u1", "u2")]
        assert items == ["3", "5", "4", "1", "2", "6"]       # first seen in the file, no text
    else:
        assert users == [f"{u}\t{seq}" for u, seq in EXPECTED.items()]
        assert [line.split("\t")[0] for line in items] == ITEMS
    assert ITEM_LINE[fmt] in items
    names = sorted(os.listdir(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]                       # no temp folder left
    if fmt in ("pixelrec", "microlens", "ninerec"):
        assert names == ["CARD.md", "images.lmdb", "images.lmdb.missing.txt", "items.tsv", "users.tsv"]
        store = ImageStore(tmp_path / "out" / "images.lmdb")
        assert store.names() == sorted(COVERS) and len(store.meta["missing"]) == len(ITEMS) - 2
        assert store.get_bytes("i4") == (next((tmp_path / "src").rglob("i4.jpg"))).read_bytes()
        assert "with an image: 2 of 7 (28.6%)" in (tmp_path / "out" / "CARD.md").read_text()
    else:
        assert names == ["CARD.md", "items.tsv", "users.tsv"]


def test_microlens_pairs_tsv_gives_the_same_sequences(tmp_path):
    """MicroLens' other interaction file: user \\t items in time order (the position is the time)."""
    src = tmp_path / "src"
    make_microlens(src)
    (src / "MicroLens-toy_pairs.csv").unlink()
    (src / "MicroLens-toy_pairs.tsv").write_text("".join(f"{u}\t{seq}\n" for u, seq in EXPECTED.items()))
    convert("microlens", src, tmp_path / "out", no_images=True)
    assert lines(tmp_path / "out" / "users.tsv") == [f"{u}\t{seq}" for u, seq in EXPECTED.items()]
    assert not (tmp_path / "out" / "images.lmdb").exists()


def test_microlens_pairs_tsv_refuses_a_user_on_two_lines(tmp_path):
    """A line's positions are its times: a user's second line cannot be ordered against the first."""
    src = tmp_path / "src"
    make_microlens(src)
    (src / "MicroLens-toy_pairs.csv").unlink()
    path = src / "MicroLens-toy_pairs.tsv"
    path.write_text("u1\ti1 i2\nu2\ti3\nu1\ti4 i5\n")
    with pytest.raises(InputError, match=r"line 3: user 'u1' already has line 1; .*join the two lines"):
        convert("microlens", src, tmp_path / "out", no_images=True)
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("extra", [[], ["u9", "i1", "2.5"], ["u9", "i1", "99999999999999999999"]])
def test_timestamps_above_2_53_keep_their_order(extra, tmp_path):
    """Nanosecond epochs 1 apart (float64 merges them above 2**53), alone, next to a decimal
    (the column needs floats) and next to an integer beyond 64 bits."""
    ns = 1_700_000_000_000_000_000
    events = [("u1", "i3", ns + 3), ("u1", "i1", ns + 1), ("u1", "i2", ns + 2)]
    write_csv(tmp_path / "src" / "toy.inter", [["user_id:token", "item_id:token", "timestamp:float"]]
              + [list(event) for event in events] + ([extra] if extra else []), "\t")
    convert("recbole", tmp_path / "src", tmp_path / "out")
    assert lines(tmp_path / "out" / "users.tsv")[0] == "u1\ti1 i2 i3"


def test_recbole_user_file_sets_the_user_order(tmp_path):
    make_recbole(tmp_path / "src")
    write_csv(tmp_path / "src" / "toy.user", [["user_id:token", "age:token"], ["u3", 30], ["u0", 1],
                                              ["u1", 20], ["u2", 40]], "\t")
    convert("recbole", tmp_path / "src", tmp_path / "out")
    assert lines(tmp_path / "out" / "users.tsv") == [f"{u}\t{EXPECTED[u]}" for u in ("u3", "u1", "u2")]


def recbole_ml100k() -> Path:
    for folder in (REPO.parent / "shared" / "data" / "ml-100k", Path("/work/shared/data/ml-100k")):
        if (folder / "ml-100k.inter").is_file():
            return folder
    pytest.skip("RecBole's ml-100k atomic files (../shared/data/ml-100k) are not on this machine")


def test_recbole_ml100k_gives_the_committed_files(tmp_path):
    convert("recbole", recbole_ml100k(), tmp_path / "ml-100k")
    for name in ("users.tsv", "items.tsv", "CARD.md"):
        assert (tmp_path / "ml-100k" / name).read_bytes() == (REPO / "dataset" / "ml-100k" / name).read_bytes(), name


def run_main(script: Path, argv: list[str], capsys) -> tuple[int, str, str]:
    """What `python SCRIPT ARGV` does, in this process: (exit code, stdout, stderr)."""
    from morec.errors import run_cli
    main = runpy.run_path(str(script), run_name="imported")["main"]
    try:
        run_cli(main, argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_ml100k_convert_script_rewrites_the_same_files(tmp_path, capsys):
    code, out, err = run_main(REPO / "dataset" / "ml-100k" / "convert.py",
                              ["--src", str(recbole_ml100k()), "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "wrote 943 users and 1682 items" in out, err
    assert sorted(os.listdir(tmp_path / "out")) == ["CARD.md", "items.tsv", "users.tsv"]
    assert (tmp_path / "out" / "users.tsv").read_bytes() == (REPO / "dataset" / "ml-100k" / "users.tsv").read_bytes()


def test_converted_data_trains_one_epoch_with_the_id_tower(tmp_path, capsys):
    make_recbole(tmp_path / "src")
    convert("recbole", tmp_path / "src", tmp_path / "data" / "toy")
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--root_data_dir", str(tmp_path / "data"),
                                  "--dataset", "toy", "--epoch", "1", "--batch_size", "2", "--device", "cpu",
                                  "--runs_dir", str(tmp_path / "runs"), "--label", "toy", capsys=capsys)
    assert code == 0, err
    metrics = [json.loads(line) for line in lines(tmp_path / "runs" / "toy" / "metrics.jsonl")]
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1


def test_converted_covers_train_one_epoch_with_a_tiny_resnet(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "pretrained_models"))
    import make_tiny
    make_tiny.make_tiny_resnet(tmp_path / "encoders" / "tiny_resnet18", "resnet18")
    make_pixelrec(tmp_path / "src")
    write_covers(tmp_path / "all_covers", ITEMS)
    convert("pixelrec", tmp_path / "src", tmp_path / "data" / "toy", images=tmp_path / "all_covers")
    from morec.launch import main
    script = REPO / "inbatch_sasrec_e2e_vision" / "train_resnet50.py"
    params = runpy.run_path(str(script), run_name="params_only")["params"]
    main(params, "train", str(script), [
        "--root_data_dir", str(tmp_path / "data"), "--dataset", "toy", "--image_lmdb", "images.lmdb",
        "--pretrained_dir", str(tmp_path / "encoders"), "--cv_model_load", "tiny_resnet18",
        "--image_size", "32", "--epoch", "1", "--batch_size", "2", "--embedding_dim", "16", "--device", "cpu",
        "--runs_dir", str(tmp_path / "runs"), "--label", "toy"])
    assert len(lines(tmp_path / "runs" / "toy" / "metrics.jsonl")) == 1


# ----------------------------------------------------------------------------- bad input

def drop_timestamp(src: Path) -> Path:
    path = src / "pixelrec_interaction" / "Pixel_toy.csv"
    write_csv(path, [["item_id", "user_id"]] + [[i, u] for u, i, _ in EVENTS])
    return path


def unknown_item(src: Path) -> Path:
    path = src / "toy.inter"
    rows = list(csv.reader(open(path, encoding="utf-8"), delimiter="\t"))
    rows[5][1] = "zz"
    write_csv(path, rows, "\t")
    return path


def bad_timestamp(src: Path) -> Path:
    path = src / "dataset" / "toy.csv"
    text = path.read_text().replace("u1,30", "u1,yesterday")
    path.write_text(text)
    return path


def duplicate_item(src: Path) -> Path:
    path = src / "Toy_item.csv"
    with open(path, "a", encoding="utf-8") as f:
        f.write("i2,again,again\n")
    return path


def space_in_name(src: Path) -> Path:
    path = src / "toy.txt"
    path.write_text(path.read_text().replace("3 5\n", "3 5 x\n", 1))
    return path


def extra_field_first(src: Path) -> Path:
    path = src / "toy.txt"
    path.write_text(path.read_text().replace("3 3\n", "3 3 x\n", 1))
    return path


def unreadable_cover(src: Path) -> Path:
    path = src / "covers" / "i4.jpg"
    path.write_bytes(b"not a jpeg")
    return path


BAD = {  # case: (format, break the fixture -> the named file, fragments of the message)
    "missing column": ("pixelrec", drop_timestamp, ["line 1: no timestamp column"]),
    "unknown item": ("recbole", unknown_item, ["line 6: item 'zz' is not in the item file"]),
    "timestamp not a number": ("amazon_hllm", bad_timestamp, ["line 4: timestamp 'yesterday' is not a number"]),
    "item listed twice": ("ninerec", duplicate_item, ["line 8: item 'i2' already listed on line 3"]),
    "extra column": ("sasrec_txt", space_in_name, ["line 2", "Expected 2 fields"]),
    "extra column on the first line": ("sasrec_txt", extra_field_first, ["line 1: more than 2 columns"]),
    "unreadable image": ("microlens", unreadable_cover, ["is not a readable image"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_naming_file_and_line_and_writes_nothing(case, tmp_path):
    fmt, damage, fragments = BAD[case]
    MAKERS[fmt](tmp_path / "src")
    path = damage(tmp_path / "src")
    with pytest.raises(InputError) as err:
        convert(fmt, tmp_path / "src", tmp_path / "out", allow_missing_images=True)
    for fragment in [str(path)] + fragments:
        assert fragment in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["src"]                      # no DST, no temp folder


def test_missing_covers_are_refused_unless_allowed(tmp_path):
    make_ninerec(tmp_path / "src")
    with pytest.raises(InputError, match=r"5 of 7 items have no image in .*Toy_cover \(first: i2, i3, i5\)"):
        convert("ninerec", tmp_path / "src", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_existing_destination_is_refused(tmp_path):
    make_recbole(tmp_path / "src")
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="already exists"):
        convert("recbole", tmp_path / "src", tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_script_prints_error_and_exits_2(tmp_path, capsys):
    make_microlens(tmp_path / "src")
    (tmp_path / "src" / "covers" / "i1.jpg").unlink()
    code, _, err = run_main(REPO / "scripts" / "convert_dataset.py",
                            ["--from", "microlens", str(tmp_path / "src"), str(tmp_path / "out")], capsys)
    assert code == 2 and err.startswith("error: 6 of 7 items have no image"), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert sorted(READERS) == sorted(MAKERS)                        # every format has a fixture


# ----------------------------------------------------------------------------- the card

def test_gini_and_top_share_on_known_counts():
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)        # (2*4 - 4 - 1) * 10 / (4 * 10)
    assert gini(np.array([1, 2, 3])) == pytest.approx((-2 * 1 + 0 * 2 + 2 * 3) / (3 * 6))
    counts = np.arange(1, 201)                                           # 200 items: the top 1% is 2 items
    assert top_share(counts) == pytest.approx((200 + 199) / counts.sum())
    assert top_share(np.array([3, 1])) == pytest.approx(0.75)           # at least one item


def test_card_numbers_on_the_hand_made_set(tmp_path):
    make_recbole(tmp_path / "src")
    convert("recbole", tmp_path / "src", tmp_path / "toy")
    card = describe(tmp_path / "toy", max_seq_len=2, min_seq_len=5)      # cut to the last 5 items
    assert (card.raw.users, card.raw.items, card.raw.interactions) == (3, 7, 16)
    assert card.raw.item_counts.tolist() == [3, 3, 3, 3, 3, 1, 0]      # file order i4 i1 i2 i3 i5 i6 i7
    assert card.kept.lengths.tolist() == [5, 5, 5]                     # u1 loses its first item, i1
    assert card.kept.items == 6 and card.kept.item_counts.tolist() == [3, 2, 3, 3, 3, 1]
    assert (card.with_title, card.with_abstract, card.with_image) == (7, 7, None)
    assert (card.duplicate_items, card.duplicate_titles) == (0, 0)
    text = write_card(tmp_path / "toy", max_seq_len=2, min_seq_len=5)
    assert "| interactions | 16 | 15 |" in text and "| density | 76.190% | 83.333% |" in text
    assert "| before the cut | 5 | 5 | 5 | 5.5 | 5.8 | 6 | 6 | 5.3 |" in text
    assert (tmp_path / "toy" / "CARD.md").read_text() == text


def test_card_counts_lower_cased_duplicate_titles(tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    (folder / "items.tsv").write_text("a\tStar Wars\nb\tstar wars\nc\tAlien\nd\tAlien\ne\tHeat\nf\n")
    (folder / "users.tsv").write_text("u\ta b c\n")
    card = describe(folder)
    assert (card.duplicate_items, card.duplicate_titles, card.with_title) == (4, 2, 5)
    assert card.kept is None and "No user has min_seq_len = 5 items" in write_card(folder)


def test_committed_ml100k_card_is_current(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    import describe_dataset
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name in ("users.tsv", "items.tsv"):
        (folder / name).symlink_to(REPO / "dataset" / "ml-100k" / name)
    describe_dataset.main([str(folder)])
    assert capsys.readouterr().out == (REPO / "dataset" / "ml-100k" / "CARD.md").read_text(encoding="utf-8")


def test_committed_amazon_scientific_card_and_terms_note_are_current(tmp_path, capsys):
    """The shipped Amazon Scientific folder: its card is what describe_dataset writes, and the
    source's terms note (which a copy must ship) is kept word for word."""
    sys.path.insert(0, str(REPO / "scripts"))
    import describe_dataset
    shipped = REPO / "dataset" / "amazon-scientific"
    folder = tmp_path / "amazon-scientific"
    folder.mkdir()
    for name in ("users.tsv", "items.tsv"):
        (folder / name).symlink_to(shipped / name)
    describe_dataset.main([str(folder)])
    card = capsys.readouterr().out
    assert card == (shipped / "CARD.md").read_text(encoding="utf-8")
    assert "valid 723 of 12,076 (6.0%); test 621 of 12,076 (5.1%)" in card
    readme = (shipped / "README.md").read_text(encoding="utf-8")
    assert "A project that ships a copy must ship\nthis note beside it." in readme
    assert "python inbatch_sasrec_e2e_text/train_id.py --dataset amazon-scientific" in readme
