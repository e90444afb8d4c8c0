"""Fault drill: kill, preempt and feed broken input to real ml-100k runs; print what happened.

    python scripts/fault_drill.py [--only NAME ...]

Each case runs end to end (processes started and killed like a cluster would, or the library
called with one fault injected) and is judged against what the README promises. The output is a
table: case, expected, observed, pass, and exits 1 if any case failed (2 for an unknown --only
name). tests/test_faults.py runs every case as a test.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = next(p for p in Path(__file__).resolve().parents if (p / "morec").is_dir())
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")       # tiny models: one thread is fastest and exact

import torch  # noqa: E402

from morec.checkpoint import load_checkpoint  # noqa: E402
from morec.launch import main  # noqa: E402

SCRIPT = "inbatch_sasrec_e2e_text/train_id.py"
RUN_ARGS = ["--epoch", "4", "--batch_size", "32"]     # ~30 steps per epoch, a few seconds a run


@dataclass
class Outcome:
    observed: str
    passed: bool


@dataclass
class Case:
    name: str
    expected: str
    run: Callable[[Path], Outcome]


# ----------------------------------------------------------------------------- running scripts

def run_in_process(args: list[str], script: str = SCRIPT) -> tuple[int, str]:
    """`python script ARGS` inside this process; returns (exit code, stderr) (run_mode "train")."""
    code, err, _ = run_mode("train", args, script)
    return code, err


def error_line(stderr: str) -> str:
    """The `error: ...` line of a script's stderr (logs go there too)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return (lines[-1] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "")[:150]


def start_process(args: list[str], script: str = SCRIPT) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / script), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_signature(run: Path) -> tuple:
    """What must match between two runs: per-epoch losses and metrics, best epoch, final weights."""
    history = [(r["epoch"], r["train_loss"], r["valid"])
               for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    last = load_checkpoint(run / "checkpoint_last.pt")
    best = load_checkpoint(run / "checkpoint_best.pt")
    weights = tuple((name, tensor.numpy().tobytes()) for name, tensor in sorted(last["model"].items()))
    return history, best["epoch"], weights


def reference_run(root: Path) -> tuple:
    """The uninterrupted run, made once beside the cases' folders and shared by them."""
    if not (root.parent / "reference_run" / "checkpoint_last.pt").exists():
        code, err = run_in_process([*RUN_ARGS, "--runs_dir", str(root.parent), "--label", "reference_run"])
        assert code == 0, err
    return run_signature(root.parent / "reference_run")


def log_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen, seconds: float = 300) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and process.poll() is None:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# ----------------------------------------------------------------------------- kill and resume

def sigkill_at_random_moments(root: Path, seed: int = 0, kills: int = 4) -> Outcome:
    """SIGKILL the run at random moments (in a step, in evaluation, in a checkpoint write),
    resume each time, and compare the finished run with an uninterrupted one."""
    reference = reference_run(root)
    rng = random.Random(seed)
    args = [*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", "killed"]
    log = root / "runs" / "killed" / "train.log"
    moments = []
    for attempt in range(kills):
        before = log_lines(log)
        process = start_process(args + (["--resume"] if attempt else []))
        wait_for(lambda: log_lines(log) > before, process)    # training (re)started
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            moments.append(f"{delay:.2f}s")
        process.wait()
    code, err = run_in_process(args + ["--resume"])
    same = code == 0 and run_signature(root / "runs" / "killed") == reference
    stray = [p.name for p in (root / "runs" / "killed").glob(".*tmp*")]
    return Outcome(f"killed {len(moments)}x ({', '.join(moments)} into training); resumed run "
                   f"{'identical' if same else 'DIFFERENT'}; stray temp files {stray or 'none'}",
                   same and not stray and len(moments) >= 2)


def sigterm_saves_and_resumes(root: Path) -> Outcome:
    """SIGTERM mid-epoch (cluster preemption): checkpoint of the epoch in progress, exit 143,
    then --resume continues to the same result as an uninterrupted run."""
    reference = reference_run(root)
    args = [*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", "preempted"]
    metrics = root / "runs" / "preempted" / "metrics.jsonl"
    process = start_process(args)
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, process)
    time.sleep(0.2)                                            # into epoch 2
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    partial = load_checkpoint(root / "runs" / "preempted" / "checkpoint_last.pt").get("partial")
    step = partial["progress"]["step"] if partial else None
    code, err = run_in_process(args + ["--resume"])
    same = code == 0 and run_signature(root / "runs" / "preempted") == reference
    return Outcome(f"exit {process.returncode}, saved at step {step}, message "
                   f"{'names --resume' if '--resume' in stderr else repr(stderr[-80:])}; resumed run "
                   f"{'identical' if same else 'DIFFERENT'}",
                   process.returncode == 143 and step is not None and same)


def kill_during_checkpoint_write(root: Path) -> Outcome:
    """A kill between writing a checkpoint's bytes and renaming it leaves a half-written temp
    file and the previous checkpoint; resuming ignores the temp file and ends identical."""
    reference = reference_run(root)
    runs = root / "runs"
    args = [*RUN_ARGS, "--runs_dir", str(runs), "--label", "torn"]
    code, err = run_in_process([*args[:1], "2", *args[2:]])   # --epoch 2 first
    assert code == 0, err
    good = (runs / "torn" / "checkpoint_last.pt").read_bytes()
    torn = runs / "torn" / ".checkpoint_last.pt.tmp4242"
    torn.write_bytes(good[: len(good) // 2])                   # the write that was cut off
    code, err = run_in_process(args + ["--resume"])
    same = code == 0 and run_signature(runs / "torn") == reference
    return Outcome(f"resume with a torn temp file beside the checkpoint: exit {code}, result "
                   f"{'identical' if same else 'DIFFERENT'}", same)


# ----------------------------------------------------------------------------- bad data

def bad_data_case(users: list[str], items: list[str], fragment: str) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        folder = root / "data" / "bad"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "items.tsv").write_bytes(b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in items))
        (folder / "users.tsv").write_bytes(b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in users))
        code, err = run_in_process(["--root_data_dir", str(root / "data"), "--dataset", "bad",
                                    "--runs_dir", str(root / "runs")])
        clean = code == 2 and err.startswith("error: ") and "Traceback" not in err
        return Outcome(f"exit {code}: {error_line(err)}",
                       clean and fragment in err and not (root / "runs").exists())
    return run


ITEMS = [f"i{k}\ttitle {k}" for k in range(1, 7)]
USERS = [f"u{k}\ti1 i2 i3 i4 i5 i6" for k in range(1, 4)]


def odd_but_valid_data_case(users: bytes, items: bytes, users_expected: int) -> Callable[[Path], Outcome]:
    """Files in a valid but unusual shape (old-Mac line ends, a BOM, trailing blank lines): the
    run trains on every user of the file."""
    def run(root: Path) -> Outcome:
        folder = root / "data" / "odd"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "items.tsv").write_bytes(items)
        (folder / "users.tsv").write_bytes(users)
        code, err = run_in_process(["--root_data_dir", str(root / "data"), "--dataset", "odd", "--epoch", "1",
                                    "--runs_dir", str(root / "runs"), "--label", "odd"])
        log = root / "runs" / "odd" / "train.log"
        text = log.read_text() if log.exists() else ""
        read = next((line.split(": ", 1)[1].split(",")[0] for line in text.splitlines() if " users, " in line), "?")
        return Outcome(f"exit {code}: {error_line(err) if code else 'trained on ' + read}",
                       code == 0 and read == f"{users_expected} users")
    return run


def directory_as_users_file(root: Path) -> Outcome:
    """--behaviors naming a folder: reported as a folder, not as 'not found'."""
    folder = root / "data" / "dir"
    (folder / "users.tsv").mkdir(parents=True)
    (folder / "items.tsv").write_text("".join(line + "\n" for line in ITEMS))
    code, err = run_in_process(["--root_data_dir", str(root / "data"), "--dataset", "dir",
                                "--runs_dir", str(root / "runs")])
    return Outcome(f"exit {code}: {error_line(err)}", code == 2 and "users.tsv is a directory" in err
                   and not (root / "runs").exists())


def unwritable_output(root: Path) -> Outcome:
    """The output folder cannot be created: the run stops before training starts."""
    blocker = root / "not_a_folder"
    blocker.write_text("a file where the runs folder should be\n")
    code, err = run_in_process([*RUN_ARGS, "--runs_dir", str(blocker / "runs")])
    return Outcome(f"exit {code}: {error_line(err)}",
                   code == 2 and "cannot write to the run folder" in err)


def corrupt_checkpoint(root: Path) -> Outcome:
    """A damaged checkpoint_last.pt: resume names the file and the fix."""
    args = ["--epoch", "1", "--runs_dir", str(root / "runs"), "--label", "damaged"]
    assert run_in_process(args)[0] == 0
    last = root / "runs" / "damaged" / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    code, err = run_in_process(args + ["--resume"])
    return Outcome(f"exit {code}: {error_line(err)}", code == 2 and "cannot be read" in err and str(last) in err)


