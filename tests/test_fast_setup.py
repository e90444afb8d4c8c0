"""The array reader of the users file (morec.data.files.read_user_ids) and the array build of the
split give the same data and the same errors as the line-by-line reference
(morec.data.sequences.line_by_line_sequence_data, the code they replace): on ml-100k,
amazon-scientific, a synthetic set and hand-made and random files, in one block or many."""
import sys

import numpy as np
import pytest

from conftest import REPO, write_dataset
from morec.data import files
from morec.data.files import _plain_user_ids, read_items, read_users
from morec.data.sequences import build_sequence_data, line_by_line_sequence_data, load_sequence_data
from morec.errors import InputError
from users_files import CASES, ITEMS, each_random_users_file, run_make_synthetic


def both(folder, L=3, min_len=5, warm=0):
    """The outcomes of the array reader and of the line-by-line reference."""
    return tuple(outcome(loader, folder, L, min_len, warm) for loader in (load_sequence_data, line_by_line_sequence_data))


def outcome(loader, folder, L=3, min_len=5, warm=0):
    """('data', items, user names, full) or ('error', message) of one loader on `folder`."""
    try:
        data = loader(folder, "users.tsv", "items.tsv", L, min_len, warm)
    except InputError as err:
        return ("error", str(err))
    return ("data", data.items, data.user_names, data.full.dtype, data.full.tolist())


def takes_fast_path(folder) -> bool:
    names = [row.name for row in read_items(folder / "items.tsv")]
    return _plain_user_ids((folder / "users.tsv").read_bytes(), names) is not None


@pytest.fixture
def small_blocks(monkeypatch):
    """The reader parses 64 bytes of whole lines at a time: many blocks, lines across their edges."""
    monkeypatch.setattr(files, "BLOCK_BYTES", 64)


def synthetic(folder):
    """A small synthetic data set (600 users, 300 items) written into `folder`."""
    run_make_synthetic("--preset", "small", "--users", "600", "--items", "300", "--out", str(folder))
    return folder


# ------------------------------------------------------------------------------ real data

@pytest.mark.parametrize("dataset, L, warm", [("ml-100k", 20, 0), ("ml-100k", 10, 20), ("ml-100k", 20, 200),
                                              ("amazon-scientific", 20, 0), ("amazon-scientific", 10, 5),
                                              ("synthetic", 20, 0)])
def test_same_data_as_the_line_by_line_reader(tmp_path, dataset, L, warm):
    folder = synthetic(tmp_path / "s") if dataset == "synthetic" else REPO / "dataset" / dataset
    assert takes_fast_path(folder)                          # not the fallback to the reference
    new, reference = both(folder, L, 5, warm)
    assert new[0] == "data" and len(new[2]) > 10 and len(new[1]) > 10
    assert new == reference


def test_many_blocks_same_data(small_blocks):
    folder = REPO / "dataset" / "ml-100k"
    assert takes_fast_path(folder)
    new, reference = both(folder, 20)
    assert new[0] == "data" and new == reference


def test_rows_read_line_by_line_build_the_same_data():
    """build_sequence_data from read_users' rows (the data set card's path) = from the arrays."""
    folder = REPO / "dataset" / "ml-100k"
    items, users = read_items(folder / "items.tsv"), read_users(folder / "users.tsv")
    rows = build_sequence_data(items, users, 20, 5)
    arrays = load_sequence_data(folder, "users.tsv", "items.tsv", 20, 5)
    assert rows.items == arrays.items and rows.user_names == arrays.user_names
    np.testing.assert_array_equal(rows.full, arrays.full)


def test_data_identity_of_ml100k_unchanged():
    """A run's recorded data identity (item-id mapping included) is the reference reader's."""
    from morec.config import Config
    from morec.data.identity import data_identity
    from morec.resolve import data_spec
    cfg = Config(root_data_dir=str(REPO / "dataset"), dataset="ml-100k")
    folder = REPO / "dataset" / "ml-100k"
    new = data_identity(data_spec(cfg), load_sequence_data(folder, "users.tsv", "items.tsv", 20, 5))
    old = data_identity(data_spec(cfg), line_by_line_sequence_data(folder, "users.tsv", "items.tsv", 20, 5))
    assert new == old and new["item_ids"]["count"] == 1409


