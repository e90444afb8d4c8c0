"""TPME (IISAN, Fu et al., SIGIR 2024) in scripts/results_table.py: the trainable-parameter count
in the cost cell and the TPME column on hand-made runs whose answer is known, and the record a
real ml-100k run writes."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from conftest import REPO
from morec.config import make_config
from morec.cost import TPME_WEIGHTS, tpme
from morec.parts import build_run_model
from morec import train as training
from text_helpers import ml100k

sys.path.insert(0, str(REPO / "scripts"))
from morec.errors import InputError  # noqa: E402
from morec.report.rows import table_rows  # noqa: E402
from morec.report.run_files import load_runs  # noqa: E402
from morec.report.table_text import markdown, to_csv  # noqa: E402
from test_results_table import fake_run  # noqa: E402

TEXT = {"item_tower": "text", "bert_model_load": "enc"}
FULL = {**TEXT}
LORA = {**TEXT, "peft": "lora"}
IISAN = {**TEXT, "two_stage": True, "ts_layers": "all", "side_network": "iisan"}


def with_records(run, seconds, peak_mb, parameters=None, kind="max_rss"):
    """Rewrite a fake run's metrics.jsonl: one epoch per entry of `seconds`, each with peak `peak_mb`
    and (unless None) `parameters` trainable parameters; the last epoch is the best."""
    history = [{"epoch": e, "train_loss": 1.0, "valid": {"HR@10": 0.1, "NDCG@10": 0.05}, "train_seconds": s,
                "peak_memory_mb": peak_mb, "peak_memory_kind": kind}
               | ({} if parameters is None else {"trainable_parameters": parameters})
               for e, s in enumerate(seconds, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    result = json.loads((run / "test_metrics.json").read_text())
    (run / "test_metrics.json").write_text(json.dumps({**result, "best_epoch": len(seconds)}))
    return run


def rows_by_run(folder) -> dict[str, dict]:
    """The table's rows by the name of their first run without the seed ("full", "lora", ...), in table order."""
    return {r["runs"].split()[0].rsplit("-", 1)[0]: r for r in table_rows(load_runs([folder]))}


def test_tpme_is_the_mean_of_the_three_ratios():
    assert TPME_WEIGHTS == (1 / 3, 1 / 3, 1 / 3)
    assert tpme((10.0, 1000, 200.0), (10.0, 1000, 200.0)) == 1.0
    assert tpme((1.0, 500, 20.0), (10.0, 1000, 200.0)) == pytest.approx((0.1 + 0.5 + 0.1) / 3)
    assert math.isnan(tpme((1.0, math.nan, 20.0), (10.0, 1000, 200.0)))
    assert math.isnan(tpme((1.0, 5, 20.0), (10.0, 0, 200.0)))           # no reference parameters: no ratio


@pytest.fixture
def three_rows(tmp_path):
    """Full fine-tuning (2 seeds), LoRA and an IISAN-like cached side network, with known cost."""
    root = tmp_path / "exp" / "runs"
    with_records(fake_run(root, "full-s1", {**FULL, "seed": 1}, 0.15, 0.08), [400, 500], 2800, 20_000_000)
    with_records(fake_run(root, "full-s2", {**FULL, "seed": 2}, 0.13, 0.07), [600, 500], 3200, 20_000_000)
    with_records(fake_run(root, "lora-s1", {**LORA, "seed": 1}, 0.14, 0.07), [300, 400], 2400, 2_000_000)
    with_records(fake_run(root, "iisan-s1", {**IISAN, "seed": 1}, 0.12, 0.06), [20, 30], 900, 200_000)
    return tmp_path / "exp"


def test_tpme_column_against_full_fine_tuning(three_rows):
    """T = 1000 / 700 / 50 s, P = 20M / 2M / 200k, M = 3000 / 2400 / 900 MiB: TPME 1,
    (0.7 + 0.1 + 0.8) / 3 and (0.05 + 0.01 + 0.3) / 3."""
    rows = rows_by_run(three_rows)
    assert list(rows) == ["lora", "full", "iisan"]                        # the table's order
    full, lora, iisan = rows["full"], rows["lora"], rows["iisan"]
    assert full["full_fine_tuning"] and not lora["full_fine_tuning"] and not iisan["full_fine_tuning"]
    assert (full["train_seconds_to_best"], full["trainable_parameters"], full["peak_memory_mb"]) == (1000, 2e7, 3000)
    assert full["tpme"] == 1.0
    assert lora["tpme"] == pytest.approx((0.7 + 0.1 + 0.8) / 3)
    assert iisan["tpme"] == pytest.approx((0.05 + 0.01 + 0.3) / 3)
    md = markdown(list(rows.values()))
    lines = md.splitlines()
    assert lines[0].endswith("| cost: train s to best, peak memory, trainable params | TPME vs reference |")
    assert lines[2].endswith("| 700 s, 2400 MiB rss, 2.00M params | 0.533 |")
    assert lines[3].endswith("| 1000 s, 3000 MiB rss, 20.00M params | 1.000 |")
    assert lines[4].endswith("| 50 s, 900 MiB rss, 200.0k params | 0.120 |")
    assert "equal weights 1/3" in md and "toy regular: text: enc E2E (inbatch, full fine-tuning)" in md
    csv_rows = to_csv(list(rows.values())).splitlines()
    assert csv_rows[0].endswith(",trainable_parameters,tpme,tpme_reference")
    assert csv_rows[3].endswith(',50.0,,900.0,max_rss,200000.0,0.12,"text: enc E2E (inbatch, full fine-tuning)"')


