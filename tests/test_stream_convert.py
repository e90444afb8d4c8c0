"""The streaming converter (morec/tools/stream_convert.py, stream_formats.py) on the formats beyond
pixelrec (whose cases are in test_prepared.py): each variant of a format's layout and each bad
input gives what the in-memory converter gives, byte for byte or message for message. The inputs
are test_convert's hand-made copies (MAKERS), edited one way per case."""
from __future__ import annotations

import csv
import logging
import os
import re

import pytest

from morec.errors import InputError
from morec.tools.stream_convert import stream_convert
from test_convert import BAD, EVENTS, EXPECTED, MAKERS, write_csv
from test_prepared import both_converters


def edit(path, old, new, count=1):
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def insert_line(path, k, line):
    """`line` becomes line k + 1 of the file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    path.write_text("\n".join(lines[:k] + [line] + lines[k:]), encoding="utf-8")


def pairs_tsv(src, text):
    """MicroLens' other interaction file in place of the pairs csv."""
    (src / "MicroLens-toy_pairs.csv").unlink()
    (src / "MicroLens-toy_pairs.tsv").write_text(text, encoding="utf-8")


PAIRS = "".join(f"{u}\t{seq}\n" for u, seq in EXPECTED.items())


def recbole_drop_column(src, k):
    path = src / "toy.inter"
    rows = list(csv.reader(open(path, encoding="utf-8"), delimiter="\t"))
    write_csv(path, [row[:k] + row[k + 1:] for row in rows], "\t")


def recbole_users(src, names):
    write_csv(src / "toy.user", [["user_id:token", "age:token"]] + [[name, 30] for name in names], "\t")


