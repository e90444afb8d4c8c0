"""Full-ranking evaluation (morec.evaluate) against the per-user SPEC definition (morec.tools.reference),
the tie rule on cases with known answers, and the test run's per-user file."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import run_in_process
from morec.config import Config
from morec.distributed import World
from morec.evaluate import (cold_start_view, metrics_from_counts, metrics_from_ranks, per_user_metrics,
                            target_ranks, tie_counts)
from morec.tools.reference import expected_hit_ndcg, ranks_per_user, tie_counts_per_user
from morec.parts import build_run_model
from morec.train import catalogue_vectors, evaluate
from morec.models.towers import ItemTower
from text_helpers import ml100k


def grid_vectors(gen: torch.Generator, rows: int, dim: int) -> torch.Tensor:
    """Random vectors on the grid k/4, |k| <= 4: float32 dot products are exact and ties common."""
    return torch.randint(-4, 5, (rows, dim), generator=gen).float() / 4


def random_case(seed: int, users: int = 41, num_items: int = 30, dim: int = 3, hist: int = 7):
    gen = torch.Generator().manual_seed(seed)
    user_vecs = grid_vectors(gen, users, dim)                                   # (U, d)
    item_vecs = grid_vectors(gen, num_items + 1, dim)                           # (N+1, d)
    item_vecs[0] = 100.0                                                        # padding would win
    targets = torch.randint(1, num_items + 1, (users,), generator=gen)          # (U,)
    history = torch.randint(1, num_items + 1, (users, hist), generator=gen)     # (U, H)
    history[:, : hist // 2] *= torch.rand(users, 1, generator=gen) < 0.5         # 0-padding
    history[::3, -1] = targets[::3]                                             # target also in history
    return user_vecs, item_vecs, targets, history


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("chunk_rows", [1, 4, 1000])
def test_target_ranks_matches_per_user_reference(seed, chunk_rows):
    user_vecs, item_vecs, targets, history = random_case(seed)
    chunk_elems = chunk_rows * item_vecs.shape[0]            # 41 users: 41, 11 or 1 chunks
    fast = target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=chunk_elems)
    slow = ranks_per_user(user_vecs, item_vecs, targets, history)
    scores = user_vecs @ item_vecs.T
    tied = (scores == scores.gather(1, targets[:, None])).sum(1) > 1
    assert tied.sum() > 5                                    # ties with the target really occur
    assert fast.dtype == torch.long
    np.testing.assert_array_equal(fast.numpy(), slow)


def test_target_ranks_below_one_row_per_chunk():
    user_vecs, item_vecs, targets, history = random_case(0, users=5)
    fast = target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=3)  # < N+1: 1 row/chunk
    np.testing.assert_array_equal(fast.numpy(), ranks_per_user(user_vecs, item_vecs, targets, history))


def test_known_ranks_history_ties_and_item_zero():
    """d = 1. Item scores for user vector +1: item 0: 9 (padding), 1: 3, 2: 5, 3: 3, 4: 1, 5: 5.

    user 0: target 1, history [2]      -> item 5 (5) is higher, item 3 ties (3): rank 2
    user 1: target 5, history [5, 2]   -> the target stays despite being in history; rank 1
    user 2: target 4, history [0, 0]   -> items 1, 2, 3, 5 are higher: rank 5
    user 3: vector -1, target 4, no history: the target has the top score -1: rank 1
    """
    item_vecs = torch.tensor([[9.0], [3.0], [5.0], [3.0], [1.0], [5.0]])
    user_vecs = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])
    targets = torch.tensor([1, 5, 4, 4])
    history = torch.tensor([[0, 2], [5, 2], [0, 0], [0, 0]])
    expected = [2, 1, 5, 1]
    assert target_ranks(user_vecs, item_vecs, targets, history, chunk_elems=6).tolist() == expected
    assert ranks_per_user(user_vecs, item_vecs, targets, history).tolist() == expected


def test_metrics_from_known_ranks():
    metrics = metrics_from_ranks(torch.tensor([1, 2, 11]))
    assert metrics["HR@10"] == pytest.approx(2 / 3)
    assert metrics["NDCG@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert metrics["HR@5"] == pytest.approx(2 / 3)
    assert metrics["HR@20"] == pytest.approx(1.0)
    assert metrics["NDCG@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(12)) / 3)
    assert set(metrics) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20, 50)}
    assert metrics_from_ranks(torch.tensor([10, 11]), ks=(10,)) == pytest.approx(
        {"HR@10": 0.5, "NDCG@10": 0.5 / math.log2(11)})


# ----------------------------------------------------------------------------- ties (SPEC "Evaluation")

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("chunk_rows", [1, 4, 1000])
def test_tie_counts_match_per_user_reference(seed, chunk_rows):
    user_vecs, item_vecs, targets, history = random_case(seed)
    fast = tie_counts(user_vecs, item_vecs, targets, history, chunk_elems=chunk_rows * item_vecs.shape[0])
    slow = tie_counts_per_user(user_vecs, item_vecs, targets, history)
    assert (slow[:, 1] > 0).sum() > 5                          # ties with the target really occur
    np.testing.assert_array_equal(fast.numpy(), slow)


def test_per_user_metrics_are_the_mean_over_the_tied_ranks():
    """The vectorised formula against enumerating the ranks h+1 .. h+t+1 (morec.tools.reference)."""
    cases = [(h, t) for h in (0, 1, 3, 9, 10, 12, 49, 60) for t in (0, 1, 2, 5, 17, 100)]
    per_user = per_user_metrics(torch.tensor(cases))
    for k in (5, 10, 20, 50):
        expected = np.array([expected_hit_ndcg(h, t, k) for h, t in cases])
        np.testing.assert_allclose(per_user[f"HR@{k}"].numpy(), expected[:, 0], rtol=1e-12)
        np.testing.assert_allclose(per_user[f"NDCG@{k}"].numpy(), expected[:, 1], rtol=1e-12)


def test_two_identical_items_split_the_hit():
    """d = 1, user vector +1. Items 1 and 2 have the same vector (score 5) above all others: the
    target (item 1) is rank 1 or 2 with equal chance; item 4 is the second target, alone on top."""
    item_vecs = torch.tensor([[9.0], [5.0], [5.0], [1.0], [7.0]])
    user_vecs = torch.tensor([[1.0], [1.0], [1.0]])
    targets = torch.tensor([1, 4, 1])
    history = torch.tensor([[0], [0], [4]])
    counts = tie_counts(user_vecs, item_vecs, targets, history)
    assert counts.tolist() == [[1, 1], [0, 0], [0, 1]]        # item 4 (7) is above item 1 for user 0
    per_user = per_user_metrics(counts, ks=(1, 2, 3))
    assert per_user["HR@1"].tolist() == [0.0, 1.0, 0.5]
    assert per_user["HR@2"].tolist() == [0.5, 1.0, 1.0]
    assert per_user["NDCG@2"].tolist() == pytest.approx([0.5 / math.log2(3), 1.0, (1 + 1 / math.log2(3)) / 2])
    assert per_user["NDCG@3"][0].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 2)


def test_optimistic_and_pessimistic_tie_rules():
    counts = torch.tensor([[0, 1], [3, 10], [12, 0]])            # (h, t)
    optimistic = metrics_from_counts(counts, ks=(10,), ties="optimistic")           # ranks 1, 4, 13
    pessimistic = metrics_from_counts(counts, ks=(10,), ties="pessimistic")         # ranks 2, 14, 13
    expected = metrics_from_counts(counts, ks=(10,))
    assert optimistic == pytest.approx({"HR@10": 2 / 3, "NDCG@10": (1 + 1 / math.log2(5)) / 3})
    assert pessimistic == pytest.approx({"HR@10": 1 / 3, "NDCG@10": (1 / math.log2(3)) / 3})
    assert expected["HR@10"] == pytest.approx((1 + 7 / 11 + 0) / 3)               # ranks 4..14: 4..10 hit
    assert optimistic == metrics_from_ranks(torch.tensor([1, 4, 13]), ks=(10,))
    with pytest.raises(ValueError, match="ties must be one of"):
        metrics_from_counts(counts, ties="random")


def test_nan_in_a_non_target_score_is_an_error():
    user_vecs, item_vecs, targets, history = random_case(0, users=6)
    item_vecs[7] = float("nan")
    targets[:] = 3
    history[:] = 0
    with pytest.raises(FloatingPointError, match="score of item 7 for user 0 is nan"):
        tie_counts(user_vecs, item_vecs, targets, history)
    item_vecs[7] = 1.0
    user_vecs[4, 0] = float("inf")                                # inf * 0 = nan, inf * x = inf
    with pytest.raises(FloatingPointError, match="for user 4 is"):
        tie_counts(user_vecs, item_vecs, targets, history, chunk_elems=2 * item_vecs.shape[0])
    with pytest.raises(FloatingPointError, match="for user 104 is"):                 # rows 100.. of a split
        tie_counts(user_vecs, item_vecs, targets, history, first_user=100)


def test_huge_finite_scores_are_not_mistaken_for_overflow():
    item_vecs = torch.full((5, 1), 3e38)
    counts = tie_counts(torch.ones(2, 1), item_vecs, torch.tensor([1, 2]), torch.zeros(2, 1, dtype=torch.long))
    assert counts.tolist() == [[0, 3], [0, 3]]                  # their sum overflows, no score does


def test_collapsed_model_on_ml100k_scores_k_over_the_rankable_items():
    """Every item vector equal (here zero): all scores tie, so each user's expected HR@K is
    K / (its rankable items: all items minus its test history; no ml-100k target is in it). The old
    rule (count strictly higher only) gave HR@10 = 100%."""
    data = ml100k()
    cfg = Config(item_tower="id", embedding_dim=16, max_seq_len=20)
    model = build_run_model(cfg, data, torch.device("cpu"))
    with torch.no_grad():
        model.item_tower.embedding.weight.zero_()
    metrics, counts = evaluate(model, data, "test", cfg, torch.device("cpu"))
    targets, history = data.split_target("test"), data.split_history("test")
    rankable = np.array([data.num_items - len(set(row.tolist()) - {0, target})
                         for row, target in zip(history, targets)])                  # (U,)
    assert (counts[:, 0] == 0).all() and counts[:, 1].numpy().tolist() == (rankable - 1).tolist()
    for k in (5, 10, 20, 50):
        assert metrics[f"HR@{k}"] == pytest.approx(np.mean(k / rankable), rel=1e-12)
        gain = sum(1 / math.log2(r + 1) for r in range(1, k + 1))
        assert metrics[f"NDCG@{k}"] == pytest.approx(np.mean(gain / rankable), rel=1e-12)
    assert metrics["HR@10"] < 0.01
    view = cold_start_view(counts, data.train_counts(), targets, below=10 ** 9)    # every user
    assert view["metrics"] == pytest.approx(metrics)


# ----------------------------------------------------------------------------- evaluation precision

class AutocastProbe(ItemTower):
    """An item tower that records whether autocast was on and what dtype it produced."""

    def __init__(self, num_items: int = 6, dim: int = 4):
        super().__init__()
        self.dim, self.num_items, self.fc = dim, num_items, nn.Linear(3, dim)
        self.seen: list[tuple[bool, torch.dtype]] = []

    def encode_chunk(self, ids, pixels=None):
        out = self.fc(torch.stack([ids.float(), ids.float() ** 0.5, torch.ones(len(ids))], 1))
        self.seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out


class ProbeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.item_tower = AutocastProbe()

    def all_item_vectors(self):
        return self.item_tower(torch.arange(self.item_tower.num_items + 1))


def cpu_bf16_autocast(cfg, device):
    """Stands in for morec.train.autocast, which is off on CPU: bf16 autocast that CPU honours."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_catalogue_is_encoded_in_fp32_unless_eval_amp(monkeypatch):
    """SPEC "Evaluation": fp32 for every tower, even inside an outer autocast;
    --eval_amp true encodes under the run's autocast."""
    import morec.train
    monkeypatch.setattr(morec.train, "autocast", cpu_bf16_autocast)
    cpu = torch.device("cpu")
    model = ProbeModel()
    with torch.autocast("cpu", dtype=torch.bfloat16):            # e.g. a caller inside training autocast
        vecs = catalogue_vectors(model, 6, World(), cpu, Config())
    assert model.item_tower.seen == [(False, torch.float32)]
    assert vecs.dtype == torch.float32
    model.item_tower.seen.clear()
    catalogue_vectors(model, 6, World(), cpu, Config(eval_amp=True))
    assert model.item_tower.seen == [(True, torch.bfloat16)]