def failed_checkpoint_write(root: Path) -> Outcome:
    """Disk full while writing the epoch-2 checkpoint: clear error, epoch-1 checkpoint intact."""
    import morec.atomic_io as atomic_io
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("checkpoint_last.pt") and sum(str(c).endswith("checkpoint_last.pt") for c in calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    atomic_io.os.replace = failing_replace
    try:
        code, err = run_in_process([*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", "full_disk"])
    finally:
        atomic_io.os.replace = real_replace
    kept = load_checkpoint(root / "runs" / "full_disk" / "checkpoint_last.pt")
    return Outcome(f"exit {code}: {error_line(err)}; kept checkpoint of epoch {kept['epoch']}",
                   code == 2 and "previous checkpoint is intact" in err and kept["epoch"] == 1)


def nan_loss(skip: bool) -> Callable[[Path], Outcome]:
    """A NaN loss at epoch 2, step 3: stop naming the step and keep epoch 1's checkpoint, or
    (with --skip_nonfinite) skip that batch, count it and go on."""
    def run(root: Path) -> Outcome:
        from morec.models.recommender import SASRecRecommender
        real, calls = SASRecRecommender.calculate_loss, {"n": 0}
        steps_per_epoch = 30                                   # 943 users / batch 32

        def poisoned(self, batch, *args, **kwargs):
            loss = real(self, batch, *args, **kwargs)
            calls["n"] += 1
            return loss * float("nan") if calls["n"] == steps_per_epoch + 4 else loss

        SASRecRecommender.calculate_loss = poisoned
        label = "nan_skip" if skip else "nan_stop"
        try:
            code, err = run_in_process([*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", label]
                                       + (["--skip_nonfinite"] if skip else []))
        finally:
            SASRecRecommender.calculate_loss = real
        run_dir = root / "runs" / label
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        kept = load_checkpoint(run_dir / "checkpoint_last.pt")["epoch"]
        if skip:
            skipped = [r["skipped_steps"] for r in records]
            return Outcome(f"exit {code}; skipped steps per epoch {skipped}", code == 0 and skipped == [0, 1, 0, 0])
        return Outcome(f"exit {code}: {error_line(err)}; kept checkpoint of epoch {kept}",
                       code == 2 and "epoch 2, step 3" in err and kept == 1 and len(records) == 1)
    return run


# ----------------------------------------------------------------------------- run folders, values, checkpoints

TEST_SCRIPT = "inbatch_sasrec_e2e_text/test_id.py"


def run_mode(mode: str, args: list[str], script: str = SCRIPT, **changes) -> tuple[int, str, str]:
    """The train (mode 'train') or test ('test') script of `script`'s folder, inside this
    process, its values changed by `changes`; returns (exit code, stderr, stdout)."""
    params = {**runpy.run_path(str(REPO / script), run_name="params_only")["params"], **changes}
    err, out, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(params, mode, str(REPO / script).replace("/train_", f"/{mode}_"), args)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue(), out.getvalue()


def refused(code: int, err: str, fragment: str) -> bool:
    """Exit 2 with one `error:` line holding `fragment`, and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    return code == 2 and len(errors) == 1 and fragment in errors[0] and "Traceback" not in err


NONSENSE = [  # (overrides, what the one error line must say)
    (["--lr", "-1"], "--lr -1.0 must be a finite number > 0"),
    (["--lr", "nan"], "--lr nan must be a finite number > 0"),
    (["--l2_weight", "-1"], "--l2_weight -1.0 must be a finite number >= 0"),
    (["--max_grad_norm", "inf"], "--max_grad_norm inf"),
    (["--drop_rate", "2"], "--drop_rate 2.0 must be in [0, 1)"),
    (["--eval_batch_size", "0"], "--eval_batch_size 0 must be at least 1"),
    (["--patience", "0"], "--patience 0 must be at least 1"),
    (["--accumulation_steps", "0"], "--accumulation_steps 0"),
    (["--num_workers", "-1"], "--num_workers -1"),
    (["--seed", "-1"], "--seed -1"),
    (["--loss", "mse"], "--loss 'mse' must be one of inbatch, bce"),
    (["--device", "tpu"], "--device 'tpu' must be auto, cpu, cuda or cuda:N"),
    (["--model", "gru"], "--model 'gru'"),
    (["--item_tower", "audio"], "--item_tower 'audio'"),
    (["--fusion", "mul"], "--fusion 'mul'"),
    (["--image_norm", "none"], "--image_norm 'none'"),
    (["--news_attributes", "body"], "--news_attributes 'body'"),
    (["--amp_dtype", "fp8"], "--amp_dtype 'fp8'"),
    (["--embedding_dim", "63"], "must be divisible by --num_attention_heads"),
    (["--fusion", "add"], "need a modality item tower"),
    (["--resume", "--overwrite"], "contradict each other"),
    (["--dataset", "data/x"], "pass --root_data_dir data --dataset x"),
    (["--dataset", "ml-100k/"], "drop the trailing slash (--dataset ml-100k)"),
]
NONSENSE_GRIDS = [({"lr": []}, "the grid of lr is an empty list"),
                  ({"seed": [1, 1]}, "grid points 1 and 2 are the same run")]


def nonsense_values(root: Path) -> Outcome:
    """Values that make no sense, and grids that are empty or repeat a run: each refused before
    anything is written, with one `error:` line naming the parameter (exit 2)."""
    accepted = []
    cases = [(args, {}, fragment) for args, fragment in NONSENSE] + \
            [([], changes, fragment) for changes, fragment in NONSENSE_GRIDS]
    for args, changes, fragment in cases:
        code, err, _ = run_mode("train", [*args, "--epoch", "1", "--runs_dir", str(root / "runs")], **changes)
        if not refused(code, err, fragment) or (root / "runs").exists() or "--label" in err:
            accepted.append(f"{' '.join(args) or changes} -> exit {code}: {error_line(err)}")
            shutil.rmtree(root / "runs", ignore_errors=True)
    return Outcome(f"{len(cases) - len(accepted)} of {len(cases)} refused up front"
                   + (f"; not: {accepted}" if accepted else ""), not accepted)


def huge_values(root: Path) -> Outcome:
    """--embedding_dim 1000000 / --max_seq_len 100000 / --batch_size 100000 / --extra_negatives
    100000000: refused by the memory estimate before anything is allocated (or the data loaded),
    naming what needs the memory, and no run folder left."""
    seen, ok = [], True
    for args in (["--embedding_dim", "1000000"], ["--max_seq_len", "100000"], ["--batch_size", "100000"],
                 ["--extra_negatives", "100000000"]):
        start = time.perf_counter()
        code, err, _ = run_mode("train", [*args, "--runs_dir", str(root / "runs")])
        seconds = time.perf_counter() - start
        ok &= refused(code, err, "this run needs at least") and seconds < 10 and not (root / "runs").exists()
        seen.append(f"{' '.join(args)}: exit {code} in {seconds:.1f}s: {error_line(err)[:110]}")
    return Outcome("; ".join(seen), ok)


def same_label_twice(root: Path) -> Outcome:
    """A second run (even with --overwrite) or a test of a label that a running process holds:
    refused naming the folder and the process; the first run finishes with its own files."""
    runs = root / "runs"
    args = [*RUN_ARGS, "--runs_dir", str(runs), "--label", "shared"]
    first = start_process(args + ["--seed", "1"])
    started = wait_for(lambda: log_lines(runs / "shared" / "train.log") >= 1, first)
    code, err, _ = run_mode("train", ["--epoch", "1", "--runs_dir", str(runs), "--label", "shared",
                                      "--seed", "2", "--overwrite"])
    test_code, test_err, _ = run_mode("test", ["--runs_dir", str(runs), "--label", "shared"])
    first.communicate()
    in_use = f"in use by process {first.pid}"
    config = json.loads((runs / "shared" / "config.json").read_text())
    epochs = log_lines(runs / "shared" / "metrics.jsonl")
    return Outcome(f"second train exit {code}: {error_line(err)[:100]}; test during training exit {test_code}; "
                   f"first run exit {first.returncode}, seed {config['seed']}, {epochs} epochs",
                   started and refused(code, err, in_use) and refused(test_code, test_err, in_use)
                   and first.returncode == 0 and config["seed"] == 1 and epochs == 4)


def run_bytes(run: Path) -> dict[str, bytes]:
    """The finished files of a run folder, to check that a refused command left them as they were."""
    return {name: (run / name).read_bytes() for name in ("checkpoint_best.pt", "test_metrics.json", "test_ranks.npz")
            if (run / name).exists()}


def finished_run_kept(root: Path) -> Outcome:
    """A finished run whose checkpoint_last.pt (then both checkpoints) was deleted to save space:
    the same command re-run, or --resume, is refused naming the folder and --overwrite, and leaves
    the best checkpoint and test results as they were; --overwrite refused before it starts the
    folder (a missing --init_from) removes nothing; --overwrite retrains."""
    args = ["--epoch", "1", "--runs_dir", str(root / "runs"), "--label", "done"]
    run = root / "runs" / "done"
    code, err, _ = run_mode("train", args)
    test_code, test_err, _ = run_mode("test", args[2:])
    assert code == 0 and test_code == 0, err + test_err
    seen, ok = [], True
    for deleted in (["checkpoint_last.pt"], ["checkpoint_last.pt", "checkpoint_best.pt"]):
        for name in deleted:
            (run / name).unlink(missing_ok=True)
        before = run_bytes(run)
        for extra, fragment in (([], "holds a finished run"), (["--resume"], "nothing to continue")):
            code, err, _ = run_mode("train", args + extra)
            ok &= refused(code, err, fragment) and str(run) in err and "--overwrite" in err and run_bytes(run) == before
            seen.append(f"{'+'.join(deleted)} deleted, {' '.join(extra) or 're-run'}: exit {code}")
    before = run_bytes(run)            # --overwrite refused before it starts the folder: nothing removed
    code, err, _ = run_mode("train", args + ["--overwrite", "--init_from", str(root / "missing")])
    after = run_bytes(run)
    ok &= refused(code, err, "not found") and after == before
    seen.append(f"--overwrite refused before starting: exit {code}, {len(after)} of {len(before)} files kept")
    code, err, _ = run_mode("train", args + ["--overwrite"])
    ok &= code == 0 and (run / "checkpoint_last.pt").exists() and not (run / "test_metrics.json").exists()
    return Outcome("; ".join(seen) + f"; --overwrite: exit {code}, {error_line(err)[:100]}", ok)


def init_from_own_folder(root: Path) -> Outcome:
    """--init_from naming the run's own folder (with --overwrite, or after checkpoint_last.pt was
    deleted): refused before anything is touched; the source's checkpoint stays."""
    args = ["--epoch", "1", "--runs_dir", str(root / "runs"), "--label", "src"]
    run = root / "runs" / "src"
    code, err, _ = run_mode("train", args)
    assert code == 0, err
    before, seen, ok = run_bytes(run), [], True
    for extra in (["--overwrite"], []):
        if not extra:
            (run / "checkpoint_last.pt").unlink()
        code, err, _ = run_mode("train", args + ["--init_from", str(run), *extra])
        ok &= refused(code, err, "names this run's own folder") and "--label" in err and run_bytes(run) == before
        seen.append(f"{' '.join(extra) or 'no checkpoint_last.pt'}: exit {code}: {error_line(err)[:90]}")
    return Outcome("; ".join(seen), ok)


def init_from_training_run(root: Path) -> Outcome:
    """--init_from a run that is still training (its run lock held): refused naming the folder and
    the process, before the new run writes anything (not started from a mid-training best)."""
    runs = root / "runs"
    source = start_process(["--epoch", "50", "--batch_size", "32", "--runs_dir", str(runs), "--label", "src"])
    try:
        started = wait_for(lambda: (runs / "src" / "checkpoint_best.pt").exists(), source)
        code, err, _ = run_mode("train", ["--epoch", "1", "--runs_dir", str(runs), "--label", "tgt",
                                          "--init_from", str(runs / "src")])
    finally:
        source.kill()
        source.communicate()
    ok = started and refused(code, err, f"in use by process {source.pid}") and not (runs / "tgt").exists()
    return Outcome(f"exit {code}: {error_line(err)[:120]}", ok)


def read_only_command(folder: Path, command: list[str]) -> list[str]:
    """`command` run with `folder` read-only: a read-only bind mount in a private mount namespace
    for root (whom file modes do not stop), else the folder's mode."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        raise RuntimeError("cannot make a folder read-only here: running as root without mount namespaces")
    remount = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", remount, str(folder), *command]


def run_read_only(folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    """Run `command` (OMP_NUM_THREADS=1, output captured as text, at most 300 s) with `folder`
    read-only (read_only_command), then give the folder its mode back (0o755). Also used by
    tests/test_convert_faults.py."""
    try:
        return subprocess.run(read_only_command(folder, command), capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        folder.chmod(0o755)


def read_only_run_folder(root: Path) -> Outcome:
    """A trained run's folder made read-only: test_id.py and --resume stop before evaluating or
    training, saying the folder is not writable (exit 2), instead of a traceback at the end."""
    runs = root / "runs"
    label = ["--runs_dir", str(runs), "--label", "ro"]
    assert run_mode("train", ["--epoch", "1", *label])[0] == 0
    results = [run_read_only(runs / "ro", [sys.executable, str(REPO / script), *label, *extra])
               for script, extra in ((TEST_SCRIPT, []), (SCRIPT, ["--epoch", "2", "--resume"]))]
    ok = all(refused(r.returncode, r.stderr, "cannot write to the run folder") for r in results)
    return Outcome("; ".join(f"{name} exit {r.returncode}: {error_line(r.stderr)[:90]}"
                             for name, r in zip(("test", "resume"), results)),
                   ok and "test HR@10" not in results[0].stdout and not (runs / "ro" / "test_metrics.json").exists())


def foreign_checkpoint(root: Path) -> Outcome:
    """checkpoint_last.pt / checkpoint_best.pt replaced by another run's, by bare weights or by a
    list: --resume and test say what the file holds or which tensors differ (exit 2)."""
    runs = root / "runs"
    own, other = (["--epoch", "1", "--runs_dir", str(runs), "--label", name] for name in ("own", "other"))
    assert run_mode("train", own)[0] == 0
    assert run_mode("train", [*other, "--embedding_dim", "32"])[0] == 0
    weights = load_checkpoint(runs / "own" / "checkpoint_best.pt")["model"]
    fakes = {"another run's": ({"last": runs / "other" / "checkpoint_last.pt", "best": runs / "other" / "checkpoint_best.pt"},
                               "does not fit this run's model (28 of another shape: encoder.blocks.0"),
             "bare weights": (weights, "holds bare model weights"), "a list": ([1, 2, 3], "holds a list")}
    seen, ok = [], True
    for name, (fake, fragment) in fakes.items():
        for kind in ("last", "best"):
            target = runs / "own" / f"checkpoint_{kind}.pt"
            if isinstance(fake, dict) and isinstance(fake.get(kind), Path):
                target.write_bytes(fake[kind].read_bytes())
            else:
                torch.save(fake, target)
        code, err, _ = run_mode("train", [*own[:1], "2", *own[2:], "--resume"])
        test_code, test_err, _ = run_mode("test", own[2:])
        ok &= refused(code, err, fragment) and refused(test_code, test_err, fragment)
        seen.append(f"{name}: resume exit {code}, test exit {test_code}")
    return Outcome(f"{'; '.join(seen)} ({error_line(err)[:80]})", ok)


def broken_run_config(root: Path) -> Outcome:
    """A run's config.json missing, not JSON, or not a dict: --resume and test name the file and
    what is wrong (exit 2); a missing one no longer lets --resume go on with any values."""
    runs = root / "runs"
    label = ["--runs_dir", str(runs), "--label", "cfg"]
    assert run_mode("train", ["--epoch", "1", *label])[0] == 0
    config = runs / "cfg" / "config.json"
    seen, ok = [], True
    for name, text, fragment in (("missing", None, "config.json is missing"),
                                 ("not JSON", "{\"lr\": 0.001,", "config.json cannot be read"),
                                 ("a list", "[]", "config.json holds a list")):
        config.unlink(missing_ok=True)
        if text is not None:
            config.write_text(text)
        code, err, _ = run_mode("train", ["--epoch", "2", "--resume", *label])
        test_code, test_err, _ = run_mode("test", label)
        ok &= refused(code, err, fragment) and refused(test_code, test_err, fragment)
        seen.append(f"{name}: resume exit {code}, test exit {test_code}")
    return Outcome("; ".join(seen), ok)


def first_checkpoint_disk_full(root: Path) -> Outcome:
    """Disk full at the very first checkpoint: the message does not promise a previous
    checkpoint, and the failed new run leaves no folder behind."""
    import morec.atomic_io as atomic_io
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(".pt"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    atomic_io.os.replace = failing_replace
    try:
        code, err, _ = run_mode("train", ["--epoch", "1", "--runs_dir", str(root / "runs"), "--label", "full"])
    finally:
        atomic_io.os.replace = real_replace
    return Outcome(f"exit {code}: {error_line(err)[:120]}; run folder left: {(root / 'runs').exists()}",
                   refused(code, err, "no earlier checkpoint exists") and "intact" not in err
                   and not (root / "runs").exists())


def nan_first_epoch(root: Path) -> Outcome:
    """A NaN loss in epoch 1: the message does not promise a checkpoint, and the failed new run
    leaves no folder behind."""
    from morec.models.recommender import SASRecRecommender
    real, calls = SASRecRecommender.calculate_loss, {"n": 0}

    def poisoned(self, batch, *args, **kwargs):
        calls["n"] += 1
        return real(self, batch, *args, **kwargs) * (float("nan") if calls["n"] == 4 else 1.0)

    SASRecRecommender.calculate_loss = poisoned
    try:
        code, err, _ = run_mode("train", [*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", "nan1"])
    finally:
        SASRecRecommender.calculate_loss = real
    return Outcome(f"exit {code}: {error_line(err)[:120]}; run folder left: {(root / 'runs').exists()}",
                   refused(code, err, "epoch 1, step 3; no epoch finished") and "kept" not in err
                   and not (root / "runs").exists())


class _RunsCode:
    """A pickled object whose loading would run code."""
    def __reduce__(self):
        return (os.system, ("true",))


def unsafe_checkpoint_hint(root: Path) -> Outcome:
    """A checkpoint holding pickled code is refused without PyTorch's hint to retry with
    weights_only=False (which would run it)."""
    args = ["--epoch", "1", "--runs_dir", str(root / "runs"), "--label", "unsafe"]
    assert run_mode("train", args)[0] == 0
    torch.save({"model": _RunsCode()}, root / "runs" / "unsafe" / "checkpoint_last.pt")
    code, err, _ = run_mode("train", ["--epoch", "2", *args[2:], "--resume"])
    return Outcome(f"exit {code}: {error_line(err)[:140]}",
                   refused(code, err, "refused unread") and "weights_only" not in err)


def broken_encoder_config(root: Path) -> Outcome:
    """An encoder folder whose config.json is not JSON: the error names config.json, not the
    tokenizer."""
    (tiny_encoder(root) / "config.json").write_text("{\"model_type\": \"bert\",")
    code, err = text_run(root, "broken_config")
    return Outcome(f"exit {code}: {error_line(err)[:140]}",
                   refused(code, err, "config.json") and "tokenizer" not in error_line(err)
                   and not (root / "runs").exists())


# ----------------------------------------------------------------------------- pretrained encoders

TEXT_SCRIPT = "inbatch_sasrec_e2e_text/train_minilm_2stage.py"


def tiny_encoder(root: Path) -> Path:
    """A tiny random BERT (tokenizer trained on the ml-100k titles) in root/encoders/tiny."""
    sys.path.insert(0, str(REPO / "pretrained_models"))
    from make_tiny import make_tiny_bert
    folder = root / "encoders" / "tiny"
    if not folder.exists():
        make_tiny_bert(folder)
    return folder


def text_run(root: Path, label: str, *extra: str) -> tuple[int, str]:
    return run_in_process(["--bert_model_load", "tiny", "--pretrained_dir", str(root / "encoders"),
                           "--cache_dir", str(root / "cache"), "--dnn_layers", "0", "--epoch", "1",
                           "--runs_dir", str(root / "runs"), "--label", label, *extra], script=TEXT_SCRIPT)


def encoder_without_weights(root: Path) -> Outcome:
    """A pretrained folder whose weights file is missing: the error lists what the folder needs."""
    (tiny_encoder(root) / "model.safetensors").unlink()
    code, err = text_run(root, "no_weights")
    return Outcome(f"exit {code}: {error_line(err)}",
                   code == 2 and "incomplete: missing model.safetensors" in err and not (root / "runs").exists())


def encoder_wrong_shape(root: Path) -> Outcome:
    """Weights whose shapes do not match config.json (another model's file): a clear error."""
    config_file = tiny_encoder(root) / "config.json"
    config = json.loads(config_file.read_text())
    config["hidden_size"], config["intermediate_size"] = 64, 128
    config_file.write_text(json.dumps(config))
    code, err = text_run(root, "wrong_shape")
    return Outcome(f"exit {code}: {error_line(err)}",
                   code == 2 and "cannot load the encoder weights" in err and not (root / "runs").exists())


def stale_feature_cache(root: Path) -> Outcome:
    """Two-stage features cached with one encoder, then the encoder's weights change: the cache
    is detected as stale (logged) and rebuilt, and the run trains on the new features."""
    tiny_encoder(root)
    code, err = text_run(root, "first")
    assert code == 0, error_line(err)
    weights = tiny_encoder(root) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(4)                                       # new weights, same size
    weights.write_bytes(bytes(data))
    code, err = text_run(root, "second")
    stale = "built from another encoder" in err
    return Outcome(f"exit {code}; stale cache reported and rebuilt: {stale}", code == 0 and stale)


def text_without_text(attribute: str) -> Callable[[Path], Outcome]:
    """A text run on ml-100k items without titles, or with --news_attributes abstract where the
    file has none: refused up front, counting the empty items (it scored HR@10 100)."""
    def run(root: Path) -> Outcome:
        tiny_encoder(root)
        data = root / "data" / "ml-100k"
        data.mkdir(parents=True)
        (data / "users.tsv").write_bytes((REPO / "dataset" / "ml-100k" / "users.tsv").read_bytes())
        rows = (REPO / "dataset" / "ml-100k" / "items.tsv").read_text().splitlines()
        keep = 1 if attribute == "title" else 2                # columns kept: the name (and the title)
        (data / "items.tsv").write_text("".join("\t".join(row.split("\t")[:keep]) + "\n" for row in rows))
        code, err = text_run(root, "no_text", "--root_data_dir", str(root / "data"), "--news_attributes", attribute)
        return Outcome(f"exit {code}: {error_line(err)}", code == 2 and f"all 1409 items have an empty {attribute}" in err
                       and not (root / "runs" / "no_text").exists())
    return run


# ----------------------------------------------------------------------------- images

def image_store_case(fault: str) -> Callable[[Path], Outcome]:
    """A truncated LMDB value or bytes that are no image: the error names the key and the LMDB."""
    def run(root: Path) -> Outcome:
        import lmdb
        from PIL import Image

        from morec.data.image_format import item_key
        from morec.data.images import ImageStore
        from morec.tools.lmdb_builder import build_lmdb
        from morec.errors import InputError
        images = root / "images"
        images.mkdir(parents=True, exist_ok=True)
        for name in ("a", "b"):
            Image.new("RGB", (32, 32), (200, 30, 30)).save(images / f"{name}.png")
        path = root / "posters.lmdb"
        build_lmdb(images, path)
        env = lmdb.open(str(path), subdir=False, lock=False)
        with env.begin(write=True) as txn:
            value = txn.get(item_key("b"))
            txn.put(item_key("b"), value[: len(value) // 3] if fault == "truncated" else b"\x00garbage" * 10)
        env.close()
        try:
            ImageStore(path, image_size=32).load_tensor("b")
        except InputError as err:
            return Outcome(f"InputError: {str(err)[:140]}", "'b'" in str(err) and str(path) in str(err))
        return Outcome("no error", False)
    return run


def legacy_pickle_refused(root: Path) -> Outcome:
    """A legacy LMDB record whose pickle would run code is refused before anything runs."""
    import pickle

    from morec.tools.legacy_lmdb import restricted_loads
    marker = root / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    try:
        restricted_loads(pickle.dumps(Evil()))
    except pickle.UnpicklingError as err:
        return Outcome(f"refused: {str(err)[:120]}", not marker.exists())
    return Outcome(f"accepted; code ran: {marker.exists()}", False)


VISION_SCRIPT = "inbatch_sasrec_e2e_vision/train_swin_tiny.py"


def vision_run(root: Path, label: str, posters_limit: int | None = None, *extra: str) -> tuple[int, str]:
    """A vision run on ml-100k with posters (only the first `posters_limit` items drawn) and
    tiny random vision encoders under root/encoders."""
    sys.path.insert(0, str(REPO / "pretrained_models"))
    from make_tiny import make_tiny_swin, make_tiny_vit_mae

    from morec.tools.posters import render_posters
    data = root / "data" / "ml-100k"
    if not data.exists():
        data.mkdir(parents=True)
        for name in ("users.tsv", "items.tsv"):
            (data / name).symlink_to(REPO / "dataset" / "ml-100k" / name)
        render_posters(data / "items.tsv", data / "posters.lmdb", size=32, limit=posters_limit)
        make_tiny_swin(root / "encoders" / "tiny_swin", image_size=32)
        make_tiny_vit_mae(root / "encoders" / "tiny_mae", image_size=32)
    return run_in_process(["--root_data_dir", str(root / "data"), "--pretrained_dir", str(root / "encoders"),
                           "--cv_model_load", "tiny_swin", "--image_size", "32", "--epoch", "1",
                           "--runs_dir", str(root / "runs"), "--label", label, *extra], script=VISION_SCRIPT)


def vision_sigterm_resumes(root: Path) -> Outcome:
    """SIGTERM in the second epoch of a vision run (DataLoader worker, tiny Swin): exit 143, then
    --resume ends with the per-epoch metrics and final weights of an uninterrupted run (
    building the worker iterator once drew from the restored dropout stream)."""
    common = ["--epoch", "2", "--batch_size", "32", "--num_workers", "1"]
    code, err = vision_run(root, "reference", None, *common)
    assert code == 0, error_line(err)
    reference = run_signature(root / "runs" / "reference")
    args = ["--root_data_dir", str(root / "data"), "--pretrained_dir", str(root / "encoders"),
            "--cv_model_load", "tiny_swin", "--image_size", "32", "--runs_dir", str(root / "runs"),
            "--label", "preempted", *common]
    metrics = root / "runs" / "preempted" / "metrics.jsonl"
    process = start_process(args, script=VISION_SCRIPT)
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1, process)
    time.sleep(1.0)                                            # into epoch 2
    process.send_signal(signal.SIGTERM)
    process.communicate()
    partial = load_checkpoint(root / "runs" / "preempted" / "checkpoint_last.pt").get("partial")
    step = partial["progress"]["step"] if partial else None
    code, err = run_in_process(args + ["--resume"], script=VISION_SCRIPT)
    same = code == 0 and run_signature(root / "runs" / "preempted") == reference
    return Outcome(f"exit {process.returncode}, saved at epoch 2 step {step}; resumed run "
                   f"{'identical' if same else 'DIFFERENT'}", process.returncode == 143 and step is not None and same)


def vision_case(fault: str) -> Callable[[Path], Outcome]:
    """A vision run with items missing from the LMDB, an absent encoder folder, or an image size
    the encoder cannot take: exit 2 with the fix, and no run folder left behind."""
    def run(root: Path) -> Outcome:
        if fault == "missing_images":
            code, err = vision_run(root, "missing", 100)
            ok = "1204 of 1304 items have no image" in err and "posters.lmdb.missing.txt" in err
        elif fault == "no_encoder":
            code, err = vision_run(root, "no_encoder", None, "--cv_model_load", "swin_base")
            ok = "vision encoder folder" in err and "swin_base not found" in err
        else:
            code, err = vision_run(root, "size", None, "--cv_model_load", "tiny_mae", "--image_size", "64")
            ok = "expects 32x32 images" in err and "--image_size 32" in err
        return Outcome(f"exit {code}: {error_line(err)}", code == 2 and ok and not (root / "runs").exists())
    return run


def run_test_in_process(args: list[str], script: str = SCRIPT) -> tuple[int, str]:
    """`python test_*.py ARGS` (the test script of `script`) inside this process; returns (exit
    code, stderr) (run_mode "test")."""
    code, err, _ = run_mode("test", args, script)
    return code, err


def data_changed_after_training(change: str) -> Callable[[Path], Outcome]:
    """The items file reordered, or grown by an item, after a run trained: test and --resume
    refuse, naming the file and what changed (no silent wrong metrics, no size-mismatch traceback)."""
    def run(root: Path) -> Outcome:
        data = root / "data" / "ml-100k"
        data.mkdir(parents=True)
        for name in ("users.tsv", "items.tsv"):
            (data / name).write_bytes((REPO / "dataset" / "ml-100k" / name).read_bytes())
        args = ["--root_data_dir", str(root / "data"), "--runs_dir", str(root / "runs"), "--label", "r"]
        code, err = run_in_process(args + ["--epoch", "1", "--batch_size", "256"])
        assert code == 0, error_line(err)
        items = (data / "items.tsv").read_text().splitlines()
        if change == "reordered":
            (data / "items.tsv").write_text("\n".join(items[::-1]) + "\n")
            wanted = "the item ids now belong to other items"
        else:
            (data / "items.tsv").write_text("\n".join(items + ["new\tA new movie"]) + "\n")
            with open(data / "users.tsv", "a") as users:
                users.write("new_user\t1 2 3 4 new\n")
            wanted = "the data now has 1410 items, the run was trained on 1409"
        test_code, test_err = run_test_in_process(args)
        resume_code, resume_err = run_in_process(args + ["--epoch", "2", "--batch_size", "256", "--resume"])
        ok = all(c == 2 and wanted in e and "items.tsv changed since training" in e
                 for c, e in ((test_code, test_err), (resume_code, resume_err)))
        return Outcome(f"test exit {test_code}, resume exit {resume_code}: {error_line(test_err)}", ok)
    return run


def vision_args(root: Path, label: str, *extra: str) -> list[str]:
    return ["--root_data_dir", str(root / "data"), "--pretrained_dir", str(root / "encoders"),
            "--cv_model_load", "tiny_swin", "--image_size", "32", "--epoch", "1",
            "--runs_dir", str(root / "runs"), "--label", label, *extra]


def broken_lmdb_case(fault: str) -> Callable[[Path], Outcome]:
    """A vision run on a broken image LMDB: a truncated copy (SIGBUS at the first read past its
    end), a file that is no LMDB, an empty folder, or one damaged image (with --num_workers 1).
    Each stops before training with one `error:` line and leaves no run folder."""
    def run(root: Path) -> Outcome:
        import lmdb

        from morec.data.image_format import item_key
        vision_run(root, "setup", None, "--epoch", "0")          # data, posters and encoders only
        posters = root / "data" / "ml-100k" / "posters.lmdb"
        if fault == "truncated":
            data = posters.read_bytes()
            posters.write_bytes(data[: len(data) // 2])
        elif fault == "not_lmdb":
            posters.write_text("not an LMDB\n" * 1000)
        elif fault == "empty_folder":
            posters.unlink()
            posters.mkdir()
        else:
            env = lmdb.open(str(posters), subdir=False, lock=False)
            with env.begin(write=True) as txn:
                txn.put(item_key("50"), txn.get(item_key("50"))[:200])        # a cut-off PNG
            env.close()
        extra = ["--num_workers", "1"] if fault == "damaged_image" else []
        if fault == "truncated":                        # in a child: a SIGBUS would end the drill
            process = start_process(vision_args(root, fault, *extra), script=VISION_SCRIPT)
            _, err = process.communicate()
            code = process.returncode
        else:
            code, err = run_in_process(vision_args(root, fault, *extra), script=VISION_SCRIPT)
        wanted = {"truncated": "is truncated", "not_lmdb": "is not a readable LMDB",
                  "empty_folder": "is a folder without data.mdb", "damaged_image": "1 of 1304 images"}[fault]
        one_line = err.count("error: ") == 1 and "Traceback" not in err
        return Outcome(f"exit {code}: {error_line(err)}", code == 2 and one_line and wanted in err
                       and not (root / "runs" / fault).exists())
    return run


def worker_error_is_one_line(root: Path) -> Outcome:
    """An image that turns bad after the pre-pass (the LMDB replaced mid-run) is found in a
    DataLoader worker: the run still ends with the one-line `error:`, no worker traceback."""
    from morec.data.images import image_loader
    from morec.errors import InputError

    class Damaged(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise InputError("the image of item '50' in posters.lmdb does not decode")

    try:
        list(image_loader(Damaged(), 1, False))
    except InputError as err:
        return Outcome(f"InputError: {str(err)[:120]}", str(err) == "the image of item '50' in posters.lmdb does not decode")
    return Outcome("no error", False)


CASES = [
    Case("sigkill_random", "killed runs resume to the uninterrupted result", sigkill_at_random_moments),
    Case("sigterm", "exit 143 with a mid-epoch checkpoint; resume identical", sigterm_saves_and_resumes),
    Case("torn_checkpoint", "half-written temp checkpoint ignored; resume identical", kill_during_checkpoint_write),
    Case("truncated_users", "exit 2 naming users.tsv line 3", bad_data_case(
        USERS[:2] + ["u3\ti1 i2 i3 i4 i"], ITEMS, "users.tsv, line 3: user 'u3' has item 'i'")),
    Case("garbled_items", "exit 2: items.tsv not UTF-8, line 2", bad_data_case(
        USERS, ITEMS[:1] + ["i2\t\udcff\udcfe title"] + ITEMS[2:], "items.tsv, line 2: not UTF-8")),
    Case("duplicate_item", "exit 2 naming both lines", bad_data_case(
        USERS, ITEMS + ["i3\tagain"], "line 7: item 'i3' already defined on line 3")),
    Case("empty_line_users", "exit 2 naming users.tsv line 2", bad_data_case(
        USERS[:1] + [""] + USERS[1:], ITEMS, "users.tsv, line 2: expected")),
    Case("empty_line_items", "exit 2 naming items.tsv line 4", bad_data_case(
        USERS, ITEMS[:3] + [""] + ITEMS[3:], "items.tsv, line 4: empty item name")),
    Case("unknown_item", "exit 2 naming user, item and line", bad_data_case(
        USERS + ["u9\ti1 i2 x9 i4 i5"], ITEMS, "line 4: user 'u9' has item 'x9'")),
    Case("nothing_left", "exit 2: no user has min_seq_len items", bad_data_case(
        ["u1\ti1 i2"], ITEMS, "no user has at least min_seq_len=5")),
    Case("unwritable_output", "exit 2 before training", unwritable_output),
    Case("users_old_mac_line_ends", "\\r line ends: 3 users read, not 1", odd_but_valid_data_case(
        "\r".join(USERS).encode() + b"\r", "\r".join(ITEMS).encode() + b"\r", 3)),
    Case("bom_and_trailing_blank_lines", "UTF-8 BOM and blank lines at the end accepted", odd_but_valid_data_case(
        b"\xef\xbb\xbf" + "\n".join(USERS).encode() + b"\n\n\n", b"\xef\xbb\xbf" + "\r\n".join(ITEMS).encode() + b"\r\n\r\n", 3)),
    Case("tab_in_item_list", "exit 2 naming users.tsv line 2", bad_data_case(
        USERS[:1] + ["u2\ti1 i2 i3\ti4 i5 i6"] + USERS[2:], ITEMS, "users.tsv, line 2: unexpected whitespace '\\t'")),
    Case("no_break_space_in_item_list", "exit 2 naming users.tsv line 3", bad_data_case(
        USERS[:2] + ["u3\ti1 i2 i3\u00a0i4 i5 i6"], ITEMS, "users.tsv, line 3: unexpected whitespace '\\xa0'")),
    Case("duplicate_user", "exit 2 naming both lines", bad_data_case(
        USERS + ["u2\ti6 i5 i4 i3 i2 i1"], ITEMS, "users.tsv, line 4: user 'u2' already has line 2")),
    Case("users_file_is_directory", "exit 2: users.tsv is a directory", directory_as_users_file),

    Case("failed_checkpoint_write", "exit 2, previous checkpoint intact", failed_checkpoint_write),
    Case("corrupt_checkpoint", "exit 2 naming the checkpoint", corrupt_checkpoint),
    Case("nan_stop", "exit 2 naming epoch 2 step 3; epoch-1 checkpoint kept", nan_loss(skip=False)),
    Case("nan_skip", "--skip_nonfinite: batch skipped and counted", nan_loss(skip=True)),
    Case("encoder_without_weights", "exit 2 listing the files the folder needs", encoder_without_weights),
    Case("encoder_wrong_shape", "exit 2: the weights do not fit config.json", encoder_wrong_shape),
    Case("stale_feature_cache", "stale two-stage cache detected and rebuilt", stale_feature_cache),
    Case("text_run_without_titles", "exit 2: all 1409 items have an empty title", text_without_text("title")),
    Case("text_run_without_abstracts", "exit 2: --news_attributes abstract, none in the file", text_without_text("abstract")),
    Case("lmdb_truncated_value", "InputError naming key and LMDB", image_store_case("truncated")),
    Case("image_not_decodable", "InputError naming key and LMDB", image_store_case("garbage")),
    Case("legacy_pickle_attack", "restricted unpickler refuses; nothing runs", legacy_pickle_refused),
    Case("vision_missing_images", "exit 2: how many items lack an image, and the list file", vision_case("missing_images")),
    Case("vision_no_encoder", "exit 2 naming the encoder folder and README", vision_case("no_encoder")),
    Case("vision_wrong_image_size", "exit 2: ViT-MAE's image size and the fix", vision_case("size")),
    Case("vision_sigterm_resume", "exit 143 mid-epoch 2; resumed vision run identical to uninterrupted",
         vision_sigterm_resumes),
    Case("lmdb_truncated_file", "exit 2 (not SIGBUS): LMDB truncated, before training", broken_lmdb_case("truncated")),
    Case("lmdb_not_an_lmdb", "exit 2: --image_lmdb is not an LMDB", broken_lmdb_case("not_lmdb")),
    Case("lmdb_empty_folder", "exit 2: --image_lmdb is an empty folder", broken_lmdb_case("empty_folder")),
    Case("lmdb_damaged_image", "exit 2 before training naming the item (--num_workers 1)", broken_lmdb_case("damaged_image")),
    Case("items_reordered_after_training", "test and --resume exit 2: items.tsv changed, ids moved",
         data_changed_after_training("reordered")),
    Case("items_gained_after_training", "test and --resume exit 2: items.tsv changed, 1410 items not 1409",
         data_changed_after_training("gained")),
    Case("worker_error_one_line", "InputError in a DataLoader worker keeps its message", worker_error_is_one_line),
]


def test_with_changed_value(root: Path) -> Outcome:
    """A test command with a value that changes the label (--ties optimistic) on a run trained
    without it: refused naming the value, both settings and the trained run, not only "train
    this run first"."""
    runs = root / "runs"
    code, err = run_in_process(["--epoch", "1", "--batch_size", "32", "--runs_dir", str(runs)])
    assert code == 0, err
    trained = next(runs.iterdir()).name
    code, err, _ = run_mode("test", ["--epoch", "1", "--batch_size", "32", "--runs_dir", str(runs),
                                     "--ties", "optimistic"])
    return Outcome(f"exit {code}: {error_line(err)[:150]}",
                   refused(code, err, f"differ from the trained run {trained} in --ties optimistic (that run: expected)")
                   and [p.name for p in runs.iterdir()] == [trained])


def peft_against_script_value(root: Path) -> Outcome:
    """`train_minilm.py --peft lora`: the script's own block sets trainable_layers 2; the refusal
    names that value, where it comes from and the exact override (--trainable_layers -1)."""
    code, err, _ = run_mode("train", ["--peft", "lora", "--runs_dir", str(root / "runs")],
                            script="inbatch_sasrec_e2e_text/train_minilm.py")
    return Outcome(f"exit {code}: {error_line(err)}",
                   refused(code, err, "override with --trainable_layers -1") and "from train_minilm.py" in err
                   and not (root / "runs").exists())


def study_arm_override(root: Path) -> Outcome:
    """`study_q4 --arms full --peft lora`: an override that contradicts a chosen arm's defining
    value is refused before any run (it once ran the "full" arm with LoRA under the full name)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import study_q4_adaptation
    from morec.errors import InputError
    seen, ok = [], True
    for argv in (["--arms", "full", "--peft", "lora"], ["--arms", "ts_all", "--mo.dnn_layers", "3"]):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                study_q4_adaptation.main([*argv, "--out", str(root / "out"), "--table_only"])
            seen.append(f"{' '.join(argv)}: ACCEPTED")
            ok = False
        except InputError as err:
            seen.append(f"{' '.join(argv)}: {err}"[:150])
            ok &= "contradicts the arm" in str(err)
    return Outcome("; ".join(seen), ok and not (root / "out").exists())


RUN_CASES = [  # run folders, parameter values, checkpoints and messages
    Case("nonsense_values", "each refused before anything is written: one error line, exit 2", nonsense_values),
    Case("huge_values", "exit 2 from the memory estimate, before allocating; no folder", huge_values),
    Case("same_label_twice", "second run and a test refused: folder in use by process N", same_label_twice),
    Case("read_only_run_folder", "test and --resume: exit 2 before evaluating, folder not writable", read_only_run_folder),
    Case("foreign_checkpoint", "exit 2 saying what the checkpoint holds or which tensors differ", foreign_checkpoint),
    Case("broken_run_config", "exit 2 naming config.json and what is wrong", broken_run_config),
    Case("first_checkpoint_disk_full", "exit 2 without promising a previous checkpoint; no folder left", first_checkpoint_disk_full),
    Case("nan_first_epoch", "exit 2 without promising a checkpoint; no folder left", nan_first_epoch),
    Case("unsafe_checkpoint_hint", "refused without suggesting weights_only=False", unsafe_checkpoint_hint),
    Case("finished_run_kept", "re-run or --resume without checkpoint_last.pt: exit 2 naming --overwrite; "
         "best checkpoint and test results kept", finished_run_kept),
    Case("init_from_own_folder", "exit 2: --init_from names the run's own folder; its checkpoint kept",
         init_from_own_folder),
    Case("init_from_training_run", "exit 2: the source folder is in use by process N; nothing written",
         init_from_training_run),
    Case("broken_encoder_config", "exit 2 naming the encoder's config.json, not the tokenizer", broken_encoder_config),
    Case("test_with_changed_value", "exit 2 naming --ties and the trained run it differs from", test_with_changed_value),
    Case("peft_against_script_value", "exit 2 naming --trainable_layers 2 from train_minilm.py and --trainable_layers -1",
         peft_against_script_value),
    Case("study_arm_override", "refused: the override contradicts the arm, nothing run", study_arm_override),
]
CASES += RUN_CASES


# ----------------------------------------------------------------------------- converters

def microlens_copy(src: Path, title_header: str = "") -> int:
    """ml-100k as a MicroLens copy: users.tsv is a pairs tsv, the titles a headerless title csv
    (`title_header` on top, as some public copies have). Returns the number of items."""
    src.mkdir(parents=True)
    shutil.copy(REPO / "dataset" / "ml-100k" / "users.tsv", src / "MicroLens-ml_pairs.tsv")
    rows = [line.split("\t") for line in (REPO / "dataset" / "ml-100k" / "items.tsv").read_text().splitlines()]
    (src / "MicroLens-ml_title_en.csv").write_text(title_header + "".join(f"{row[0]},{row[1]}\n" for row in rows))
    return len(rows)


def convert_script(args: list[str]) -> tuple[int, str]:
    """`python scripts/convert_dataset.py --from microlens ARGS` in this process: (exit code,
    stderr with the converter's log lines)."""
    from morec.errors import run_cli
    script_main = runpy.run_path(str(REPO / "scripts" / "convert_dataset.py"), run_name="imported")["main"]
    err, code = io.StringIO(), 0
    logs = logging.StreamHandler(err)
    logging.getLogger("morec.tools.convert").addHandler(logs)
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            run_cli(script_main, ["--from", "microlens", *args])
        except SystemExit as exit_:
            code = exit_.code
        finally:
            logging.getLogger("morec.tools.convert").removeHandler(logs)
    return code, err.getvalue()


def one_error_line(code: int, err: str, fragment: str) -> bool:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    return code == 2 and len(errors) == 1 and fragment in errors[0] and "Traceback" not in err


def convert_title_header(root: Path) -> Outcome:
    """A MicroLens title csv with a header row (public copies disagree): skipped with a log line,
    not converted into an item `item_id` titled `title`."""
    count = microlens_copy(root / "src", "item_id,title\n")
    code, err = convert_script([str(root / "src"), str(root / "out"), "--no_images"])
    names = [line.split("\t")[0] for line in (root / "out" / "items.tsv").read_text().splitlines()] if code == 0 else []
    return Outcome(f"exit {code}: {len(names)} items, first {names[:1]}; {error_line(err)[:100]}",
                   code == 0 and len(names) == count and names[0] == "1" and "'item_id' is a header row" in err)


def convert_out_of_range_options(root: Path) -> Outcome:
    """--max_seq_len 0 (once accepted), negative values, --min_seq_len below training's 3, a
    --resize out of range or without covers: each one error line, exit 2, no DST."""
    microlens_copy(root / "src")
    seen, ok = [], True
    for option in (["--max_seq_len", "0"], ["--max_seq_len", "-1"], ["--min_seq_len", "0"],
                   ["--min_seq_len", "2"], ["--resize", "0"], ["--resize", "100000"], ["--resize", "64"]):
        code, err = convert_script([str(root / "src"), str(root / "out"), "--no_images", *option])
        seen.append(f"{' '.join(option)}: exit {code}")
        ok &= one_error_line(code, err, f"--{option[0][2:]} {option[1]} ") and not (root / "out").exists()
    return Outcome("; ".join(seen), ok)


PAUSED_CONVERSION = """
import runpy, sys
import morec.tools.convert as convert
def pause(folder, **options):      # users.tsv and items.tsv are written: say where, then wait
    print(folder, flush=True)
    sys.stdin.readline()           # never answered: the caller kills this process here
convert.write_card = pause
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_paused_conversion(argv: list[str], stderr=subprocess.DEVNULL) -> tuple[subprocess.Popen, Path]:
    """Start `python ARGV` (scripts/convert_dataset.py and its options) under PAUSED_CONVERSION and
    wait until it pauses with users.tsv and items.tsv written in its temp folder (or exits). Returns
    the process, for the caller to kill there, and the temp folder it printed. Also used by
    tests/test_convert_faults.py (stderr=subprocess.PIPE there, to show it when the kill goes wrong)."""
    process = subprocess.Popen([sys.executable, "-c", PAUSED_CONVERSION, *argv], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=stderr, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    return process, Path(process.stdout.readline().strip())


def convert_sigkill_midway(root: Path) -> Outcome:
    """SIGKILL while the converter writes (it pauses once its files are in the temp folder, so the
    kill lands mid-write without a race): no DST; the next run removes the stale temp folder."""
    microlens_copy(root / "src")
    argv = [str(REPO / "scripts" / "convert_dataset.py"), "--from", "microlens", str(root / "src"),
            str(root / "out"), "--no_images"]
    process, temp = start_paused_conversion(argv)
    process.kill()
    process.wait()
    left = sorted(p.name for p in root.iterdir())
    code, err = convert_script([str(root / "src"), str(root / "out"), "--no_images"])
    after = sorted(p.name for p in root.iterdir())
    return Outcome(f"after the kill: {left}; next run exit {code}, then {after}",
                   left == [temp.name, "src"] and temp.name.startswith(".out.tmp") and code == 0
                   and after == ["out", "src"] and f"removed {temp}" in err)


def convert_dst_below_file(root: Path) -> Outcome:
    microlens_copy(root / "src")
    (root / "file.txt").write_text("a file\n")
    code, err = convert_script([str(root / "src"), str(root / "file.txt" / "out"), "--no_images"])
    return Outcome(f"exit {code}: {error_line(err)}", one_error_line(code, err, "file.txt is a file, not a folder")
                   and sorted(p.name for p in root.iterdir()) == ["file.txt", "src"])


def convert_read_only_dst(root: Path) -> Outcome:
    microlens_copy(root / "src")
    (root / "ro").mkdir()
    done = run_read_only(root / "ro", [sys.executable, str(REPO / "scripts" / "convert_dataset.py"), "--from",
                                       "microlens", str(root / "src"), str(root / "ro" / "out"), "--no_images"])
    return Outcome(f"exit {done.returncode}: {error_line(done.stderr)}",
                   one_error_line(done.returncode, done.stderr, "choose a DST in a writable folder")
                   and not list((root / "ro").iterdir()))


def convert_disk_full(root: Path) -> Outcome:
    """ENOSPC while writing items.tsv (users.tsv is in the temp folder by then)."""
    import morec.tools.convert as convert_module
    real = convert_module.write_text_atomic

    def full_disk(path: Path, text: str) -> None:
        if path.name == "items.tsv":
            raise OSError(28, "No space left on device")
        real(path, text)

    microlens_copy(root / "src")
    convert_module.write_text_atomic = full_disk
    try:
        code, err = convert_script([str(root / "src"), str(root / "out"), "--no_images"])
    finally:
        convert_module.write_text_atomic = real
    return Outcome(f"exit {code}: {error_line(err)}", one_error_line(code, err, "free space on the disk of")
                   and sorted(p.name for p in root.iterdir()) == ["src"])


CONVERT_CASES = [  # scripts/convert_dataset.py: values the protocol depends on, never a half output
    Case("convert_title_header", "exit 0; the header row skipped with a log line, no item 'item_id'", convert_title_header),
    Case("convert_out_of_range_options", "each exit 2 with one error line naming the option; no DST",
         convert_out_of_range_options),
    Case("convert_sigkill_midway", "no DST after the kill; the next run removes the temp folder and converts",
         convert_sigkill_midway),
    Case("convert_dst_below_file", "exit 2: the parent is a file, not a folder; nothing created", convert_dst_below_file),
    Case("convert_read_only_dst", "exit 2: cannot write in the folder, choose a writable one; nothing created",
         convert_read_only_dst),
    Case("convert_disk_full", "exit 2: could not write DST (No space left on device), free space; no DST, no temp folder",
         convert_disk_full),
]
CASES += CONVERT_CASES
# ----------------------------------------------------------------------------- inputs checked by content

def digest_args(root: Path, label: str, *extra: str) -> list[str]:
    """A tiny text run (random BERT in root/encoders/tiny, ml-100k, 1 epoch) of TEXT_SCRIPT."""
    tiny_encoder(root)
    return ["--bert_model_load", "tiny", "--pretrained_dir", str(root / "encoders"), "--cache_dir", str(root / "cache"),
            "--dnn_layers", "0", "--epoch", "1", "--batch_size", "256", "--runs_dir", str(root / "runs"),
            "--label", label, *extra]


def trained_then_changed(change: Callable[[Path], str], *extra: str,
                         script: str = TEXT_SCRIPT) -> Callable[[Path], Outcome]:
    """Train a tiny text run, apply `change` (returns what the refusal must say), then test and
    --resume: both exit 2 with one error line saying it; a new run on the changed input trains or
    is refused without leaving a folder."""
    def run(root: Path) -> Outcome:
        args = digest_args(root, "r", *extra)
        code, err = run_in_process(args, script=script)
        assert code == 0, error_line(err)
        wanted = change(root)
        test_code, test_err = run_test_in_process(args, script)
        resume_code, resume_err = run_in_process([*args, "--epoch", "2", "--resume"], script=script)
        ok = refused(test_code, test_err, wanted) and refused(resume_code, resume_err, wanted)
        return Outcome(f"test exit {test_code}, resume exit {resume_code}: {error_line(test_err)}", ok)
    return run


def zero_layer_cache(root: Path) -> str:
    (cache,) = (root / "cache" / "features").glob("*-layers.npy")
    import numpy as np
    features = np.load(cache, mmap_mode="r+")
    features[:] = 0                                    # same size, same header
    features.flush()
    return f"feature cache {cache} does not hold the bytes it was written with"


def truncate_layer_cache(root: Path) -> str:
    (cache,) = (root / "cache" / "features").glob("*-layers.npy")
    os.truncate(cache, 4096)
    return f"feature cache {cache} cannot be read: it holds 4096 bytes"


def change_encoder_weights(root: Path) -> str:
    weights = tiny_encoder(root) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = bytes(4)                                # other weights, same size
    weights.write_bytes(bytes(data))
    return f"the text encoder file {weights} changed since training"


def change_encoder_config(root: Path) -> str:
    config = tiny_encoder(root) / "config.json"
    values = json.loads(config.read_text())
    values["layer_norm_eps"] = 0.1                      # the LoRA checkpoint's frozen weights are unchanged
    config.write_text(json.dumps(values))
    return f"the text encoder file {config} changed since training"


def swap_tokens(root: Path) -> str:
    path = tiny_encoder(root) / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = [w for w in vocab if w.isalpha() and len(w) > 3][:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path.write_text(json.dumps(tokenizer))
    return "maps text to other ids than at training"


def image_bytes_changed(root: Path) -> Outcome:
    """Posters rewritten under the same keys after a two-stage vision run trained: test refuses
    (the LMDB's images no longer match its build digest), and so does a new run, leaving no folder."""
    code, err = vision_run(root, "v", None, "--two_stage", "true", "--dnn_layers", "0")
    assert code == 0, error_line(err)
    posters = root / "data" / "ml-100k" / "posters.lmdb"
    child = (f"import lmdb\nenv = lmdb.open({str(posters)!r}, subdir=False, lock=False)\n"
             "with env.begin(write=True) as txn:\n    txn.put(b'1', txn.get(b'2'))\nenv.close()\n")
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)       # this process holds it open
    args = ["--root_data_dir", str(root / "data"), "--pretrained_dir", str(root / "encoders"), "--cv_model_load",
            "tiny_swin", "--image_size", "32", "--two_stage", "true", "--dnn_layers", "0",
            "--runs_dir", str(root / "runs"), "--label", "v"]
    test_code, test_err = run_test_in_process(args, VISION_SCRIPT)
    new_code, new_err = vision_run(root, "new", None, "--two_stage", "true", "--dnn_layers", "0")
    wanted = f"the images in {posters} changed after it was built"
    return Outcome(f"test exit {test_code}, new run exit {new_code}: {error_line(test_err)}",
                   refused(test_code, test_err, wanted) and refused(new_code, new_err, wanted)
                   and not (root / "runs" / "new").exists())


DIGEST_CASES = [
    Case("zeroed_layer_cache", "test and --resume exit 2: the all-layer cache does not hold its written bytes",
         trained_then_changed(zero_layer_cache, "--ts_layers", "all")),
    Case("truncated_layer_cache", "test and --resume exit 2 (not SIGBUS): the all-layer cache is truncated",
         trained_then_changed(truncate_layer_cache, "--ts_layers", "all")),
    Case("two_stage_encoder_changed", "test and --resume exit 2 naming model.safetensors, before any rebuild",
         trained_then_changed(change_encoder_weights)),
    Case("lora_encoder_config_changed", "test and --resume exit 2 naming the encoder's config.json",
         trained_then_changed(change_encoder_config, "--two_stage", "false", "--peft", "lora", "--trainable_layers", "-1")),
    Case("tokenizer_replaced", "test and --resume exit 2: the tokenizer maps text to other ids",
         trained_then_changed(swap_tokens, "--two_stage", "false", "--trainable_layers", "0")),
    Case("image_bytes_changed", "test and a new run exit 2: the LMDB's images changed under the same keys",
         image_bytes_changed),
]
CASES += DIGEST_CASES


# ----------------------------------------------------------------------------- results tables
# A number in a table is the number of the files it claims. The run folders below are written by
# the code a test writes them with (morec.run_records.save_test_ranks, morec.run_identity.tested_identity):
# 200 users with known ranks, a small checkpoint file, the data identity of config.json.

def tabled_run(root: Path, name: str, seed: int, users_sha: str = "a" * 64) -> Path:
    """An ml-100k ID run folder as train_id.py + test_id.py leave it (the files a table reads)."""
    import numpy as np
    from morec.evaluate import metrics_from_counts
    from morec.run_identity import tested_identity
    from morec.run_records import save_test_ranks
    run = root / name
    run.mkdir(parents=True)
    h = np.random.default_rng(seed).integers(0, 30, 200)                 # (U,) items above the target
    counts = torch.from_numpy(np.stack([h, np.zeros_like(h)], 1))       # (U, 2): h, t
    users, repeat = [f"u{i}" for i in range(200)], np.zeros(200, bool)
    torch.save({"model": {"w": torch.full((4,), float(seed))}, "epoch": 1, "valid": {}}, run / "checkpoint_best.pt")
    identity = {"users": {"file": "users.tsv", "sha256": users_sha}, "items": {"file": "items.tsv", "sha256": "b" * 64}}
    (run / "config.json").write_text(json.dumps({"dataset": "ml-100k", "seed": seed, "data_identity": identity}))
    save_test_ranks(run / "test_ranks.npz", counts, users, repeat)
    result = {"label": name, "best_epoch": 1, "test": metrics_from_counts(counts), "num_users": 200, "ties": "expected",
              "per_user": "test_ranks.npz", **tested_identity(run / "checkpoint_best.pt", h, np.zeros_like(h), users, repeat)}
    (run / "test_metrics.json").write_text(json.dumps(result))
    return run


def table_of(root: Path, *folders: Path) -> tuple[str, str]:
    """results_table.py on `folders`, in this process: ("error: ..." or the table, stderr), paths
    shown relative to the case's `root`."""
    sys.path.insert(0, str(REPO / "scripts"))
    import results_table
    from morec.errors import InputError
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            results_table.main([*map(str, folders), "--resamples", "99"])
        except InputError as error:
            return f"error: {error}".replace(f"{root}/", ""), err.getvalue().replace(f"{root}/", "")
    return out.getvalue(), err.getvalue().replace(f"{root}/", "")


def one_error(text: str, *fragments: str) -> bool:
    return text.startswith("error: ") and "\n" not in text.strip() and all(f in text for f in fragments)


def table_checkpoint_changed(root: Path) -> Outcome:
    """A run's checkpoint_best.pt replaced (or trained further, resumed) after its test."""
    runs = root / "runs"
    tabled_run(runs, "s1", 1), tabled_run(runs, "s2", 2)
    shutil.copy(runs / "s2" / "checkpoint_best.pt", runs / "s1" / "checkpoint_best.pt")
    text, _ = table_of(root, runs)
    return Outcome(text[:150], one_error(text, "s1/checkpoint_best.pt is not the checkpoint its test evaluated",
                                         "re-run the run's test script"))


def table_ranks_not_its_own(root: Path) -> Outcome:
    """test_ranks.npz replaced by random bytes, truncated, or another run's: refused even in a row
    no paired test reads (it was used, or never read, silently)."""
    seen, ok = [], True
    for damage, expected in (("random", "not an .npz archive: refused unread"), ("truncated", "BadZipFile"),
                             ("other run's", "is not the file its test wrote")):
        runs = root / damage.replace(" ", "_").replace("'", "")
        tabled_run(runs, "s1", 1), tabled_run(runs, "s2", 2)
        ranks = runs / "s1" / "test_ranks.npz"
        other = (runs / "s2" / "test_ranks.npz").read_bytes()
        ranks.write_bytes(random.Random(0).randbytes(3000) if damage == "random" else
                          ranks.read_bytes()[:1500] if damage == "truncated" else other)
        text, _ = table_of(root, runs)
        seen.append(f"{damage}: {text[:90]}")
        ok &= one_error(text, "s1/test_ranks.npz", expected, "re-run the run's test script")
    return Outcome("; ".join(seen), ok)


def table_run_counted_once(root: Path) -> Outcome:
    """The same run reached twice (a link, a folder given twice) counts once; a copied folder is refused."""
    runs = root / "runs"
    tabled_run(runs, "s1", 1), tabled_run(runs, "s2", 2)
    (root / "link").symlink_to(runs / "s1", target_is_directory=True)
    text, err = table_of(root, runs, root / "link", runs / ".." / "runs")
    once = "| ml-100k | regular | sasrec | inbatch | ID | E2E | 2 |" in text and "counted once: 3 run folder(s)" in err
    shutil.copytree(runs / "s1", runs / "s1-copy")
    copied, _ = table_of(root, runs)
    return Outcome(f"{'one row of 2 seeds' if once else text[:80]}; copy: {copied[:100]}",
                   once and one_error(copied, "hold the same trained run", "counts once"))


def table_other_data_same_name(root: Path) -> Outcome:
    """Two runs on different users files under one data set name were averaged as one row of 2 seeds."""
    runs = root / "runs"
    tabled_run(runs, "s1", 1), tabled_run(runs, "s2", 2, users_sha="c" * 64)
    text, _ = table_of(root, runs)
    return Outcome(text[:150], one_error(text, "s1 and", "s2 were trained on different data under one data set name "
                                         "'ml-100k' (users sha256 aaaaaaaaaaaa vs cccccccccccc)"))


def table_wrong_type(root: Path) -> Outcome:
    """A string where a number is expected, a list: one line naming the file and key, no traceback."""
    seen, ok = [], True
    for file, key, value in (("config.json", "seed", "1"), ("test_metrics.json", "test", {"HR@10": [0.1], "NDCG@10": 0.1}),
                             ("test_metrics.json", "num_users", "200")):
        runs = root / f"{key}"
        tabled_run(runs, "s1", 1), tabled_run(runs, "s2", 2)
        path = runs / "s2" / file
        path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
        text, _ = table_of(root, runs)
        seen.append(text[len("error: "):][:90])
        ok &= one_error(text, f"s2/{file}: {key}", "holds")
    return Outcome("; ".join(seen), ok)


TABLE_CASES = [
    Case("table_checkpoint_changed", "exit 2 naming the run's checkpoint_best.pt and 're-run the run's test script'",
         table_checkpoint_changed),
    Case("table_ranks_not_its_own", "random bytes, truncated, another run's test_ranks.npz: exit 2 naming the file",
         table_ranks_not_its_own),
    Case("table_run_counted_once", "a link / a folder given twice: one row of 2 seeds, 'counted once'; a copy: exit 2",
         table_run_counted_once),
    Case("table_other_data_same_name", "exit 2 naming both runs and the users file's digests", table_other_data_same_name),
    Case("table_wrong_type", "exit 2: one line naming the file and key", table_wrong_type),
]
CASES += TABLE_CASES


def run_case(case: Case, root: Path) -> Outcome:
    try:
        return case.run(root)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # a drill reports a broken case (even a SystemExit) instead of stopping
        return Outcome(f"drill error {type(err).__name__}: {err}", False)


def table_cell(text: str, width: int = 400) -> str:
    """One Markdown table cell: no pipes or line breaks (a traceback in an observation would
    break the table), at most `width` characters."""
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(rows: list[tuple[str, str, str, bool]]) -> bool:
    """The drill's report on stdout; True when every case passed."""
    print("| case | expected | observed | pass |\n|---|---|---|---|")
    for name, expected, observed, passed in rows:
        print(f"| {name} | {table_cell(expected)} | {table_cell(observed)} | {'yes' if passed else 'NO'} |")
    failed = [row[0] for row in rows if not row[3]]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return not failed


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    unknown = sorted(set(args.only or []) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(c.name for c in CASES)}")
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            start = time.perf_counter()
            root = Path(tmp) / case.name
            root.mkdir()
            outcome = run_case(case, root)
            rows.append((case.name, case.expected, outcome.observed, outcome.passed))
            print(f"{case.name}: {'pass' if outcome.passed else 'FAIL'} "
                  f"({time.perf_counter() - start:.1f}s)", file=sys.stderr)
    raise SystemExit(0 if print_table(rows) else 1)


if __name__ == "__main__":
    main_cli()