def test_without_full_fine_tuning_the_most_parameters_is_the_reference(three_rows):
    for name in ("full-s1", "full-s2"):
        for path in (three_rows / "runs" / name).iterdir():
            path.unlink()
        (three_rows / "runs" / name).rmdir()
    rows = rows_by_run(three_rows)
    assert rows["lora"]["tpme"] == 1.0
    assert rows["iisan"]["tpme"] == pytest.approx((50 / 700 + 0.1 + 900 / 2400) / 3)
    assert "text: enc E2E (inbatch, no full fine-tuning row: the most trainable parameters)" in \
        markdown(list(rows.values()))


def test_a_row_without_the_record_or_with_another_memory_kind_gets_no_tpme(three_rows):
    root = three_rows / "runs"
    with_records(fake_run(root, "old-s1", {**TEXT, "trainable_layers": 2, "seed": 1}, 0.1, 0.05), [100], 1500)
    with_records(fake_run(root, "gpu-s1", {**LORA, "lora_r": 4, "seed": 1}, 0.1, 0.05), [100], 150, 1_000_000,
                 kind="max_allocated")
    rows = rows_by_run(three_rows)
    old, gpu = rows["old"], rows["gpu"]
    assert math.isnan(old["trainable_parameters"]) and math.isnan(old["tpme"])
    assert gpu["trainable_parameters"] == 1_000_000 and math.isnan(gpu["tpme"])      # alloc vs rss: not comparable
    assert rows["full"]["tpme"] == 1.0
    md = markdown(list(rows.values()))
    assert "| 100 s, 1500 MiB rss | - |" in md and "| 100 s, 150 MiB alloc, 1.00M params | - |" in md


def test_runs_without_the_record_keep_the_old_cost_column(tmp_path):
    """No run records trainable_parameters: no TPME column, the cost cell and header as before."""
    root = tmp_path / "runs"
    with_records(fake_run(root, "id-s1", {"item_tower": "id", "seed": 1}, 0.1, 0.05), [10, 30], 250)
    with_records(fake_run(root, "text-s1", {**TEXT, "seed": 1}, 0.1, 0.05), [500, 500], 2100)
    md = markdown(table_rows(load_runs([root])))
    assert md.splitlines()[0].endswith("| cost: train s to best, peak memory |")
    assert md.splitlines()[2].endswith("| 40 s, 250 MiB rss |") and "TPME" not in md


def test_a_damaged_parameter_record_is_refused(three_rows):
    path = three_rows / "runs" / "lora-s1" / "metrics.jsonl"
    path.write_text(path.read_text().replace('"trainable_parameters": 2000000', '"trainable_parameters": "2M"'))
    with pytest.raises(InputError, match=r"lora-s1/metrics.jsonl, line 1: trainable_parameters is not"):
        table_rows(load_runs([three_rows]))


def test_a_real_run_records_the_count_the_table_shows(tmp_path):
    """IDRec on ml-100k, one epoch: metrics.jsonl's trainable_parameters equals the model's
    requires_grad parameter count, and the table reads it (the only row is its own reference)."""
    cfg = make_config(dict(batch_size=256, epoch=1, device="cpu", progress=False))
    training.train(cfg, tmp_path / "run")
    training.test(cfg, tmp_path / "run")
    model = build_run_model(cfg, ml100k(), torch.device("cpu"))
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["trainable_parameters"] == expected
    (row,) = table_rows(load_runs([tmp_path / "run"]))
    assert row["trainable_parameters"] == expected and row["tpme"] == 1.0
    assert "(inbatch, no full fine-tuning row: the most trainable parameters)" in markdown([row])


def test_bench_peft_reuses_the_iisan_configuration_and_reports_its_ratios():
    """scripts/bench_peft.py's IISAN is bench_iisan's configuration; its summary line divides the
    recorded seconds and training peaks (no timing here: hand-made results)."""
    import bench_iisan
    import bench_peft
    assert bench_peft.config_values("iisan") == bench_iisan.CONFIGS["iisan"][1]
    assert bench_peft.config_values("iisan")["side_network"] == "iisan"
    row = {"trainable_encoder": 0, "encoder": 0, "trainable_all": 10, "peak_rss_mib": 900.0, "ready_rss_mib": 700.0}
    results = {"full": {**row, "seconds_per_step": 6.0, "train_peak_rss_mib": 3000.0},
               "lora": {**row, "seconds_per_step": 4.0, "train_peak_rss_mib": 2400.0},
               "iisan": {**row, "seconds_per_step": 0.1, "train_peak_rss_mib": 900.0}}
    assert bench_peft.speedup_line(results) == (
        "IISAN (cached): 60x faster per step than full fine-tuning, 0.30x its training peak RSS; "
        "40x faster per step than LoRA r=8, 0.38x its training peak RSS")
    iisan_line = bench_peft.table(results).splitlines()[4]
    assert iisan_line.startswith("| IISAN, --side_network iisan (cached) | 0 of 0 | 10 | 0.1 | 0.017x | 0.025x |")
