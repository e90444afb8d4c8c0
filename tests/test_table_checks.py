"""A number in a table is the number of the files it claims: scripts/results_table.py checks each
run against its files (morec/run_identity.py) on real ml-100k runs (one epoch each): a checkpoint
changed after its test, a test_ranks.npz that is not the test's own, a run reached twice, two data
sets under one name and values of the wrong type are refused or counted once, in one line."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_in_process

sys.path.insert(0, str(REPO / "scripts"))
from morec.errors import InputError  # noqa: E402
from morec.report.aa_check import aa_check  # noqa: E402
from morec.report.rows import table_rows  # noqa: E402
from morec.report.run_files import load_runs  # noqa: E402
from morec.report.table_text import markdown  # noqa: E402
from test_results_table import fake_run  # noqa: E402

FOLDER = "inbatch_sasrec_e2e_text"
ARGS = ["--epoch", "1", "--progress", "false"]


def train_and_test(runs, label, seed, *extra):
    for mode in ("train", "test"):
        code, _, err = run_in_process(FOLDER, mode, *ARGS, "--runs_dir", str(runs), "--label", label,
                                      "--seed", str(seed), *extra)
        assert code == 0, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """runs/: seeds 1 and 2 on a copy of ml-100k; other/: seed 3 on the same folder after its users
    file was changed (user 1's last two items swapped: same users, same items, another test target)."""
    root = tmp_path_factory.mktemp("table_checks")
    data = root / "data" / "ml-100k"
    data.mkdir(parents=True)
    for name in ("items.tsv", "users.tsv"):
        shutil.copy(REPO / "dataset" / "ml-100k" / name, data / name)
    train_and_test(root / "runs", "s1", 1, "--root_data_dir", str(root / "data"))
    train_and_test(root / "runs", "s2", 2, "--root_data_dir", str(root / "data"))
    lines = (data / "users.tsv").read_text().splitlines()
    user, items = lines[0].split("\t")
    items = items.split()
    lines[0] = user + "\t" + " ".join(items[:-2] + items[-1:] + items[-2:-1])
    (data / "users.tsv").write_text("\n".join(lines) + "\n")
    train_and_test(root / "other", "s3", 3, "--root_data_dir", str(root / "data"))
    return root


@pytest.fixture
def runs(trained, tmp_path):
    """A copy of the two ml-100k runs (each test damages its own)."""
    return shutil.copytree(trained / "runs", tmp_path / "runs")


def table(*folders, capsys=None):
    """(rows, stderr) of results_table on `folders`."""
    rows = table_rows(load_runs(list(folders)), resamples=99)
    return rows, capsys.readouterr().err if capsys else ""


def strip_records(run):
    """The run as a test from before the records left it: no checkpoint / per-user digest."""
    result = json.loads((run / "test_metrics.json").read_text())
    del result["checkpoint"], result["per_user_sha256"]
    (run / "test_metrics.json").write_text(json.dumps(result))
    with np.load(run / "test_ranks.npz") as saved:
        arrays = {k: saved[k] for k in ("h", "t", "user", "repeat")}
    np.savez(run / "test_ranks.npz", **arrays)


def test_the_test_records_its_checkpoint_and_per_user_digest(runs):
    from morec.run_identity import ranks_digest
    run = runs / "s1"
    result = json.loads((run / "test_metrics.json").read_text())
    best = (run / "checkpoint_best.pt").read_bytes()
    assert result["checkpoint"] == {"file": "checkpoint_best.pt", "bytes": len(best),
                                    "sha256": hashlib.sha256(best).hexdigest()}
    with np.load(run / "test_ranks.npz", allow_pickle=False) as saved:
        assert str(saved["checkpoint_sha256"]) == result["checkpoint"]["sha256"]
        assert result["per_user_sha256"] == ranks_digest(saved["h"], saved["t"], saved["user"], saved["repeat"])


def test_verified_runs_give_the_table_of_unverified_ones_without_a_warning(runs, tmp_path, capsys):
    """The checks change no number: the same runs without their records give the same table; only
    the old-style runs are named on stderr as unverifiable."""
    rows, err = table(runs, capsys=capsys)
    assert "warning" not in err and [r["n"] for r in rows] == [2]
    old = shutil.copytree(runs, tmp_path / "old")
    for run in old.iterdir():
        strip_records(run)
    old_rows, err = table(old, capsys=capsys)
    assert "warning: 2 run(s) tested before test_metrics.json recorded the checkpoint: their test cannot" in err
    assert markdown(old_rows) == markdown(rows)


def test_checkpoint_changed_after_the_test_is_refused(runs, capsys):
    shutil.copy(runs / "s2" / "checkpoint_best.pt", runs / "s1" / "checkpoint_best.pt")   # replaced
    with pytest.raises(InputError, match=r"s1/checkpoint_best.pt is not the checkpoint its test evaluated .*"
                                         r"re-run the run's test script \(test_\*.py --label s1\)"):
        table(runs)
    (runs / "s1" / "checkpoint_best.pt").unlink()                       # deleted to save space: accepted
    rows, err = table(runs, capsys=capsys)
    assert rows[0]["n"] == 2 and "warning: 1 run(s) without checkpoint_best.pt (deleted?)" in err


def test_checkpoint_trained_further_is_refused(runs):
    """--resume with a higher --epoch writes a new best checkpoint (when an epoch is better; here
    the checkpoint is re-saved as a further epoch would: other bytes, same file name)."""
    import torch
    best = runs / "s2" / "checkpoint_best.pt"
    checkpoint = torch.load(best, weights_only=True)
    torch.save({**checkpoint, "epoch": checkpoint["epoch"] + 1}, best)
    with pytest.raises(InputError, match="s2/checkpoint_best.pt is not the checkpoint its test evaluated"):
        table(runs)


def test_run_resumed_after_its_test_is_refused_when_its_best_checkpoint_changed(trained, tmp_path):
    """A real --resume to a third epoch after the test writes a better epoch's checkpoint_best.pt:
    the test results in the folder are of the first epoch's."""
    other = shutil.copytree(trained / "other", tmp_path / "other")
    before = (other / "s3" / "checkpoint_best.pt").read_bytes()
    code, _, err = run_in_process(FOLDER, "train", "--epoch", "3", "--progress", "false", "--resume", "true",
                                  "--runs_dir", str(other), "--label", "s3", "--seed", "3",
                                  "--root_data_dir", str(trained / "data"))
    assert code == 0, err
    assert len((other / "s3" / "metrics.jsonl").read_text().splitlines()) == 3
    history = [json.loads(line) for line in (other / "s3" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["valid"]["HR@10"] > history[0]["valid"]["HR@10"]      # a better epoch: a new best
    assert (other / "s3" / "checkpoint_best.pt").read_bytes() != before
    with pytest.raises(InputError, match="s3/checkpoint_best.pt is not the checkpoint its test evaluated"):
        table(other)


@pytest.mark.parametrize("damage, message", [
    ("random", r"s1/test_ranks.npz cannot be read \(not an .npz archive: refused unread\)"),
    ("truncated", r"s1/test_ranks.npz cannot be read \(BadZipFile"),
    ("empty", r"s1/test_ranks.npz cannot be read \(EOFError"),
    ("npy", r"s1/test_ranks.npz cannot be read \(ValueError: a single array"),
    ("other_run", r"s1/test_ranks.npz is not the file its test wrote"),
    ("float_h", r"s1/test_ranks.npz does not hold the test's per-user arrays"),
])
def test_foreign_or_unreadable_ranks_are_refused_for_every_run(runs, damage, message):
    """Refused even where no paired test reads them (a row without an IDRec baseline)."""
    path = runs / "s1" / "test_ranks.npz"
    if damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").rename(path)
    elif damage == "other_run":
        shutil.copy(runs / "s2" / "test_ranks.npz", path)
    else:
        with np.load(path) as saved:
            arrays = {k: saved[k] for k in saved.files}
        np.savez(path, **{**arrays, "h": arrays["h"].astype(float)})
    with pytest.raises(InputError, match=message) as refused:
        table(runs)
    assert "\n" not in str(refused.value)


def test_other_runs_ranks_with_its_test_metrics_are_refused(runs):
    """Both test files of s2 copied into s1: they belong to s2's checkpoint, not s1's."""
    for name in ("test_ranks.npz", "test_metrics.json"):
        shutil.copy(runs / "s2" / name, runs / "s1" / name)
    with pytest.raises(InputError, match="s1/checkpoint_best.pt is not the checkpoint its test evaluated"):
        table(runs)


def test_a_run_reached_twice_counts_once(runs, tmp_path, capsys):
    (tmp_path / "link").symlink_to(runs / "s1", target_is_directory=True)
    rows, err = table(runs, tmp_path / "link", runs / ".." / "runs", capsys=capsys)
    assert [(r["n"], r["seeds"]) for r in rows] == [(2, "1 2")] and rows[0]["runs"] == "s1 s2"
    assert "counted once: 3 run folder(s) reached twice" in err and f"{tmp_path / 'link'} is {runs / 's1'}" in err


def test_a_folder_of_links_to_run_folders_is_read_and_a_link_loop_ends(runs, tmp_path, capsys):
    """Runs gathered as links in a folder (e.g. the fp32 and bf16 runs of one system) are found; a
    link back to an ancestor does not walk forever, and a run reached twice still counts once."""
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for name in ("s1", "s2"):
        (gathered / name).symlink_to(runs / name, target_is_directory=True)
    (gathered / "loop").symlink_to(gathered, target_is_directory=True)
    rows, err = table(gathered, capsys=capsys)
    assert [(r["n"], r["seeds"]) for r in rows] == [(2, "1 2")]
    assert "counted once" not in err
    (gathered / "again").symlink_to(runs / "s1", target_is_directory=True)
    rows, err = table(gathered, capsys=capsys)
    assert [(r["n"], r["seeds"]) for r in rows] == [(2, "1 2")] and "counted once: 1 run folder(s) reached twice" in err


def test_a_copied_run_is_refused(runs):
    shutil.copytree(runs / "s1", runs / "s1-copy")
    with pytest.raises(InputError, match=r"s1 and .*s1-copy hold the same trained run .* counts once"):
        table(runs)


def test_two_runs_of_one_row_with_one_seed_are_refused(tmp_path):
    """Runs without per-user files (no paired test) were averaged as two seeds."""
    fake_run(tmp_path / "exp", "a", {"item_tower": "id", "seed": 1}, 0.10, 0.05)
    fake_run(tmp_path / "exp", "b", {"item_tower": "id", "seed": 1}, 0.12, 0.06)
    with pytest.raises(InputError, match=r"exp/a and .*exp/b are two runs of one row with the same seed 1"):
        table(tmp_path / "exp")


def test_runs_on_other_data_under_one_name_never_share_a_row(runs, trained):
    """Seed 3, trained after the users file changed, would join seeds 1 and 2 as one row of three seeds."""
    with pytest.raises(InputError, match=r"(runs/s1 and .*other/s3|other/s3 and .*runs/s1) were trained on different "
                                         r"data under one data set name 'ml-100k' \(users sha256 [0-9a-f]{12} vs "
                                         r"[0-9a-f]{12}\)"):
        table(runs, trained / "other")
    with pytest.raises(InputError, match="trained on different data under one data set name 'ml-100k'"):
        aa_check([runs, trained / "other"])                  # one system of 3 seeds


@pytest.mark.parametrize("file, key, value, message", [
    ("config.json", "seed", "1", "config.json: seed holds '1' (a str), not an int"),
    ("config.json", "lr", [0.001], "config.json: lr holds [0.001] (a list), not a number"),
    ("config.json", "setting", "fp32", "config.json: setting holds 'fp32' (a str)"),
    ("config.json", "data_identity", [], "config.json: data_identity holds [] (a list)"),
    ("test_metrics.json", "test.HR@10", "0.05", "test_metrics.json: test.HR@10 holds '0.05' (a str), not a share"),
    ("test_metrics.json", "best_epoch", 1.5, "test_metrics.json: best_epoch holds 1.5 (a float), not an int"),
    ("test_metrics.json", "num_users", None, "test_metrics.json: num_users holds None"),
    ("test_metrics.json", "cold_start", [1], "test_metrics.json: cold_start holds [1] (a list)"),
    ("test_metrics.json", "checkpoint", "x", "test_metrics.json: checkpoint holds 'x' (a str)"),
])
def test_a_value_of_the_wrong_type_is_one_line(runs, file, key, value, message):
    path = runs / "s1" / file
    values = json.loads(path.read_text())
    *parents, last = key.split(".")
    target = values
    for part in parents:
        target = target[part]
    target[last] = value
    path.write_text(json.dumps(values))
    with pytest.raises(InputError) as refused:
        table(runs)
    assert message in str(refused.value) and str(runs / "s1") in str(refused.value)


def test_cli_refusal_is_one_error_line(runs):
    (runs / "s2" / "test_ranks.npz").write_bytes(b"\x93NUMPY garbage")
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), str(runs)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("error: ") == 1 and "s2/test_ranks.npz cannot be read" in result.stderr


def test_a_history_value_of_the_wrong_type_is_one_line(runs):
    path = runs / "s2" / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["train_seconds"] = "12.5"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=r"s2/metrics.jsonl, line 1: train_seconds is not a number; the file is damaged"):
        table(runs)


@pytest.mark.parametrize("column, value, message", [
    ("n", "three", "line 3: n holds 'three', not a whole number >= 1"),
    ("n", "2.5", "line 3: n holds '2.5', not a whole number >= 1"),
    ("hr10_mean", "[1]", "line 3: hr10_mean holds '[1]', not a number"),
    ("ndcg10_std", "", "line 3: ndcg10_std holds an empty cell, not a number"),
])
def test_summary_welch_refuses_a_value_of_the_wrong_type_in_one_line(tmp_path, column, value, message):
    """scripts/summary_welch.py reads a table's CSV: a damaged cell is one line naming it, not a traceback."""
    import pandas as pd
    import summary_welch
    frame = pd.read_csv(REPO / "docs" / "studies" / "ml-100k" / "q3_ts_vs_e2e.csv", dtype=str, keep_default_na=False)
    frame.loc[1, column] = value
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="t.csv, " + re.escape(message)):
        summary_welch.main([str(tmp_path / "t.csv"), "--out", str(tmp_path / "w.md")])


def test_a_study_tests_again_a_run_whose_checkpoint_changed(runs):
    """scripts/study_common.py: a run whose test is of an earlier checkpoint is not 'done'."""
    import study_common
    from morec.config import Config, make_config
    known = set(Config.__dataclass_fields__)
    saved = json.loads((runs / "s1" / "config.json").read_text())
    cfg = make_config({k: v for k, v in saved.items() if k in known})
    assert study_common.tested(cfg, runs / "s1")
    shutil.copy(runs / "s2" / "checkpoint_best.pt", runs / "s1" / "checkpoint_best.pt")
    assert not study_common.tested(cfg, runs / "s1")
