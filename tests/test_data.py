"""SPEC "Data" on hand-made files whose right answer is known, and the bad-input errors."""
import numpy as np
import pytest
import torch

from conftest import write_dataset
from morec.data import load_sequence_data, pad_left, sample_negatives
from morec.data.batches import PairBatches, SequenceBatches
from morec.errors import InputError


def load(root, L=3, min_len=5, name="tiny"):
    return load_sequence_data(root / name, "users.tsv", "items.tsv", L, min_len)


def test_filter_cut_reindex(tiny_root):
    data = load(tiny_root)
    assert data.user_names == ["u1", "u2", "u4"]                     # u3 (2 items) dropped
    # used items: i1 i2 i3 i4 i5 i6 i7 (i8 unused) -> ids 1..7 in file order
    assert [row.name for row in data.items[1:]] == ["i1", "i2", "i3", "i4", "i5", "i6", "i7"]
    assert data.items[0] is None and data.num_items == 7
    # u1 cut to its last L+3 = 6 items: i2..i7
    np.testing.assert_array_equal(data.full[0], [2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(data.full[1], [0, 3, 1, 3, 5, 6])  # left-padded


def test_reindex_drops_unused_items_keeping_file_order(tmp_path):
    items = ["a", "b", "c", "d", "e", "f", "g"]
    write_dataset(tmp_path / "d", items, ["x\tg e c a b", "y\tb c e g a"])
    data = load(tmp_path, L=2, name="d")
    assert [row.name for row in data.items[1:]] == ["a", "b", "c", "e", "g"]    # d, f unused
    np.testing.assert_array_equal(data.full, [[5, 4, 3, 1, 2], [2, 3, 4, 5, 1]])


def test_leave_one_out_split(tiny_root):
    data = load(tiny_root)                          # L = 3; u1 = i2..i7 -> ids 2..7
    np.testing.assert_array_equal(data.train[0], [2, 3, 4, 5])               # s[:-2]
    np.testing.assert_array_equal(data.split_input("valid")[0], [3, 4, 5])   # last L of s[:-2]
    assert data.split_target("valid")[0] == 6                                # s[-2]
    np.testing.assert_array_equal(data.split_input("test")[0], [4, 5, 6])    # last L of s[:-1]
    assert data.split_target("test")[0] == 7                                 # s[-1]
    np.testing.assert_array_equal(data.split_history("valid")[0], [2, 3, 4, 5])
    np.testing.assert_array_equal(data.split_history("test")[0], [2, 3, 4, 5, 6])
    # u2 = i3 i1 i3 i5 i6 (5 items): train i3 i1 i3, valid target i5, test target i6
    np.testing.assert_array_equal(data.train[1], [0, 3, 1, 3])
    np.testing.assert_array_equal(data.split_input("valid")[1], [3, 1, 3])
    np.testing.assert_array_equal(data.split_input("test")[1], [1, 3, 5])
    assert (data.split_target("valid")[1], data.split_target("test")[1]) == (5, 6)


def test_popularity_counts_train_parts_only(tiny_root):
    data = load(tiny_root)
    # train parts: u1 [2,3,4,5], u2 [3,1,3], u4 (i6 i5 i2 i1 i3 -> 6 5 2) [6,5,2]
    np.testing.assert_array_equal(data.train_counts(), [0, 1, 2, 3, 1, 2, 1, 0])
    p = data.popularity()
    assert p[0] == 1.0 and p[3] == pytest.approx(3 / 10) and p[7] == 0.0


def test_pad_left():
    out = pad_left([np.array([1, 2]), np.array([3]), np.array([], dtype=np.int64), np.array([4, 5, 6])], 3)
    np.testing.assert_array_equal(out, [[0, 1, 2], [0, 0, 3], [0, 0, 0], [4, 5, 6]])


def test_negatives_avoid_the_users_items():
    generator = torch.Generator().manual_seed(0)
    exclude = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    neg = sample_negatives(exclude, (2, 500), num_items=8, generator=generator)
    assert set(neg[0].tolist()) == {4, 5, 6, 7, 8} and set(neg[1].tolist()) == {1, 2, 3, 8}


def test_batches_cover_every_example_once(tiny_root):
    data = load(tiny_root)
    train = torch.from_numpy(data.train)
    seq_batches = list(SequenceBatches(train, 2, data.num_items, True).epoch(seed=1))
    seqs = torch.cat([b["seqs"] for b in seq_batches])
    assert sorted(map(tuple, seqs.tolist())) == sorted(map(tuple, data.train.tolist()))
    assert all(b["negatives"].shape == (len(b["seqs"]), 3) for b in seq_batches)
    pairs = PairBatches(train, 4, data.num_items, neg_num=2)
    got = sorted((u, i) for b in pairs.epoch(seed=1) for u, i in zip(b["users"].tolist(), b["items"].tolist()))
    want = sorted((u, int(i)) for u, row in enumerate(data.train) for i in row if i)
    assert got == want


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("users, message", [
    (["u1\ti1 i2 i3 i4 i5", "u2 i1 i2 i3"], "users.tsv, line 2: expected 'user_name\\titem item"),
    (["u1\ti1 i2 i3 i4 i5", "u2\t"], "line 2"),
    (["u1\ti1 i2 zz i4 i5"], "line 1: user 'u1' has item 'zz', which the items file lacks"),
    (["u1\ti1 i2"], "no user has at least min_seq_len=5 items"),
])
def test_bad_users_file(tmp_path, users, message):
    write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)], users)
    with pytest.raises(InputError, match=None) as err:
        load(tmp_path, name="d")
    assert message in str(err.value) and "users.tsv" in str(err.value)