FILE = {"microlens": "MicroLens-toy_pairs.csv", "ninerec": "Toy_pair.csv", "sasrec_txt": "toy.txt", "recbole": "toy.inter"}
ITEM_FILE = {"microlens": "MicroLens-toy_title_en.csv", "ninerec": "Toy_item.csv", "recbole": "toy.item"}
CASES = {  # (format, case): (edit of the hand-made copy, the outcome: "files" or "error")
    ("microlens", "pairs tsv"): (lambda src: pairs_tsv(src, PAIRS), "files"),
    ("microlens", "pairs tsv, a header row, blank lines"): (
        lambda src: pairs_tsv(src, "\nuser_id\titem_id\n" + PAIRS.replace("\n", "\n \t\n", 1)), "files"),
    ("microlens", "pairs tsv, a user on two lines"): (lambda src: pairs_tsv(src, PAIRS + "u2\ti6\n"), "error"),
    ("microlens", "pairs tsv, three fields"): (lambda src: pairs_tsv(src, PAIRS + "u4\ti6\ti7\n"), "error"),
    ("microlens", "pairs tsv, an unknown item"): (lambda src: pairs_tsv(src, PAIRS.replace("i4", "i9", 1)), "error"),
    ("microlens", "pairs tsv, no user lines"): (lambda src: pairs_tsv(src, "user\titem\n\n"), "error"),
    ("microlens", "blank inner line"): (lambda src: insert_line(src / FILE["microlens"], 3, ""), "error"),
    ("microlens", "timestamp not a number"): (lambda src: edit(src / FILE["microlens"], "u1,i2,30", "u1,i2,soon"), "error"),
    ("microlens", "NaN timestamp"): (lambda src: edit(src / FILE["microlens"], "u1,i2,30", "u1,i2,nan"), "error"),
    ("microlens", "unknown item"): (lambda src: edit(src / FILE["microlens"], "u3,i4,7", "u3,i9,7"), "error"),
    ("microlens", "title listed twice"): (lambda src: edit(src / ITEM_FILE["microlens"], "i6,", "i2,again\ni6,"), "error"),
    ("microlens", "title csv with a header row"): (lambda src: insert_line(src / ITEM_FILE["microlens"], 0, "item_id,title"), "files"),
    ("microlens", "userID / videoID header"): (lambda src: edit(src / FILE["microlens"], "user,item,", "userID,videoID,"), "files"),
    ("microlens", "no timestamp column"): (lambda src: edit(src / FILE["microlens"], "timestamp", "time"), "error"),
    ("amazon_hllm", "process_books.py's flat layout"): (lambda src: (
        (src / "dataset" / "toy.csv").rename(src / "books.csv"), (src / "information" / "toy.csv").rename(src / "books_item.csv"),
        (src / "dataset").rmdir()), "files"),
    ("ninerec", "a header line"): (lambda src: insert_line(src / FILE["ninerec"], 0, "video_id,user_id,timestamp"), "files"),
    ("ninerec", "only a header line"): (lambda src: (src / FILE["ninerec"]).write_text("video_id,user_id,timestamp\n\n"), "error"),
    ("ninerec", "an item header row"): (lambda src: insert_line(src / ITEM_FILE["ninerec"], 0, "video_id,title,title_en"), "files"),
    ("ninerec", "float times"): (lambda src: edit(src / FILE["ninerec"], "u1,30", "u1,30.5"), "files"),
    ("ninerec", "empty user"): (lambda src: edit(src / FILE["ninerec"], "i4,u3,7", "i4,,7"), "error"),
    ("ninerec", "user with a space"): (lambda src: edit(src / FILE["ninerec"], "i4,u3,7", "i4,u 3,7"), "error"),
    ("ninerec", "a fourth column on the first line"): (lambda src: edit(src / FILE["ninerec"], "i3,u2,50", "i3,u2,50,x"), "error"),
    ("ninerec", "a fourth field inside"): (lambda src: edit(src / FILE["ninerec"], "i4,u3,7", "i4,u3,7,x"), "error"),
    ("microlens", "a fourth field inside"): (lambda src: edit(src / FILE["microlens"], "u3,i4,7", "u3,i4,7,"), "error"),
    ("ninerec", "two columns"): (lambda src: write_csv(src / FILE["ninerec"], [[i, u] for u, i, _ in EVENTS]), "error"),
    ("ninerec", "unknown item"): (lambda src: edit(src / FILE["ninerec"], "i4,u3,7", "i9,u3,7"), "error"),
    ("sasrec_txt", "a header line, spaces and tabs"): (
        lambda src: (insert_line(src / FILE["sasrec_txt"], 0, "user_id item_id"), edit(src / FILE["sasrec_txt"], "3 5\n", " 3 \t5 \n")), "files"),
    ("sasrec_txt", "trailing blank lines"): (lambda src: insert_line(src / FILE["sasrec_txt"], 17, "\n \t"), "files"),
    ("sasrec_txt", "blank inner line"): (lambda src: insert_line(src / FILE["sasrec_txt"], 3, "  "), "error"),
    ("sasrec_txt", "a line with one field"): (lambda src: edit(src / FILE["sasrec_txt"], "3 5\n", "3\n"), "error"),
    ("sasrec_txt", "one field on the first line"): (lambda src: edit(src / FILE["sasrec_txt"], "3 3\n", "3\n"), "error"),
    ("sasrec_txt", "blank first line"): (lambda src: insert_line(src / FILE["sasrec_txt"], 0, ""), "error"),
    ("sasrec_txt", "a vertical tab in a name"): (lambda src: edit(src / FILE["sasrec_txt"], "3 5\n", "3 5\x0b5\n"), "error"),
    ("recbole", "no timestamp: the file order"): (lambda src: recbole_drop_column(src, 3), "files"),
    ("recbole", "no item file: items first seen"): (lambda src: (src / "toy.item").unlink(), "files"),
    ("recbole", "a user file sets the order"): (lambda src: recbole_users(src, ["u3", "u0", "u1", "u2"]), "files"),
    ("recbole", "a user missing from the user file"): (lambda src: recbole_users(src, ["u3", "u1"]), "error"),
    ("recbole", "a user listed twice in the user file"): (lambda src: recbole_users(src, ["u3", "u1", "u2", "u1"]), "error"),
    ("recbole", "item listed twice"): (lambda src: edit(src / ITEM_FILE["recbole"], "i6\t", "i2\tagain\t1\tx\ni6\t"), "error"),
    ("recbole", "blank inner line"): (lambda src: insert_line(src / FILE["recbole"], 4, "\t\t\t"), "error"),
    ("recbole", "timestamp not a number"): (lambda src: edit(src / FILE["recbole"], "u1\ti2\t4\t30", "u1\ti2\t4\tthen"), "error"),
    ("recbole", "a fifth field"): (lambda src: edit(src / FILE["recbole"], "u1\ti2\t4\t30", "u1\ti2\t4\t30\tx"), "error"),
    ("recbole", "no user_id column"): (lambda src: edit(src / FILE["recbole"], "user_id:token", "uid:token"), "error"),
}


@pytest.mark.parametrize("case", sorted(CASES), ids=" / ".join)
def test_stream_converter_gives_what_convert_gives_on_each_layout_and_bad_input(case, tmp_path):
    fmt = case[0]
    change, outcome = CASES[case]
    MAKERS[fmt](tmp_path / "src")
    change(tmp_path / "src")
    old, new = both_converters(tmp_path / "src", tmp_path, fmt, no_images=fmt in ("microlens", "ninerec"))
    assert new == old
    assert new[0] == outcome, new
    if outcome == "error":
        assert sorted(os.listdir(tmp_path)) == ["src"]                      # no DST, no temp folder


def test_known_sequences_of_the_variants(tmp_path):
    """The right answers of three variants, worked out from EVENTS: a pairs tsv gives EXPECTED, a
    .inter without timestamps each user's items in file order, a .user file the user order."""
    for case, users in [(("microlens", "pairs tsv, a header row, blank lines"), EXPECTED),
                        (("recbole", "no timestamp: the file order"),
                         {u: " ".join(i for v, i, _ in EVENTS if v == u) for u in EXPECTED}),
                        (("recbole", "a user file sets the order"), {u: EXPECTED[u] for u in ("u3", "u1", "u2")})]:
        src = tmp_path / "_".join(case).replace(" ", "_").replace(",", "").replace(":", "")
        MAKERS[case[0]](src)
        CASES[case][0](src)
        stream_convert(case[0], src, src.with_name(src.name + "_out"), no_images=True)
        got = (src.with_name(src.name + "_out") / "users.tsv").read_text().splitlines()
        assert got == [f"{u}\t{seq}" for u, seq in users.items()], case


