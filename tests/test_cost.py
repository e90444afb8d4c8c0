"""Cost accounting: metrics.jsonl's per-epoch cost fields after a real run, the counts
they come from, the results table's cost column and the pareto figure, on inputs whose answer is known."""
from __future__ import annotations

import csv
import io
import json
import math
import mmap
import sys
import time

import pytest
import torch

from conftest import REPO
from morec.config import make_config
from morec.cost import TrainClock, peak_memory_mb, reset_peak_memory, trainable_parameters
from morec.models.build import build_model
from morec.resolve import model_spec
from morec.parts import build_run_model, make_batches
from morec.train import train
from text_helpers import ml100k

sys.path.insert(0, str(REPO / "scripts"))
import plot_runs  # noqa: E402
from morec.errors import InputError  # noqa: E402
from morec.report.rows import table_rows  # noqa: E402
from morec.report.run_files import load_runs, run_cost  # noqa: E402
from morec.report.table_text import markdown, to_csv  # noqa: E402
from test_results_table import assert_png, fake_run  # noqa: E402

CPU = torch.device("cpu")


def test_one_epoch_id_run_records_its_cost(tmp_path):
    """A 1-epoch IDRec run (BCE, so every position's negative is looked up too): items per second x
    train seconds = the real slots of the epoch's batches (ID lookups, one per slot)."""
    cfg = make_config(dict(loss="bce", batch_size=128, epoch=1, device="cpu", progress=False))
    train(cfg, tmp_path / "run")
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    data = ml100k()
    slots = sum(int((batch[key] != 0).sum()) for batch in make_batches(cfg, data).epoch(cfg.seed, 0, 1, epoch=1)
                for key in ("seqs", "negatives"))                        # the epoch's batches, as train() draws them
    assert slots > 2 * len(data.train)
    # both numbers are rounded (items/s to 0.1, seconds to 1 ms): the product is exact up to that
    # rounding, whatever the machine's speed (a fixed relative tolerance fails on a fast machine)
    rate, seconds = record["items_encoded_per_second"], record["train_seconds"]
    assert abs(rate * seconds - slots) <= rate * 0.0005 + 0.05 * seconds + 1e-6
    model = build_run_model(cfg, data, CPU)
    assert record["trainable_parameters"] == sum(p.numel() for p in model.parameters())
    assert record["trainable_parameters"] == (data.num_items + 1) * 64 + 20 * 64 + 2 * (12 * 64 * 64 + 9 * 64) + 2 * 64
    assert record["peak_memory_kind"] in ("max_rss", "max_rss_process") and record["peak_memory_mb"] > 50


