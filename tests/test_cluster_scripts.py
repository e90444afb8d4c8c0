"""scripts/submit_grid.py and scripts/slurm/: the sbatch commands of a grid, and the templates' signal
handling, run with stand-ins for srun / scontrol / python (no SLURM here)."""
import importlib.util
import os
import runpy
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from morec.launch import run_dirs

SLURM = REPO / "scripts" / "slurm"
TRAIN = REPO / "bce_text" / "main-end2end" / "train_id.py"

spec = importlib.util.spec_from_file_location("submit_grid", REPO / "scripts" / "submit_grid.py")
submit_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(submit_grid)


def sbatch_lines(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if line.startswith("sbatch ")]


def value_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_dry_run_prints_one_job_per_grid_point_with_the_run_labels(capsys):
    overrides = ["--lr", "1e-3,5e-4", "--embedding_dim", "32"]
    code = submit_grid.main([str(TRAIN), "--gpus", "2", "--time", "1:00:00", "--resume", "--dry_run", *overrides])
    assert code == 0
    jobs = sbatch_lines(capsys.readouterr().out)
    params = runpy.run_path(str(TRAIN), run_name="params_only")["params"]
    expected = [run_dir.name for _, run_dir in run_dirs(params, str(TRAIN), overrides)]
    assert len(jobs) == 2 and len(set(expected)) == 2
    for job, label, lr in zip(jobs, expected, ("0.001", "0.0005")):
        template = next(i for i, a in enumerate(job) if a.endswith(".sbatch"))
        assert job[template] == str(SLURM / "train_1node.sbatch")
        assert "--gpus-per-node=2" in job and "--time=1:00:00" in job and f"--job-name={label}" in job
        args = job[template + 2:]
        assert job[template + 1] == str(TRAIN)
        assert value_after(args, "--lr") == lr and value_after(args, "--embedding_dim") == "32"
        assert value_after(args, "--label") == label and "--resume" in args
        # what the job will run finds the same single folder
        assert [d.name for _, d in run_dirs(params, str(TRAIN), args)] == [label]


def test_script_grid_and_multinode(tmp_path, capsys):
    script = tmp_path / "train_grid.py"
    script.write_text("params = dict(dataset='ml-100k', loss='bce', seed=[1, 2], drop_rate=0.2, epoch=3)\n")
    code = submit_grid.main([str(script), "--nodes", "2", "--gpus", "4", "--dry_run", "--batch_size", "32"])
    assert code == 0
    jobs = sbatch_lines(capsys.readouterr().out)
    expected = [d.name for _, d in run_dirs({"dataset": "ml-100k", "loss": "bce", "seed": [1, 2], "drop_rate": 0.2,
                                             "epoch": 3}, str(script), ["--batch_size", "32"])]
    assert [value_after(job, "--label") for job in jobs] == expected
    assert [value_after(job, "--seed") for job in jobs] == ["1", "2"]          # the script's grid field
    for job in jobs:
        assert str(SLURM / "train_multinode.sbatch") in job and "--nodes=2" in job and "--gpus-per-node=4" in job
        assert value_after(job, "--batch_size") == "32" and "--drop_rate" not in job and "--resume" not in job


