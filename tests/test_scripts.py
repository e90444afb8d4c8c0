"""The user's workflow end to end: train_*.py then test_*.py on ml-100k, bad input, resume.

Most cases call the scripts' code in this process (same params, same main()); a few start the
scripts as real processes from another working directory, as a user would.
"""
import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_in_process, run_script, write_dataset

SCRIPTS = ["inbatch_sasrec_e2e_text", "bce_text/main-end2end", "bce_text/main-end2end-dssm"]
LAST_LINE = re.compile(r"^test HR@10 \d+\.\d\d NDCG@10 \d+\.\d\d$")


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_scripts_run_as_processes_from_any_directory(tmp_path):
    runs = str(tmp_path / "runs")
    ok(run_script("bce_text/main-end2end-dssm/train_id.py", "--epoch", "1", "--runs_dir", runs, "--label", "p"))
    result = ok(run_script("bce_text/main-end2end-dssm/test_id.py", "--runs_dir", runs, "--label", "p"))
    assert LAST_LINE.match(result.stdout.strip().splitlines()[-1]), result.stdout
    missing = run_script("inbatch_sasrec_e2e_text/test_id.py", "--runs_dir", runs, "--label", "nope")
    assert_clean_error(missing.returncode, missing.stderr, "no checkpoint in", "nope", "train this run first")


@pytest.mark.parametrize("folder", SCRIPTS)
def test_train_then_test_one_epoch(folder, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    code, _, err = run_in_process(folder, "train", "--epoch", "1", "--runs_dir", runs, "--label", "smoke", capsys=capsys)
    assert code == 0, err
    code, out, err = run_in_process(folder, "test", "--runs_dir", runs, "--label", "smoke", capsys=capsys)
    assert code == 0, err
    assert LAST_LINE.match(out.strip().splitlines()[-1]), out
    run = tmp_path / "runs" / "smoke"
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics["test"]) == {f"{m}@{k}" for m in ("HR", "NDCG") for k in (5, 10, 20, 50)}
    assert metrics["num_users"] == 943 and metrics["best_epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run / "config.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_best.pt", "checkpoint_last.pt", "config.json",
                                                     "metrics.jsonl", "test_metrics.json", "test_ranks.npz",
                                                     "train.log"]


def test_derived_label_finds_the_same_run(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--epoch", "1", "--runs_dir", runs,
                                  "--lr", "0.002", capsys=capsys)
    assert code == 0, err
    (label,) = [p.name for p in (tmp_path / "runs").iterdir()]
    assert "lr0.002" in label
    code, out, _ = run_in_process("inbatch_sasrec_e2e_text", "test", "--runs_dir", runs, "--lr", "0.002", capsys=capsys)
    assert code == 0 and label in out
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "test", "--runs_dir", runs, capsys=capsys)  # other lr
    assert code == 2 and "no checkpoint" in err


def assert_clean_error(code, stderr, *fragments):
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in stderr


@pytest.mark.parametrize("users, fragment", [
    (["u1\ti1 i2 i3 i4 i5", "u2\ti1 zz i3 i4 i5"], "line 2: user 'u2' has item 'zz'"),
    (["u1\ti1 i2 i3 i4 i5", "broken line"], "line 2: expected"),
    (["u1\ti1 i2"], "no user has at least min_seq_len=5"),
])
def test_bad_data_gives_one_clear_error_and_no_outputs(tmp_path, users, fragment, capsys):
    write_dataset(tmp_path / "bad", [f"i{k}" for k in range(1, 6)], users)
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--root_data_dir", str(tmp_path),
                                  "--dataset", "bad", "--runs_dir", str(tmp_path / "runs"), capsys=capsys)
    assert_clean_error(code, err, str(tmp_path / "bad" / "users.tsv"), fragment)
    assert not (tmp_path / "runs").exists()


def test_missing_data_file_and_bad_override(tmp_path, capsys):
    code, _, err = run_in_process("bce_text/main-end2end", "train", "--dataset", "no_such_set",
                                  "--runs_dir", str(tmp_path / "runs"), capsys=capsys)
    assert_clean_error(code, err, "no_such_set", "not found")
    assert not (tmp_path / "runs").exists()
    code, _, err = run_in_process("bce_text/main-end2end", "train", "--epochs", "3", capsys=capsys)
    assert_clean_error(code, err, "unknown parameter --epochs")


def test_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    args = ["--epoch", "1", "--runs_dir", str(tmp_path / "runs"), "--label", "a"]
    assert run_in_process("inbatch_sasrec_e2e_text", "train", *args, capsys=capsys)[0] == 0
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, capsys=capsys)
    assert_clean_error(code, err, "already holds a run", "--resume")
    assert run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--overwrite", capsys=capsys)[0] == 0


def history_and_weights(run):
    history = [(r["epoch"], r["train_loss"], r["valid"])
               for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    weights = torch.load(run / "checkpoint_last.pt", weights_only=True)["model"]
    best = torch.load(run / "checkpoint_best.pt", weights_only=True)
    return history, weights, best


def assert_same_run(a, b):
    (hist_a, weights_a, best_a), (hist_b, weights_b, best_b) = history_and_weights(a), history_and_weights(b)
    assert hist_a == hist_b
    assert best_a["epoch"] == best_b["epoch"] and best_a["valid"] == best_b["valid"]
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


@pytest.mark.parametrize("folder", ["inbatch_sasrec_e2e_text", "bce_text/main-end2end-dssm"])
def test_resume_equals_uninterrupted(tmp_path, folder, capsys):
    runs = str(tmp_path / "runs")
    for args in (["--epoch", "3", "--label", "full"], ["--epoch", "1", "--label", "split"],
                 ["--epoch", "3", "--label", "split", "--resume"]):
        code, _, err = run_in_process(folder, "train", *args, "--runs_dir", runs, capsys=capsys)
        assert code == 0, err
    assert_same_run(tmp_path / "runs" / "full", tmp_path / "runs" / "split")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--epoch", "4", "--runs_dir", str(runs)]
    assert run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--label", "full", capsys=capsys)[0] == 0
    process = subprocess.Popen([sys.executable, str(REPO / "inbatch_sasrec_e2e_text/train_id.py"), *args,
                                "--label", "killed"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = runs / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(metrics.read_text().splitlines())
    assert 1 <= done < 4, "the run was not killed midway"
    assert run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--label", "killed", "--resume",
                          capsys=capsys)[0] == 0
    assert_same_run(runs / "full", runs / "killed")
    assert not list((runs / "killed").glob(".*tmp*"))


def test_gradient_accumulation_halves_the_optimizer_steps(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, _, err = run_in_process("bce_text/main-end2end", "train", "--epoch", "2", "--batch_size", "32",
                                  "--accumulation_steps", "2", "--runs_dir", str(runs), "--label", "acc",
                                  capsys=capsys)
    assert code == 0, err
    log = (runs / "acc" / "train.log").read_text()
    assert "15 optimizer steps per epoch" in log                     # 943 users / 32 = 30 batches
    assert [json.loads(line)["epoch"] for line in (runs / "acc" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
