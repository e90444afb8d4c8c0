"""Repeat targets (SPEC "Evaluation"): a target that also occurs in the user's history is a miss
by default; `--repeat_targets rank` removes no history, `skip` leaves those users out. Each rule is
checked on a hand-made data set whose ranks are worked out by hand, through the evaluation the
training loop runs (morec.train.evaluate), and the test run's records; ml-100k has no repeats."""
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import run_in_process, write_dataset
from morec.config import REPO_ROOT, Config, make_config, run_label
from morec.errors import InputError
from morec.evaluate import MISSED, apply_repeat_rule, metrics_from_counts, repeat_mask, rule_metrics
from morec.parts import load_data
from morec.train import evaluate
from text_helpers import ml100k

# Items a..f (ids 1..6), every user scores them alike: a 6, b 5, c 4, d 3, e 2, f 1 (no ties).
# min_seq_len 3, L = 3 (nothing is cut). valid: target s[-2], history s[:-2]; test: s[-1], s[:-1].
ITEMS = ["a", "b", "c", "d", "e", "f"]
USERS = ["u1\tc d e a",       # valid e | c d: a b above -> 3;  test a | c d e: 1
         "u2\ta b f c b",     # valid c | a b f: 1;             test b | a b f c: REPEAT (rank: a above -> 2)
         "u3\tf e d",         # valid e | f: a b c d -> 5;      test d | f e: a b c above -> 4
         "u4\te b e c"]       # valid e | e b: REPEAT (rank: 5); test c | e b e: a above -> 2 (rank: a b -> 3)
SCORES = [0.0, 6, 5, 4, 3, 2, 1]                       # item 0 (padding) is never ranked
# Each user's rank under a rule; None = a miss (the target removed with the history).
TEST = {"miss": [1, None, 4, 2], "rank": [1, 2, 4, 3], "skip": [1, 4, 2]}
VALID = {"miss": [3, 1, 5, None], "rank": [5, 3, 5, 5], "skip": [3, 1, 5]}