def test_vision_catalogue_is_encoded_in_fp32_unless_eval_amp(monkeypatch):
    """The pixel path (chunks of posters), which ran under autocast before."""
    import morec.train
    from morec.data.images import ImageStore, ItemImages
    from morec.models.towers import PixelTower
    from vision_helpers import IMAGE_SIZE, poster_root

    class PixelProbe(PixelTower):
        def __init__(self):
            super().__init__()
            self.dim, self.fc, self.seen = 4, nn.Linear(3, 4), set()

        def encode_pixels(self, pixels):
            out = self.fc(pixels.mean(dim=(2, 3)))
            self.seen.add((torch.is_autocast_enabled("cpu"), out.dtype))
            return out

    monkeypatch.setattr(morec.train, "autocast", cpu_bf16_autocast)
    data = ml100k()
    images = ItemImages(ImageStore(poster_root() / "ml-100k" / "posters.lmdb", IMAGE_SIZE),
                        [""] + [row.name for row in data.items[1:]])
    model = nn.Module()
    model.item_tower = PixelProbe()
    vecs = catalogue_vectors(model, 40, World(), torch.device("cpu"), Config(eval_batch_size=16), images)
    assert model.item_tower.seen == {(False, torch.float32)} and vecs.shape == (41, 4)
    model.item_tower.seen.clear()
    catalogue_vectors(model, 40, World(), torch.device("cpu"), Config(eval_batch_size=16, eval_amp=True), images)
    assert model.item_tower.seen == {(True, torch.bfloat16)}


