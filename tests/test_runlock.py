"""The run-folder lock: one process at a time in a run folder."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO
from morec.errors import InputError
from morec.runlock import run_lock, source_lock


def test_a_held_folder_is_refused_naming_folder_and_process(tmp_path):
    folder = tmp_path / "runs" / "label"
    with run_lock(folder):
        with pytest.raises(InputError, match=f"{folder} is in use by process {os.getpid()}"):
            with run_lock(folder):
                pass
    with run_lock(folder):                       # released: free again
        pass



def test_a_source_run_still_training_is_refused_and_a_read_holds_off_a_new_run(tmp_path):
    folder = tmp_path / "runs" / "source"
    with run_lock(folder):                       # the source trains: --init_from it is refused
        with pytest.raises(InputError, match=f"--init_from x: the run folder {folder} is in use by process "
                                             f"{os.getpid()} .*checkpoint_best.pt is not final.*wait for it"):
            with source_lock(folder, "--init_from x"):
                pass
        (folder / "config.json").write_text("{}")      # keeps the folder after the lock is released
    with source_lock(folder, "--init_from x"):          # no .lock (nobody trains there): read freely
        pass
    (folder / ".lock").write_text("")
    with source_lock(folder, "--init_from x"):          # while it is read, no run starts there
        with pytest.raises(InputError, match="is in use by"):
            with run_lock(folder):
                pass
    with run_lock(folder):                               # read done: free again
        pass

def test_created_folders_are_removed_when_left_empty(tmp_path):
    folder = tmp_path / "runs" / "label"
    with run_lock(folder):
        assert (folder / ".lock").exists()
    assert not (tmp_path / "runs").exists()
    with run_lock(folder):
        (folder / "config.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


def test_ranks_other_than_0_take_no_lock(tmp_path):
    folder = tmp_path / "label"
    with run_lock(folder):
        with run_lock(folder, take=False):
            pass


def test_the_lock_of_a_killed_process_is_free(tmp_path):
    folder = tmp_path / "label"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
        "from morec.runlock import run_lock\n"
        "with run_lock(Path(sys.argv[2])):\n    print('held', flush=True); time.sleep(60)"),
        str(REPO), str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(InputError, match=f"in use by process {holder.pid}"):
        with run_lock(folder):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / ".lock").exists()           # left behind by kill -9, but no longer locked
    with run_lock(folder):
        pass


def test_an_unwritable_place_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write to the run folder"):
        with run_lock(blocker / "label"):
            pass


def test_resume_removes_the_temp_files_of_a_killed_writer_only(tmp_path, capsys):
    """A SIGKILL during a checkpoint write leaves `.checkpoint_last.pt.tmpPID`; the next run in the
    folder (holding its lock) removes it, but not a temp file whose writer still runs."""
    from conftest import run_in_process
    runs = tmp_path / "runs"
    args = ["--epoch", "1", "--batch_size", "256", "--runs_dir", str(runs), "--label", "r", "--progress", "false"]
    assert run_in_process("inbatch_sasrec_e2e_text", "train", *args, capsys=capsys)[0] == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = runs / "r" / f".checkpoint_last.pt.tmp{dead.pid}"
    live = runs / "r" / f".test_metrics.json.tmp{os.getpid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", *args, "--resume", "--epoch", "2",
                                  capsys=capsys)
    assert code == 0, err
    assert not stale.exists() and live.exists()
