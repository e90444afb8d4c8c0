"""Runs that compute differently (world size, precision) get different labels, record their
setting in config.json, and cannot be resumed under another setting."""
import json

import pytest
import torch

from conftest import run_in_process
from morec.config import Config, run_label, run_setting


def test_setting_is_world_size_and_resolved_precision(monkeypatch):
    assert run_setting(Config(device="cpu")) == {"world_size": 1, "precision": "fp32"}
    assert run_setting(Config(device="cpu", amp=True, amp_dtype="fp16")) == {"world_size": 1, "precision": "fp32"}
    assert run_setting(Config(device="cpu", nproc_per_node=4, nnodes=2))["world_size"] == 8
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)           # "auto" resolves to CUDA
    assert run_setting(Config())["precision"] == "bf16"
    assert run_setting(Config(amp_dtype="fp16"))["precision"] == "fp16"
    assert run_setting(Config(amp=False))["precision"] == "fp32"
    assert run_setting(Config(device="cpu"))["precision"] == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_setting(Config())["precision"] == "fp32"


def test_label_tells_world_size_and_precision_apart(monkeypatch):
    one = run_label(Config(device="cpu"))
    two = run_label(Config(device="cpu", nproc_per_node=2))
    assert two != one and "-w2-fp32-" in two
    assert run_label(Config(device="cpu", nnodes=2)) == two                    # same world size
    # one fp32 process keeps the label it had before the setting existed
    assert one == "ml-100k-sasrec-id-inbatch-d64-bs64-lr0.001-l20.1-dr0.1-L20-s12345-bf21a9e8"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    bf16, fp16 = run_label(Config(amp_dtype="bf16")), run_label(Config(amp_dtype="fp16"))
    assert len({one, bf16, fp16, run_label(Config(amp=False))}) == 3 and run_label(Config(amp=False)) == one
    assert "-w1-bf16-" in bf16 and "-w1-fp16-" in fp16


def test_the_world_must_be_what_the_values_say():
    """check_world (morec.distributed): the processes' world size against the values'; gradient
    caching only in one process, however the ranks were started."""
    from morec.distributed import check_world
    from morec.errors import InputError
    check_world(1, 0, 1)
    check_world(2, 0, 2)
    check_world(1, 64, 1)
    with pytest.raises(InputError, match=r"one of 2 torchrun ranks .* = 1; .*pass the same --nproc_per_node"):
        check_world(1, 0, 2)
    with pytest.raises(InputError, match=r"ask for nproc_per_node x nnodes = 4 processes, but this run has 1"):
        check_world(4, 0, 1)
    for asked in (1, 2):
        with pytest.raises(InputError, match=r"gradient caching\) runs in one process.*set --inbatch_chunk 0"):
            check_world(asked, 64, 2)


def train_one_epoch(tmp_path, capsys, *extra):
    return run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", "--runs_dir", str(tmp_path),
                          "--label", "run", "--device", "cpu", *extra, capsys=capsys)


def test_config_json_records_setting_epoch_and_patience(tmp_path, capsys):
    code, _, err = train_one_epoch(tmp_path, capsys, "--patience", "4")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["setting"] == {"world_size": 1, "precision": "fp32"}
    assert (saved["epoch"], saved["patience"]) == (1, 4)
    code, _, err = train_one_epoch(tmp_path, capsys, "--patience", "5", "--epoch", "2", "--resume")
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["epoch"], saved["patience"]) == (2, 5)                    # what the run finished under


@pytest.mark.parametrize("saved_setting, wanted", [
    ({"world_size": 2, "precision": "fp32"}, "'world_size': 2"),
    ({"world_size": 1, "precision": "bf16"}, "'precision': 'bf16'"),
])
def test_resume_under_another_setting_is_refused(saved_setting, wanted, tmp_path, capsys):
    code, _, err = train_one_epoch(tmp_path, capsys)
    assert code == 0, err
    config = tmp_path / "run" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "setting": saved_setting}))
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    code, _, err = train_one_epoch(tmp_path, capsys, "--epoch", "2", "--resume")
    assert code == 2 and "error: --resume of" in err
    assert wanted in err and "{'world_size': 1, 'precision': 'fp32'}" in err      # both settings named
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before           # nothing trained


def test_resume_of_an_older_run_without_setting_uses_its_saved_values(tmp_path, capsys):
    code, _, err = train_one_epoch(tmp_path, capsys)
    assert code == 0, err
    config = tmp_path / "run" / "config.json"
    old = {k: v for k, v in json.loads(config.read_text()).items() if k != "setting"}
    config.write_text(json.dumps({**old, "nproc_per_node": 2}))             # trained on 2 ranks
    code, _, err = train_one_epoch(tmp_path, capsys, "--epoch", "2", "--resume")
    assert code == 2 and "'world_size': 2" in err
    config.write_text(json.dumps(old))                                       # one process, as now
    code, _, err = train_one_epoch(tmp_path, capsys, "--epoch", "2", "--resume")
    assert code == 0, err
    assert json.loads(config.read_text())["setting"] == {"world_size": 1, "precision": "fp32"}