def test_eval_amp_and_ties_are_in_the_run_label():
    from morec.config import run_label
    labels = {run_label(Config()), run_label(Config(eval_amp=True)), run_label(Config(ties="pessimistic"))}
    assert len(labels) == 3


# ----------------------------------------------------------------------------- the test run's files

def test_test_run_saves_per_user_counts_that_reproduce_its_metrics(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    args = ["--runs_dir", runs, "--label", "r", "--max_seq_len", "5", "--embedding_dim", "8", "--batch_size", "512"]
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--epoch", "1", capsys=capsys)
    assert code == 0, err
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "test", *args, capsys=capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "runs" / "r" / "test_metrics.json").read_text())
    saved = np.load(tmp_path / "runs" / "r" / result["per_user"], allow_pickle=False)
    data = ml100k()
    assert saved["user"].tolist() == data.user_names and saved["h"].dtype == np.int64
    counts = torch.from_numpy(np.stack([saved["h"], saved["t"]], 1))
    assert metrics_from_counts(counts) == result["test"]
    assert result["ties"] == "expected" and result["users_with_ties"] == int((saved["t"] > 0).sum())
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--ties", "sideways", capsys=capsys)
    assert code == 2 and "--ties 'sideways' must be one of expected, optimistic, pessimistic" in err