def expected(ranks: list, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k averaged over the users of `ranks` (None: a miss)."""
    hits = [r is not None and r <= k for r in ranks]
    gains = [1 / math.log2(r + 1) if hit else 0.0 for r, hit in zip(ranks, hits)]
    return sum(hits) / len(ranks), sum(gains) / len(ranks)


class FixedScores(nn.Module):
    """A model whose every user scores the items by SCORES: user vector (1,), item vectors (N+1, 1)."""

    class Tower(nn.Module):
        def all_item_vectors(self, num_items, ids, read_pixels=None):
            return torch.tensor(SCORES)[ids].unsqueeze(1)

    def __init__(self):
        super().__init__()
        self.item_tower = self.Tower()

    def user_vectors(self, inputs, item_vecs):
        return torch.ones(len(inputs), 1)


@pytest.fixture
def toy(tmp_path):
    write_dataset(tmp_path / "toy", ITEMS, USERS)
    return tmp_path


def toy_config(root, **values) -> Config:
    return make_config({"root_data_dir": str(root), "dataset": "toy", "max_seq_len": 3, "min_seq_len": 3,
                        "embedding_dim": 8, **values})


def test_the_hand_made_set_has_one_repeat_target_per_split(toy):
    data = load_data(toy_config(toy))
    assert data.split_repeats("valid").tolist() == [False, False, False, True]
    assert data.split_repeats("test").tolist() == [False, True, False, False]


@pytest.mark.parametrize("rule", ["miss", "rank", "skip"])
@pytest.mark.parametrize("split, ranks", [("valid", VALID), ("test", TEST)])
def test_each_rule_gives_the_hand_computed_metrics(toy, rule, split, ranks):
    cfg = toy_config(toy, repeat_targets=rule)
    metrics, counts = evaluate(FixedScores(), load_data(cfg), split, cfg, torch.device("cpu"))
    for k in (5, 10, 20, 50):
        assert (metrics[f"HR@{k}"], metrics[f"NDCG@{k}"]) == pytest.approx(expected(ranks[rule], k), rel=1e-12)
    got = [None if h == MISSED else h + 1 for h in counts[:, 0].tolist()]
    repeat = load_data(cfg).split_repeats(split)
    kept = [r for r, rep in zip(got, repeat) if not (rule == "skip" and rep)]
    assert kept == ranks[rule] and (counts[:, 1] == 0).all()


def test_a_miss_is_a_miss_at_every_k_even_beyond_the_catalogue():
    """Six items, K = 50: a removed target must not count as a hit (h = MISSED, not N)."""
    counts = apply_repeat_rule(torch.tensor([[0, 0], [2, 1]]), torch.tensor([True, False]), "miss")
    assert counts.tolist() == [[MISSED, 0], [2, 1]]
    metrics = metrics_from_counts(counts)
    assert metrics["HR@50"] == pytest.approx(0.5) and metrics["NDCG@50"] < 0.5


def test_the_old_rule_would_have_hit_the_repeat_target(toy):
    """Keeping the target while removing the rest of the history (the rule before SPEC's) puts u2's
    target b first (a is masked): the leak the default closes."""
    cfg = toy_config(toy)
    data = load_data(cfg)
    from morec.evaluate import tie_counts
    item_vecs = torch.tensor(SCORES).unsqueeze(1)
    counts = tie_counts(torch.ones(4, 1), item_vecs, torch.from_numpy(data.split_target("test")),
                        torch.from_numpy(data.split_history("test")))
    assert counts[1].tolist() == [0, 0]                                     # rank 1: a hit
    assert metrics_from_counts(counts, ks=(1, 5)) == pytest.approx({"HR@1": 0.5, "NDCG@1": 0.5, "HR@5": 1.0,
                                                                  "NDCG@5": expected([1, 1, 4, 2], 5)[1]})
    metrics, counts = evaluate(FixedScores(), data, "test", cfg, torch.device("cpu"))
    assert metrics_from_counts(counts, ks=(1,))["HR@1"] == pytest.approx(0.25) and metrics["HR@5"] == 0.75


def test_skip_with_only_repeat_targets_is_refused():
    with pytest.raises(InputError, match="--repeat_targets skip leaves no user"):
        rule_metrics(torch.zeros(2, 2, dtype=torch.long), torch.tensor([True, True]), "skip")


def test_repeat_mask_ignores_padding():
    assert repeat_mask(torch.tensor([3, 0, 2]), torch.tensor([[0, 3], [0, 0], [1, 0]])).tolist() == [True, False, False]


def test_the_rule_is_in_the_label_only_when_not_the_default():
    assert Config().repeat_targets == "miss"
    labels = {run_label(Config(repeat_targets=rule)) for rule in ("miss", "rank", "skip")}
    assert len(labels) == 3 and run_label(Config(repeat_targets="miss")) == run_label(Config())
    with pytest.raises(InputError, match="--repeat_targets 'all' must be one of miss, rank, skip"):
        make_config({"repeat_targets": "all"})


@pytest.mark.parametrize("rule", ["miss", "skip"])
def test_the_test_run_records_the_repeat_targets(toy, capsys, rule):
    runs = str(toy / "runs")
    args = ["--root_data_dir", str(toy), "--dataset", "toy", "--runs_dir", runs, "--label", rule, "--max_seq_len", "3",
            "--min_seq_len", "3", "--embedding_dim", "8", "--repeat_targets", rule]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--epoch", "1", capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process("inbatch_sasrec_e2e_text", "test", *args, capsys=capsys)
    assert code == 0, err
    assert f"repeat targets (also in the user's history): 1 of 4 (25.0%), rule {rule}" in out
    folder = toy / "runs" / rule
    result = json.loads((folder / "test_metrics.json").read_text())
    assert (result["repeat_targets"], result["repeat_count"], result["repeat_share"]) == (rule, 1, 0.25)
    assert result["ranked_users"] == (3 if rule == "skip" else 4)
    assert result["valid_repeats"]["repeat_count"] == 1
    epochs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs[0]["valid_repeats"] == {"repeat_targets": rule, "repeat_count": 1, "repeat_share": 0.25,
                                          "ranked_users": 3 if rule == "skip" else 4}
    saved = np.load(folder / result["per_user"], allow_pickle=False)
    assert saved["repeat"].tolist() == [False, True, False, False] and saved["h"][1] == MISSED
    counts = torch.from_numpy(np.stack([saved["h"], saved["t"]], 1))
    assert rule_metrics(counts, torch.from_numpy(saved["repeat"]), rule) == result["test"]
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from morec.report.rows import table_rows
    from morec.report.run_files import load_run, per_user
    from morec.report.table_text import markdown
    run = load_run(folder)
    assert len(per_user(run)) == result["ranked_users"]             # skip: the per-user file reproduces the metric
    rows = table_rows([run])
    assert (rows[0]["repeat_targets"], rows[0]["repeat_count"]) == (rule, 1)
    table = markdown(rows)
    assert "repeat targets (rule)" in table and f"| 1 ({rule}) |" in table and "skip = those users left out" in table


def test_ml100k_has_no_repeat_target_so_no_number_moves():
    """No ml-100k user rates an item twice, so no target is ever in its history: the three rules
    (and the rule before them) give the same numbers, and every committed ml-100k result stands."""
    from morec.data.files import read_users
    from morec.config import REPO_ROOT
    for user in read_users(REPO_ROOT / "dataset" / "ml-100k" / "users.tsv"):
        assert len(set(user.items)) == len(user.items), user.name
    data = ml100k()
    for split in ("valid", "test"):
        assert not data.split_repeats(split).any()
