"""The most-popular baseline on a hand-made data set whose ranks are worked out by hand."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_dataset

from morec.config import Config
from morec.parts import load_data

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "popularity_baseline.py"
sys.path.insert(0, str(SCRIPT.parent))
from popularity_baseline import popularity_metrics  # noqa: E402

# min_seq_len 3, L = 5 (nothing is cut). u6 is too short and dropped; item f is unused.
USERS = ["u1\ta a b c d", "u2\tb a c e", "u3\ta b d c", "u4\te a b", "u5\ta b c b", "u6\ta b"]
ITEMS = ["a", "b", "c", "d", "e", "f"]
# Train parts s[:-2]: a a b | b a | a b | e | a b  ->  counts a 5, b 4, e 1, c 0, d 0.
# valid (history = train part): u1 c -> e higher, d tied: rank 2 or 3; u2 c: 2 or 3 (d tied);
#                               u3 d: 2 or 3 (c tied); u4 a: 1; u5 c: 2 or 3 (d tied)
# test (history = s[:-1]): u1 d: 2; u2 e: 1; u3 c: 2; u4 b (a masked): 1;
#                          u5 b, also in its history: a repeat target, removed with it (a miss: ())
# Ties are broken uniformly at random in expectation (SPEC "Evaluation"): a user's NDCG is the mean
# over its possible ranks.
VALID_RANKS, TEST_RANKS = [(2, 3), (2, 3), (2, 3), (1,), (2, 3)], [(2,), (1,), (2,), (1,), ()]
# --repeat_targets rank (no history removed; a 5, b 4, e 1, c = d = 0): u1 d: 4 or 5 (c tied);
# u2 e: 3; u3 c: 4 or 5 (d tied); u4 b: 2; u5 b: 2.  skip: u5 left out of the miss ranks.
TEST_RANKS_RANK = [(4, 5), (3,), (4, 5), (2,), (2,)]


def ndcg(ranks):
    return sum(sum(1 / math.log2(r + 1) for r in tied) / len(tied) for tied in ranks if tied) / len(ranks)


def hit(ranks, k):
    return sum(sum(r <= k for r in tied) / len(tied) for tied in ranks if tied) / len(ranks)


@pytest.fixture
def toy_dir(tmp_path):
    write_dataset(tmp_path / "toy", ITEMS, USERS)
    return tmp_path


def test_popularity_ranks_by_hand(toy_dir):
    data = load_data(Config(root_data_dir=str(toy_dir), dataset="toy", max_seq_len=5, min_seq_len=3))
    assert data.num_users == 5 and data.train_counts().tolist() == [0, 5, 4, 0, 0, 1]
    assert data.split_repeats("valid").tolist() == [False] * 5
    assert data.split_repeats("test").tolist() == [False, False, False, False, True]
    for split, ranks, rule in (("valid", VALID_RANKS, "miss"), ("test", TEST_RANKS, "miss"),
                               ("test", TEST_RANKS_RANK, "rank"), ("test", TEST_RANKS[:4], "skip")):
        metrics = popularity_metrics(data, split, rule)
        assert [metrics[f"HR@{k}"] for k in (5, 10)] == pytest.approx([hit(ranks, 5), hit(ranks, 10)])
        assert metrics["NDCG@5"] == pytest.approx(ndcg(ranks))
    assert popularity_metrics(data, "test")["HR@5"] == pytest.approx(0.8)      # u5's repeat target: a miss
    assert hit(TEST_RANKS_RANK, 3) == pytest.approx(0.6) and hit(TEST_RANKS[:4], 1) == pytest.approx(0.5)


def test_script_prints_percent(toy_dir):
    out = subprocess.run([sys.executable, str(SCRIPT), "--root_data_dir", str(toy_dir),
                          "--dataset", "toy", "--max_seq_len", "5", "--min_seq_len", "3"],
                         capture_output=True, text=True, cwd=toy_dir, check=True).stdout
    assert f"popularity valid: HR@10 100.00 NDCG@10 {100 * ndcg(VALID_RANKS):.2f}" in out
    assert (f"popularity test: HR@10 80.00 NDCG@10 {100 * ndcg(TEST_RANKS):.2f} (1 repeat targets, rule miss)"
            in out)


def test_script_rejects_unrelated_options(toy_dir):
    run = subprocess.run([sys.executable, str(SCRIPT), "--lr", "0.1"], capture_output=True, text=True)
    assert run.returncode == 2 and "popularity_baseline takes only" in run.stderr


def test_script_takes_the_warm_item_setting():
    out = subprocess.run([sys.executable, str(SCRIPT), "--max_seq_len", "10", "--warm_min_count", "20"],
                         capture_output=True, text=True, check=True).stdout
    data = load_data(Config(max_seq_len=10, warm_min_count=20))
    assert f"{data.num_items} items, L=10, min_seq_len=5, warm_min_count=20" in out
    assert data.train_counts()[1:].min() >= 20                           # only warm items are left
    test = popularity_metrics(data, "test")
    assert f"popularity test: HR@10 {100 * test['HR@10']:.2f} NDCG@10 {100 * test['NDCG@10']:.2f}" in out


@pytest.mark.parametrize("split", ["valid", "test"])
def test_fast_counts_equal_the_full_ranking_on_ml100k(split):
    """popularity_tie_counts (O(U * L)) gives tie_counts' (h, t) of the full U x N score matrix."""
    import torch
    from morec.baselines import popularity_tie_counts
    from morec.evaluate import tie_counts
    data = load_data(Config())
    counts = torch.from_numpy(data.train_counts()).float()[:, None]              # (N+1, 1)
    full = tie_counts(torch.ones(data.num_users, 1), counts, torch.from_numpy(data.split_target(split)),
                      torch.from_numpy(data.split_history(split)))
    fast = popularity_tie_counts(data, split)
    assert torch.equal(fast, full) and full[:, 1].max() > 0                      # ties do occur


def test_script_and_dataset_card_agree_or_say_which_values_differ(toy_dir):
    """The card's most-popular table and the script rank the same way; when their values differ
    (another L, min_seq_len, repeat rule) both outputs say so, not only different numbers."""
    import popularity_baseline
    from morec.tools.card import write_card
    card = write_card(toy_dir / "toy", max_seq_len=5, min_seq_len=3)
    assert "scripts/popularity_baseline.py --dataset toy --max_seq_len 5 --min_seq_len 3` prints these numbers" in card
    same = Config(root_data_dir=str(toy_dir), dataset="toy", max_seq_len=5, min_seq_len=3)
    assert popularity_baseline.card_comparison(same) == "(the same values as CARD.md's most-popular table: the same numbers)"
    test_row = next(line for line in card.splitlines() if line.startswith("| test |"))
    assert test_row == f"| test | 80.00 | {100 * ndcg(TEST_RANKS):.2f} |"          # the script's test line
    other = Config(root_data_dir=str(toy_dir), dataset="toy", max_seq_len=4, min_seq_len=3, repeat_targets="rank")
    note = popularity_baseline.card_comparison(other)
    assert note.startswith("(not CARD.md's numbers: max_seq_len 4 here, 5 there; repeat_targets rank here, miss there;")
