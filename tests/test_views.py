"""The paper's views (SPEC "Evaluation"): the warm-item filter and the cold-start metrics, on
hand-made cases whose right answer was worked out by hand (see the comments)."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import REPO, run_in_process, write_dataset
from morec.data import load_sequence_data
from morec.evaluate import cold_start_view, metrics_from_ranks
from morec.errors import InputError

# L = 2: each sequence is cut to its last L+3 = 5 items; the train part is the first 3 of them.
# min_seq_len = 4, warm_min_count = 2.
WARM_USERS = [
    "u1\tx a b c a b",      # window a b c a b        train a b c
    "u2\ta b a c d b",      # window b a c d b        train b a c
    "u3\tc a b d c a",      # window a b d c a        train a b d
    "u4\td e a b",          # window d e a b          train d e
    "u5\ta b c",            # 3 < min_seq_len: dropped before anything else
]
# Pass 0, uncut train parts (whole history minus its last two): x 1, a 4, b 3, c 3, d 2, e 1
#   -> remove x and e; u4 = d a b (3 items) is dropped.
# Pass 1, cut windows: a 3, b 3, c 2, d 1 (u3 only) -> remove d. u2 = a b a c b: its window moves
#   back to take in its first a (train a b a); u3 = c a b c a (train c a b).
# Pass 2: a 1+2+1 = 4, b 3, c 1+0+1 = 2 -> nothing below 2: done.
# Counting once on the first windows would have kept d, which ends with one train interaction.

# L = 1: windows of 4, train part = their first 2; min_seq_len = 3, warm_min_count = 2.
# Items file order f g c d q.
GRADUAL_USERS = [
    "v1\tq f g c",          # train q f
    "v2\tq f g d c",        # window f g d c: train f g (q just outside)
    "v3\tc c d d f g f g",  # window f g f g: train f g (c, d only in the old history)
    "v4\tf g f g",          # train f g
]
# Pass 0 (uncut train parts): q 2, f 4, g 3, c 2, d 2: nothing removed.
# Pass 1: q 1, f 4, g 3, c 0, d 0 -> below: c, d, q; remove the lowest tenth (one item): c (0, first
#   in file order). v1 = q f g (train q), v2 = q f g d (train q f): q rises to 2.
# Pass 2: q 2, f 3, g 2, d 0 -> remove d. v2 = q f g (train q), v3 = f g f g.
# Pass 3: q 2, f 2, g 2: done. Removing every item below 2 in pass 1 would have lost q.


def load_warm(root, warm, L=2, min_len=4):
    return load_sequence_data(root / "w", "users.tsv", "items.tsv", L, min_len, warm)


@pytest.fixture
def warm_root(tmp_path):
    write_dataset(tmp_path / "w", ["a", "b", "c", "d", "e", "x", "y"], WARM_USERS)
    return tmp_path


def test_warm_filter_keeps_exactly_the_warm_items(warm_root):
    data = load_warm(warm_root, 2)
    assert data.user_names == ["u1", "u2", "u3"]
    assert [row.name for row in data.items[1:]] == ["a", "b", "c"]          # a=1 b=2 c=3
    np.testing.assert_array_equal(data.full, [[1, 2, 3, 1, 2],             # a b c a b
                                              [1, 2, 1, 3, 2],             # a b a c b
                                              [3, 1, 2, 3, 1]])            # c a b c a
    np.testing.assert_array_equal(data.train_counts(), [0, 4, 3, 2])
    assert data.split_target("valid").tolist() == [1, 3, 3] and data.split_target("test").tolist() == [2, 2, 1]


def test_warm_filter_removes_the_coldest_items_first(tmp_path):
    write_dataset(tmp_path / "g", ["f", "g", "c", "d", "q"], GRADUAL_USERS)
    data = load_sequence_data(tmp_path / "g", "users.tsv", "items.tsv", 1, 3, 2)
    assert data.user_names == ["v1", "v2", "v3", "v4"]
    assert [row.name for row in data.items[1:]] == ["f", "g", "q"]          # f=1 g=2 q=3
    np.testing.assert_array_equal(data.full, [[0, 3, 1, 2], [0, 3, 1, 2], [1, 2, 1, 2], [1, 2, 1, 2]])
    np.testing.assert_array_equal(data.train_counts(), [0, 2, 2, 2])


def test_warm_filter_off_is_the_plain_protocol(warm_root):
    plain = load_warm(warm_root, 0)
    assert plain.user_names == ["u1", "u2", "u3", "u4"]
    assert [row.name for row in plain.items[1:]] == ["a", "b", "c", "d", "e"]  # x cut away, y unused
    np.testing.assert_array_equal(plain.full[3], [0, 4, 5, 1, 2])


def test_warm_filter_of_one_drops_items_seen_only_outside_the_windows(warm_root):
    # pass 0 keeps all; pass 1: x 0 (outside u1's window) -> removed; u1's window is unchanged
    data = load_warm(warm_root, 1)
    assert [row.name for row in data.items[1:]] == ["a", "b", "c", "d", "e"]
    assert data.train_counts()[1:].min() >= 1


def test_warm_filter_errors(warm_root):
    with pytest.raises(InputError, match="no item has at least warm_min_count=9"):
        load_warm(warm_root, 9)
    with pytest.raises(InputError, match="warm_min_count must be >= 0"):
        load_warm(warm_root, -1)


@pytest.mark.parametrize("warm", [20, 50, 200])
def test_warm_settings_on_ml100k(warm):
    data = load_sequence_data(REPO / "dataset" / "ml-100k", "users.tsv", "items.tsv", 20, 5, warm)
    counts = data.train_counts()[1:]
    assert counts.min() >= warm and data.num_items < 1409
    assert (data.full[:, -5:] > 0).all()                         # every user still has >= 5 items


# ------------------------------------------------------------------------------ cold start

def test_cold_start_view_known_answer():
    # items 1..4; train counts: item 1 unseen, item 2 once, items 3 and 4 often
    counts = np.array([0, 0, 1, 7, 9])
    targets = torch.tensor([1, 3, 2, 1, 4, 2])
    ranks = torch.tensor([1, 2, 3, 20, 1, 12])
    view = cold_start_view(ranks, counts, targets, below=1)           # targets 1: users 0 and 3
    assert view["users"] == 2
    assert view["metrics"]["HR@10"] == pytest.approx(0.5)               # ranks 1 and 20
    assert view["metrics"]["NDCG@10"] == pytest.approx(0.5)             # (1/log2(2) + 0) / 2
    assert view["metrics"]["HR@20"] == pytest.approx(1.0)
    assert view["metrics"]["NDCG@20"] == pytest.approx((1 + 1 / math.log2(21)) / 2)
    view2 = cold_start_view(ranks, counts, targets, below=2)          # also item 2: users 2 and 5
    assert view2["users"] == 4
    assert view2["metrics"]["HR@10"] == pytest.approx(2 / 4)            # ranks 1, 3, 20, 12
    assert view2["metrics"]["NDCG@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert view2["metrics"] == metrics_from_ranks(torch.tensor([1, 3, 20, 12]))
    assert cold_start_view(ranks, counts, targets, below=0) == {"below": 0, "users": 0, "metrics": None}


def test_test_script_reports_the_cold_start_view_and_warm_runs(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    args = ["--epoch", "1", "--runs_dir", runs, "--label", "w", "--max_seq_len", "5", "--embedding_dim", "16",
            "--warm_min_count", "20"]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", "--runs_dir", runs, "--label", "w",
                                    "--cold_start_count", "30", capsys=capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("test HR@10 ") and lines[-2].startswith("cold-start view (test targets with < 30")
    result = json.loads((tmp_path / "runs" / "w" / "test_metrics.json").read_text())
    assert result["cold_start"]["below"] == 30 and 0 < result["cold_start"]["users"] < result["num_users"]
    config = json.loads((tmp_path / "runs" / "w" / "config.json").read_text())
    assert config["warm_min_count"] == 20


def test_a_catalogue_smaller_than_the_metrics_cut_off_is_warned_about(caplog):
    """Amazon Scientific's sparse users leave 7 items at warm_min_count 20: HR@10 then ranks every
    item, and the run says so (a warning, not a refusal: hand-made test sets are tiny on purpose)."""
    import logging
    from morec.parts import warn_if_few_items
    with caplog.at_level(logging.WARNING, logger="morec"):
        warn_if_few_items(7, 90, 20)
        warn_if_few_items(1409, 943, 0)
    (record,) = caplog.records
    assert "only 7 items (and 90 users) are left after --warm_min_count 20" in record.getMessage()