@pytest.mark.parametrize("items, message", [
    (["i1", "i2", "i1"], "line 3: item 'i1' already defined on line 1"),
    (["i1", "", "i2"], "line 2: empty item name"),
])
def test_bad_items_file(tmp_path, items, message):
    write_dataset(tmp_path / "d", items, ["u\ti1 i2 i1 i2 i1"])
    with pytest.raises(InputError) as err:
        load(tmp_path, name="d")
    assert message in str(err.value) and "items.tsv" in str(err.value)


def test_non_utf8_and_missing_files(tmp_path):
    folder = write_dataset(tmp_path / "d", ["i1", "i2"], ["u\ti1 i2 i1 i2 i1"])
    (folder / "users.tsv").write_bytes(b"u\ti1 i2 i1 i2 i1\nv\ti1 \xff\n")
    with pytest.raises(InputError, match=r"users.tsv, line 2: not UTF-8"):
        load(tmp_path, name="d")
    with pytest.raises(InputError, match=r"items file .*nowhere.* not found"):
        load(tmp_path, name="nowhere")


# ------------------------------------------------------------------------------ line ends and separators

USERS_3 = ["u1\ti1 i2 i3 i4 i5", "u2\ti5 i4 i3 i2 i1", "u3\ti2 i3 i4 i5 i1"]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["unix", "windows", "old-mac"])
def test_every_line_end_reads_the_same_users(tmp_path, newline):
    folder = write_dataset(tmp_path / "d", [f"i{k}\ttitle {k}" for k in range(1, 6)], [])
    (folder / "users.tsv").write_bytes(newline.join(USERS_3).encode() + newline.encode())
    (folder / "items.tsv").write_bytes(newline.join(f"i{k}\ttitle {k}" for k in range(1, 6)).encode())
    data = load(tmp_path, L=3, name="d")
    assert data.user_names == ["u1", "u2", "u3"]
    assert [row.title for row in data.items[1:]] == [f"title {k}" for k in range(1, 6)]
    np.testing.assert_array_equal(data.full[1], [0, 5, 4, 3, 2, 1])


@pytest.mark.parametrize("line, shown", [
    ("u2\ti1 i2\ti3 i4 i5", "'\\t'"),             # a tab inside the item list
    ("u2\ti1 i2\u00a0i3 i4 i5", "'\\xa0'"),       # a no-break space
    ("u2\ti1 i2 i3 i4 i5\x0c", "'\\x0c'"),        # a form feed
])
def test_other_whitespace_in_a_users_line_is_an_error(tmp_path, line, shown):
    write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)], [USERS_3[0], line])
    with pytest.raises(InputError) as err:
        load(tmp_path, name="d")
    assert "users.tsv, line 2: unexpected whitespace " + shown in str(err.value)


def test_item_name_with_whitespace_is_an_error(tmp_path):
    write_dataset(tmp_path / "d", ["i1", "i\u00a02", "i3"], ["u\ti1 i3 i1 i3 i1"])
    with pytest.raises(InputError, match=r"items.tsv, line 2: item name 'i\\xa02' holds whitespace"):
        load(tmp_path, name="d")


def test_byte_order_mark_is_dropped(tmp_path):
    folder = write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)], USERS_3)
    for name in ("items.tsv", "users.tsv"):
        (folder / name).write_bytes(b"\xef\xbb\xbf" + (folder / name).read_bytes())
    data = load(tmp_path, name="d")
    assert data.user_names == ["u1", "u2", "u3"] and data.items[1].name == "i1"


def test_trailing_blank_lines_accepted_but_not_inner_ones(tmp_path):
    folder = write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)] + ["", ""], USERS_3 + ["", " "])
    assert load(tmp_path, name="d").user_names == ["u1", "u2", "u3"]
    (folder / "users.tsv").write_text("\n".join([USERS_3[0], "", *USERS_3[1:]]) + "\n\n")
    with pytest.raises(InputError, match=r"users.tsv, line 2: expected"):
        load(tmp_path, name="d")


def test_duplicate_user_names_both_lines(tmp_path):
    write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)], USERS_3 + ["u2\ti1 i1 i1 i1 i1"])
    with pytest.raises(InputError, match=r"users.tsv, line 4: user 'u2' already has line 2"):
        load(tmp_path, name="d")


def test_directory_as_data_file_is_named_as_such(tmp_path):
    folder = write_dataset(tmp_path / "d", [f"i{k}" for k in range(1, 6)], USERS_3)
    (folder / "users.tsv").unlink()
    (folder / "users.tsv").mkdir()
    with pytest.raises(InputError, match=r"users file .*users.tsv is a directory"):
        load(tmp_path, name="d")