# ------------------------------------------------------------------------------ hand-made files

@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("blocks", ["one block", "many blocks"])
def test_hand_made_users_files_read_as_the_reference_reads_them(tmp_path, monkeypatch, name, blocks):
    if blocks == "many blocks":
        monkeypatch.setattr(files, "BLOCK_BYTES", 8)
    folder = write_dataset(tmp_path / "d", ITEMS, CASES[name])
    new, reference = both(tmp_path / "d", L=2)
    assert new == reference
    if name in ("plain", "spaces around", "unicode names", "trailing blank lines"):
        assert new[0] == "data" and takes_fast_path(folder)
    if name in ("missing tab", "two tabs", "duplicate user", "no-break space", "form feed", "prefix of an item"):
        assert new[0] == "error" and "users.tsv, line 2" in new[1]


@pytest.mark.parametrize("encode", [
    lambda text: text.replace("\n", "\r\n").encode(),
    lambda text: text.replace("\n", "\r").encode(),
    lambda text: b"\xef\xbb\xbf" + text.encode(),
    lambda text: text.encode() + b"\xff",                                # not UTF-8 on the last line
    lambda text: text.rstrip("\n").encode(),                             # no final line end
    lambda text: text.replace("\n", "\r\r\n").encode(),                  # \r, then \r\n: blank lines
], ids=["crlf", "cr", "bom", "not-utf8", "no-final-newline", "cr-crlf"])
def test_line_ends_bom_and_encoding_as_the_reference(tmp_path, encode):
    folder = write_dataset(tmp_path / "d", ITEMS, [])
    (folder / "users.tsv").write_bytes(encode("".join(line + "\n" for line in CASES["plain"])))
    new, reference = both(folder, L=2)
    assert new == reference


def test_an_item_name_ending_in_nul_is_not_a_shorter_token(tmp_path):
    """Names are NUL-padded into words: 'a\\0' must not take the token 'a' (the reference: unknown item)."""
    write_dataset(tmp_path / "d", ["b", "a\x00", "c"], ["u\tb a c b c"])
    new, reference = both(tmp_path / "d", L=2)
    assert new == reference and new[0] == "error" and "has item 'a', which the items file lacks" in new[1]


def test_unicode_whitespace_set_is_pythons():
    """The plain reader refuses exactly the characters str.isspace() calls whitespace (beyond
    space, tab and \\n, which it parses): other ASCII whitespace is outside PLAIN_BYTES; the
    regex `\\s` of read_items is str.isspace()."""
    above_ascii = {chr(c) for c in range(0x80, sys.maxunicode + 1) if chr(c).isspace()}
    assert {c for c in above_ascii if files.UNICODE_SPACE.match(c)} == above_ascii
    assert not any(files.UNICODE_SPACE.match(chr(c)) for c in range(0x80, 0x3001) if not chr(c).isspace())
    plain_space = {chr(b) for b in files.PLAIN_BYTES if chr(b).isspace()}
    assert plain_space == {" ", "\t", "\n"}
    every = (chr(c) for c in range(sys.maxunicode + 1))
    assert all(bool(files.WHITESPACE.match(c)) == c.isspace() for c in every)     # read_items' name check


# ------------------------------------------------------------------------------ random files

def test_random_users_files_read_as_the_reference_reads_them(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "d", ITEMS, [])
    kinds = set()
    for case, text in each_random_users_file(folder, seed=20261207, cases=400):
        monkeypatch.setattr(files, "BLOCK_BYTES", [8, 64, 1 << 23][case % 3])
        new, reference = both(folder, L=2, min_len=3)
        assert new == reference, text
        kinds.add(new[0])
    assert kinds == {"data", "error"}