@pytest.mark.parametrize("case", sorted(BAD))
def test_stream_converter_refuses_test_converts_bad_inputs_alike(case, tmp_path):
    """test_convert's bad inputs (one per format): the same one error from both converters."""
    fmt, damage, fragments = BAD[case]
    MAKERS[fmt](tmp_path / "src")
    path = damage(tmp_path / "src")
    old, new = [(kind, re.sub(" at 0x[0-9a-f]+", "", text))                 # an unreadable image's message
                for kind, text in both_converters(tmp_path / "src", tmp_path, fmt, allow_missing_images=True)]
    assert new == old and new[0] == "error"
    assert all(fragment in new[1] for fragment in [str(path)] + fragments)


def test_header_rows_are_skipped_with_the_converters_warning(tmp_path, caplog):
    MAKERS["ninerec"](tmp_path / "src")
    CASES[("ninerec", "a header line")][0](tmp_path / "src")
    CASES[("ninerec", "an item header row")][0](tmp_path / "src")
    with caplog.at_level(logging.WARNING, logger="morec.tools.convert"):
        both_converters(tmp_path / "src", tmp_path, "ninerec", no_images=True)
    warnings = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(warnings) == 4 and warnings[:2] == warnings[2:]                # convert's two, then the stream's
    assert "'video_id user_id timestamp' is a header line" in warnings[0]


def test_sasrec_txt_with_a_quote_is_refused_under_stream(tmp_path):
    """pandas reads `"3 5"` as one quoted field; --stream splits at spaces only, so it refuses quotes."""
    MAKERS["sasrec_txt"](tmp_path / "src")
    edit(tmp_path / "src" / "toy.txt", "3 5\n", '"3" 5\n')
    with pytest.raises(InputError, match=r"toy.txt, line 2: a double quote.*convert this file without --stream"):
        stream_convert("sasrec_txt", tmp_path / "src", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_user_file_users_without_interactions_across_write_blocks(tmp_path, monkeypatch):
    """users.tsv is written USERS_PER_WRITE users at a time: a block of .user users without
    interactions (u0, u8) writes nothing, not an empty line."""
    import morec.tools.stream_convert as module
    monkeypatch.setattr(module, "USERS_PER_WRITE", 1)
    MAKERS["recbole"](tmp_path / "src")
    recbole_users(tmp_path / "src", ["u0", "u3", "u8", "u1", "u2"])
    old, new = both_converters(tmp_path / "src", tmp_path, "recbole")
    assert new == old and new[1].decode().splitlines() == [f"{u}\t{EXPECTED[u]}" for u in ("u3", "u1", "u2")]


INTERACTIONS = {**FILE, "pixelrec": "pixelrec_interaction/Pixel_toy.csv", "amazon_hllm": "dataset/toy.csv"}


@pytest.mark.parametrize("fmt", sorted(INTERACTIONS))
@pytest.mark.parametrize("where", [5, 40])                          # in the header (csv formats), in a record
def test_an_interaction_file_that_is_not_utf8_is_one_error_from_both(fmt, where, tmp_path):
    """The byte offsets in the two messages differ (pandas' decoder counts within its buffer)."""
    MAKERS[fmt](tmp_path / "src")
    path = tmp_path / "src" / INTERACTIONS[fmt]
    path.write_bytes(path.read_bytes()[:where] + b"\xff\xfe" + path.read_bytes()[where:])
    old, new = both_converters(tmp_path / "src", tmp_path, fmt, no_images=fmt in ("pixelrec", "microlens", "ninerec"))
    for kind, message in (old, new):
        assert kind == "error" and message.startswith(f"{path}: not UTF-8 (") and message.endswith("re-encode the file as UTF-8")
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("fmt", ["pixelrec", "amazon_hllm", "recbole"])
def test_an_extra_field_on_the_first_data_line_is_refused_not_shifted(fmt, tmp_path):
    """pandas' default reads a first data line longer than the header with its leading fields as an
    index, shifting user, item and time by one field (a numeric extra field converted silently);
    both converters refuse it, naming the line."""
    MAKERS[fmt](tmp_path / "src")
    path = tmp_path / "src" / INTERACTIONS[fmt]
    lines = path.read_text().splitlines(keepends=True)
    sep = "\t" if fmt == "recbole" else ","
    width = len(lines[0].rstrip("\n").split(sep))
    lines[1] = lines[1].rstrip("\n") + f"{sep}7\n"
    path.write_text("".join(lines))
    old, new = both_converters(tmp_path / "src", tmp_path, fmt, no_images=fmt == "pixelrec")
    expected = (f"{path}: Error tokenizing data. C error: Expected {width} fields in line 2, saw {width + 1}; "
                "each line must hold the same columns")
    assert old == new == ("error", expected)