def test_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                      # no sbatch
    assert submit_grid.main([str(TRAIN), "--lr", "1e-3"]) == 2
    assert "sbatch not found on PATH" in capsys.readouterr().err
    assert submit_grid.main([str(TRAIN), "--dry_run", "--nproc_per_node", "2"]) == 2
    assert "set by the sbatch template" in capsys.readouterr().err
    assert submit_grid.main([str(TRAIN), "--dry_run", "--lr", "fast"]) == 2
    assert "--lr expects a float" in capsys.readouterr().err


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_submission_calls_sbatch(tmp_path, capsys, monkeypatch):
    log = tmp_path / "sbatch.log"
    executable(tmp_path / "sbatch", f'#!/bin/sh\necho "$@" >> {log}\necho "Submitted batch job 42"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert submit_grid.main([str(TRAIN), "--seed", "1,2"]) == 0
    out = capsys.readouterr().out
    assert out.count("Submitted batch job 42") == 2
    assert log.read_text().splitlines() == [" ".join(job[1:]) for job in sbatch_lines(out)]


@pytest.mark.parametrize("path", sorted(SLURM.iterdir()), ids=lambda p: p.name)
def test_templates_parse(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


# --- signals: stand-ins for the trainer, the torchrun agent, srun and scontrol ---------------------

TRAINER = f"""#!{sys.executable}
# stand-in for `python SCRIPT ...`: records its arguments; with FAKE_AGENT=1 it starts a child whose
# command line names torch.distributed.run (like the launcher does) and waits for it
import os, signal, subprocess, sys, time
log = os.environ["FAKE_LOG"]
def note(text):
    with open(log, "a") as f:
        f.write(text + "\\n")
if os.environ.get("FAKE_AGENT") == "1" and "agent" not in sys.argv:
    note("launcher " + " ".join(sys.argv[1:]))
    child = subprocess.Popen([sys.executable, __file__, "agent", "torch.distributed.run"])
    raise SystemExit(child.wait())
who = "agent" if "agent" in sys.argv else "trainer"
if who == "trainer":
    note("trainer " + " ".join(sys.argv[1:]))
stopping = []
def stop(signum, frame):                      # like the training loop: finish the step, checkpoint, exit
    note(f"{{who}} got {{signal.Signals(signum).name}}")
    stopping.append(time.time())
signal.signal(signal.SIGTERM, stop)
note(f"{{who}} ready")
deadline = time.time() + 20
while time.time() < deadline and not (stopping and time.time() > stopping[0] + 0.5):
    time.sleep(0.01)                          # a second signal within 0.5 s is counted too
if stopping:
    raise SystemExit(1 if who == "agent" else 143)
note(f"{{who}} finished")
"""


def descendants(pid: int) -> list[int]:
    rows = [line.split() for line in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True,
                                                    text=True).stdout.splitlines()]
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [int(p) for p, pp in rows if int(pp) == parent]
        found += kids
        todo += kids
    return found


def run_and_signal(cmd: list[str], env: dict, log: Path, targets, sig=signal.SIGUSR2) -> int:
    """Start `cmd`, wait until the stand-in is ready, send `sig` to targets(pid), return the exit code."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 15
    while " ready" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.05)
    for pid in targets(proc.pid):
        os.kill(pid, sig)
    out, _ = proc.communicate(timeout=30)
    print(out)
    return proc.returncode


@pytest.fixture
def fakes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    executable(bin_dir / "srun", f'#!/bin/bash\necho "srun $*" >> {calls}\n'
                                 'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    executable(bin_dir / "scontrol", f'#!/bin/bash\necho "scontrol $*" >> {calls}\n'
                                     '[ "$1 $2" = "show hostnames" ] && printf "gpu07\\ngpu08\\n"\nexit 0\n')
    trainer = executable(tmp_path / "fake_python", TRAINER)
    log = tmp_path / "trainer.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(trainer),
           "FAKE_LOG": str(log), "SLURM_JOB_ID": "77", "SLURM_GPUS_PER_NODE": "gpu:4", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_CPUS_PER_TASK": "8"}
    return env, log, calls


def test_1node_template_forwards_the_warning_once_and_requeues(fakes):
    env, log, calls = fakes
    # the warning goes to the job step: run_node.sh and everything below it, not the batch shell
    code = run_and_signal(["bash", str(SLURM / "train_1node.sbatch"), str(TRAIN), "--lr", "0.001", "--resume"],
                          env, log, descendants)
    lines = log.read_text().splitlines()
    assert lines[0] == f"trainer {TRAIN} --nproc_per_node 4 --lr 0.001 --resume"
    assert lines.count("trainer got SIGTERM") == 1 and "trainer finished" not in lines
    assert "scontrol requeue 77" in calls.read_text() and code == 0
    assert "srun --ntasks=1 --nodes=1 --cpus-per-task=8" in calls.read_text()


def test_multinode_template_rendezvous_and_no_requeue_without_resume(fakes):
    env, log, calls = fakes
    code = run_and_signal(["bash", str(SLURM / "train_multinode.sbatch"), str(TRAIN), "--seed", "3"],
                          env, log, descendants)
    lines = log.read_text().splitlines()
    assert lines[0] == (f"trainer {TRAIN} --nnodes 2 --nproc_per_node 4 --rdzv_endpoint gpu07:29500 --seed 3")
    assert lines.count("trainer got SIGTERM") == 1
    assert "requeue" not in calls.read_text() and code == 143


def test_run_node_sends_one_sigterm_to_the_torchrun_agent(fakes):
    """A job-wide SIGUSR2 (wrapper, launcher, agent all get it): the launcher and the agent ignore it,
    the wrapper sends the agent one SIGTERM; the launcher survives and reports the agent's exit."""
    env, log, _ = fakes
    env = {**env, "FAKE_AGENT": "1"}
    code = run_and_signal(["bash", str(SLURM / "run_node.sh"), str(TRAIN), "--nproc_per_node", "2"], env, log,
                          lambda pid: [pid, *descendants(pid)])
    lines = log.read_text().splitlines()
    assert lines[0] == f"launcher {TRAIN} --nproc_per_node 2"
    assert lines.count("agent got SIGTERM") == 1 and "agent finished" not in lines
    assert code == 143


def test_run_node_leaves_a_job_wide_sigterm_to_the_trainer(fakes):
    """Preemption / scancel: every process gets SIGTERM; the wrapper must not add a second one."""
    env, log, _ = fakes
    code = run_and_signal(["bash", str(SLURM / "run_node.sh"), str(TRAIN)], env, log,
                          lambda pid: [pid, *descendants(pid)], sig=signal.SIGTERM)
    assert log.read_text().splitlines().count("trainer got SIGTERM") == 1
    assert code == 143