@pytest.fixture
def one_thread():
    """torch on one intra-op thread for the test (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_epochs_record_their_cpu_seconds(tmp_path, one_thread):
    """Every epoch of a real 2-epoch run records this process's CPU seconds of its training steps.
    On one thread they cannot exceed the wall seconds (bar the clocks' ticks and the 1 ms rounding);
    the bound is loose (1.5 x + 0.5 s) and only one-sided, so a loaded machine (CPU << wall) passes."""
    train(make_config(dict(batch_size=256, epoch=2, device="cpu", progress=False)), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert 0 < record["train_cpu_seconds"] <= record["train_seconds"] * 1.5 + 0.5, record


def test_train_clock_counts_a_pause_as_wall_time_only():
    """A stretch the process spends asleep (as a paused or core-starved run waits) is wall time,
    not CPU time; work is both."""
    clock = TrainClock()
    time.sleep(0.5)
    wall, cpu = clock.seconds()
    assert wall >= 0.5 and 0 <= cpu < 0.25
    clock = TrainClock()
    while time.process_time() - clock.cpu < 0.05:                      # busy: 50 ms of this thread's CPU
        pass
    wall, cpu = clock.seconds()
    assert cpu >= 0.05 and wall >= cpu - 0.01                          # one thread: CPU cannot run ahead of wall


def test_items_encoded_counts_distinct_items_or_slots():
    data = ml100k()
    popularity = torch.ones(data.num_items + 1)
    sasrec = build_model(model_spec(make_config({})), data.num_items, data.num_users, popularity)
    batch = {"seqs": torch.tensor([[0, 1, 2, 1], [0, 0, 2, 3]]), "negatives": torch.tensor([[0, 9, 1, 4], [0, 0, 5, 5]])}
    assert sasrec.items_encoded(batch) == 10                             # ID lookups: every real slot
    sasrec.item_tower.deduplicate = True
    assert sasrec.items_encoded(batch) == 6                              # 1 2 3 4 5 9
    dssm = build_model(model_spec(make_config({"model": "dssm", "loss": "bce"})), data.num_items, data.num_users,
                       popularity)
    pairs = {"users": torch.tensor([0, 1, 0]), "items": torch.tensor([7, 8, 0]),   # the last: DDP padding
             "negatives": torch.tensor([[3, 4], [3, 9], [5, 6]]), "user_items": torch.zeros(3, 2, dtype=torch.long)}
    assert dssm.items_encoded(pairs) == 6
    dssm.item_tower.deduplicate = True
    assert dssm.items_encoded(pairs) == 5                                # 3 4 7 8 9


def test_trainable_parameters_skip_frozen_ones():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert trainable_parameters(model) == 4 * 2 + 2


def touch_fresh_pages(mib: int) -> mmap.mmap:
    """`mib` MiB of new anonymous pages, each written once. Not np.ones: malloc may serve a large
    request from freed heap memory that is still resident, and then the RSS does not grow."""
    block = mmap.mmap(-1, mib * 2 ** 20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_peak_rss_is_reset_per_window():
    kind = reset_peak_memory(CPU)
    before = peak_memory_mb(CPU)
    block = touch_fresh_pages(40)
    during = peak_memory_mb(CPU)
    assert during - before >= 35
    block.close()                                                        # the pages leave the RSS
    if kind == "max_rss":                                                # Linux: the window restarts
        assert reset_peak_memory(CPU) == "max_rss" and peak_memory_mb(CPU) <= during - 30
    else:
        assert kind == "max_rss_process" and peak_memory_mb(CPU) >= during


# ----------------------------------------------------------------------------- table and pareto figure

def with_cost(run, seconds, peaks, best_epoch, kind="max_rss", cpu=None):
    """Rewrite a fake run's metrics.jsonl with per-epoch train_seconds and peak memory (and, where
    `cpu` gives a number, train_cpu_seconds; None: the epoch lacks it), and its test_metrics.json's
    best epoch."""
    history = [{"epoch": e, "train_loss": 1.0, "valid": {"HR@10": 0.1, "NDCG@10": 0.05}, "train_seconds": s,
                "items_encoded_per_second": 10.0, "trainable_parameters": 5, "peak_memory_mb": m,
                "peak_memory_kind": kind} for e, (s, m) in enumerate(zip(seconds, peaks), 1)]
    for record, cpu_seconds in zip(history, cpu or []):
        if cpu_seconds is not None:
            record["train_cpu_seconds"] = cpu_seconds
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    result = json.loads((run / "test_metrics.json").read_text())
    (run / "test_metrics.json").write_text(json.dumps({**result, "best_epoch": best_epoch}))
    return run


@pytest.fixture
def cost_root(tmp_path):
    root = tmp_path / "exp" / "runs"
    text = {"item_tower": "text", "bert_model_load": "enc"}
    with_cost(fake_run(root, "id-s1", {"item_tower": "id", "seed": 1}, 0.10, 0.06), [10, 20, 30, 40], [100, 300, 200, 150], 2)
    with_cost(fake_run(root, "id-s2", {"item_tower": "id", "seed": 2}, 0.10, 0.06), [25, 25, 25], [200, 100, 100], 2)
    with_cost(fake_run(root, "e2e-s1", {**text, "seed": 1}, 0.15, 0.08), [500, 500, 500], [2000, 2100, 2100], 2)
    with_cost(fake_run(root, "ts-s1", {**text, "two_stage": True, "ts_layers": "all", "seed": 1}, 0.05, 0.03),
              [40, 60, 80], [400, 400, 400], 3)
    fake_run(root, "old-s1", {**text, "two_stage": True, "seed": 1}, 0.09, 0.04)       # before cost accounting
    return tmp_path / "exp"


def test_table_cost_column(cost_root):
    rows = {(r["item_tower"], r["mode"]): r for r in table_rows(load_runs([cost_root]))}
    assert list(rows) == [("ID", "E2E"), ("text: enc", "E2E"), ("text: enc", "TS dnn=0"),
                          ("text: enc", "TS layers=all dnn=0")]
    idrec = rows["ID", "E2E"]
    assert idrec["train_seconds_to_best"] == pytest.approx((30 + 50) / 2)   # epochs 1..2 of each seed
    assert idrec["peak_memory_mb"] == pytest.approx((300 + 200) / 2) and idrec["peak_memory_kind"] == "max_rss"
    assert rows["text: enc", "TS layers=all dnn=0"]["train_seconds_to_best"] == pytest.approx(180)
    assert math.isnan(rows["text: enc", "TS dnn=0"]["train_seconds_to_best"])
    md = markdown(list(rows.values()))
    # the runs record trainable_parameters (5): the cost cell shows them, and the TPME column follows
    assert md.splitlines()[0].endswith("| cost: train s to best, peak memory, trainable params | TPME vs reference |")
    assert "| 40 s, 250 MiB rss, 5 params |" in md and "| 1000 s, 2100 MiB rss, 5 params | 1.000 |" in md
    assert md.splitlines()[4].endswith("| - | - |")                           # the old run
    csv_text = to_csv(list(rows.values()))
    assert "(CPU" not in md and "CPU s:" not in md                          # no run records CPU seconds
    assert csv_text.splitlines()[0].endswith(",train_seconds_to_best,train_cpu_seconds_to_best,peak_memory_mb,"
                                             "peak_memory_kind,trainable_parameters,tpme,tpme_reference")
    assert ",40.0,,250.0,max_rss,5.0," in csv_text.splitlines()[1]


def test_table_cpu_seconds_to_best(tmp_path):
    """CPU seconds summed over epochs 1 .. best epoch and averaged over seeds, shown after the wall
    seconds only where every run of the row records them for every epoch up to its best; TPME
    stays on the wall seconds."""
    root = tmp_path / "exp" / "runs"
    text = {"item_tower": "text", "bert_model_load": "enc"}
    # IDRec: one thread (CPU < wall), then four threads (CPU > wall); epochs after the best do not count
    with_cost(fake_run(root, "id-s1", {"item_tower": "id", "seed": 1}, 0.10, 0.06), [10, 20, 30, 40],
              [100, 300, 200, 150], 2, cpu=[8, 16, 24, None])
    with_cost(fake_run(root, "id-s2", {"item_tower": "id", "seed": 2}, 0.10, 0.06), [25, 25, 25],
              [200, 100, 100], 2, cpu=[50, 50, 50])
    # E2E: epoch 2 (before the best) lacks it -> NaN, the cell keeps the text of old runs
    with_cost(fake_run(root, "e2e-s1", {**text, "seed": 1}, 0.15, 0.08), [500, 500, 500],
              [2000, 2100, 2100], 2, cpu=[400, None, 400])
    # two-stage: one seed records it, the other does not -> NaN for the row
    ts = {**text, "two_stage": True, "ts_layers": "all"}
    with_cost(fake_run(root, "ts-s1", {**ts, "seed": 1}, 0.05, 0.03), [40, 60, 80], [400, 400, 400], 3, cpu=[1, 2, 3])
    with_cost(fake_run(root, "ts-s2", {**ts, "seed": 2}, 0.05, 0.03), [40, 60, 80], [400, 400, 400], 3)
    rows = {r["mode"] + " " + r["item_tower"]: r for r in table_rows(load_runs([root.parent]))}
    idrec, e2e, ts_row = rows["E2E ID"], rows["E2E text: enc"], rows["TS layers=all dnn=0 text: enc"]
    assert idrec["train_cpu_seconds_to_best"] == pytest.approx((8 + 16 + 50 + 50) / 2)
    assert idrec["train_seconds_to_best"] == pytest.approx((30 + 50) / 2)
    assert math.isnan(e2e["train_cpu_seconds_to_best"]) and math.isnan(ts_row["train_cpu_seconds_to_best"])
    assert idrec["tpme"] == pytest.approx((40 / 1000 + 5 / 5 + 250 / 2100) / 3)   # wall seconds, not CPU
    md = markdown(list(rows.values()))
    assert "| 40 s (CPU 62 s), 250 MiB rss, 5 params |" in md
    assert "| 1000 s, 2100 MiB rss, 5 params | 1.000 |" in md and "| 180 s, 400 MiB rss, 5 params |" in md
    assert "CPU s: this process's CPU time over the same training steps (all threads" in md
    csv_rows = {r["mode"] + " " + r["item_tower"]: r for r in csv.DictReader(io.StringIO(to_csv(list(rows.values()))))}
    assert csv_rows["E2E ID"]["train_cpu_seconds_to_best"] == "62.0"
    assert csv_rows["E2E text: enc"]["train_cpu_seconds_to_best"] == ""        # NaN: epoch 2 lacks it
    assert csv_rows["TS layers=all dnn=0 text: enc"]["train_cpu_seconds_to_best"] == ""
    assert csv_rows["E2E text: enc"]["train_seconds_to_best"] == "1000.0"


def test_a_cpu_seconds_value_of_the_wrong_type_is_one_error(tmp_path):
    run = with_cost(fake_run(tmp_path / "runs", "s1", {"item_tower": "id", "seed": 1}, 0.1, 0.05), [10, 20], [1, 1],
                    2, cpu=[5, "12.5"])
    with pytest.raises(InputError, match=r"s1/metrics.jsonl, line 2: train_cpu_seconds is not a number"):
        run_cost(load_runs([run.parent])[0])


def test_pareto_front_and_figure(cost_root, tmp_path, capsys):
    assert plot_runs.pareto_front([(40, 6.0), (1000, 8.0), (180, 3.0), (40, 5.0), (2000, 8.0)]) == [0, 1]
    rows = table_rows(load_runs([cost_root]))
    kept = plot_runs.pareto_rows(rows)
    assert [r["mode"] for r in kept] == ["E2E", "E2E", "TS layers=all dnn=0"]
    assert "left out 1 row(s) whose runs record no train_seconds" in capsys.readouterr().err
    points = [(r["train_seconds_to_best"], r["ndcg10_mean"]) for r in kept]
    assert points == [(40, pytest.approx(6.0)), (1000, pytest.approx(8.0)), (180, pytest.approx(3.0))]
    assert plot_runs.pareto_front(points) == [0, 1]                          # TS: slower and worse than ID
    plot_runs.main(["pareto", str(cost_root), "--out", str(tmp_path / "fig" / "pareto.png")])
    assert_png(tmp_path / "fig" / "pareto.png")
    old = tmp_path / "old"
    fake_run(old, "only-old", {"item_tower": "id", "seed": 1}, 0.1, 0.05)
    with pytest.raises(InputError, match="no table row has a training cost"):
        plot_runs.main(["pareto", str(old), "--out", str(tmp_path / "none.png")])
    assert not (tmp_path / "none.png").exists()
