"""Fault drill: kill, preempt and feed broken input to real ml-100k runs; print what happened.

    python scripts/fault_drill.py [--only NAME ...]

Each case runs end to end (processes started and killed like a cluster would, or the library
called with one fault injected) and is judged against what the README promises. The output is a
table: case, expected, observed, pass. tests/test_faults.py runs every case as a test.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import runpy
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
    """`python script ARGS` inside this process; returns (exit code, stderr)."""
    params = runpy.run_path(str(REPO / script), run_name="params_only")["params"]
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(params, "train", str(REPO / script), args)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


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
    import morec.checkpoint as checkpoint
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("checkpoint_last.pt") and sum(str(c).endswith("checkpoint_last.pt") for c in calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    checkpoint.os.replace = failing_replace
    try:
        code, err = run_in_process([*RUN_ARGS, "--runs_dir", str(root / "runs"), "--label", "full_disk"])
    finally:
        checkpoint.os.replace = real_replace
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


# ----------------------------------------------------------------------------- images

def image_store_case(fault: str) -> Callable[[Path], Outcome]:
    """A truncated LMDB value or bytes that are no image: the error names the key and the LMDB."""
    def run(root: Path) -> Outcome:
        import lmdb
        from PIL import Image

        from morec.data.images import ImageStore, build_lmdb, item_key
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

    from morec.data.images import restricted_loads
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

    from morec.data.posters import render_posters
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
    Case("failed_checkpoint_write", "exit 2, previous checkpoint intact", failed_checkpoint_write),
    Case("corrupt_checkpoint", "exit 2 naming the checkpoint", corrupt_checkpoint),
    Case("nan_stop", "exit 2 naming epoch 2 step 3; epoch-1 checkpoint kept", nan_loss(skip=False)),
    Case("nan_skip", "--skip_nonfinite: batch skipped and counted", nan_loss(skip=True)),
    Case("encoder_without_weights", "exit 2 listing the files the folder needs", encoder_without_weights),
    Case("encoder_wrong_shape", "exit 2: the weights do not fit config.json", encoder_wrong_shape),
    Case("stale_feature_cache", "stale two-stage cache detected and rebuilt", stale_feature_cache),
    Case("lmdb_truncated_value", "InputError naming key and LMDB", image_store_case("truncated")),
    Case("image_not_decodable", "InputError naming key and LMDB", image_store_case("garbage")),
    Case("legacy_pickle_attack", "restricted unpickler refuses; nothing runs", legacy_pickle_refused),
    Case("vision_missing_images", "exit 2: how many items lack an image, and the list file", vision_case("missing_images")),
    Case("vision_no_encoder", "exit 2 naming the encoder folder and README", vision_case("no_encoder")),
    Case("vision_wrong_image_size", "exit 2: ViT-MAE's image size and the fix", vision_case("size")),
]


def run_case(case: Case, root: Path) -> Outcome:
    try:
        return case.run(root)
    except Exception as err:  # a drill reports a broken case instead of stopping
        return Outcome(f"drill error {type(err).__name__}: {err}", False)


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
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
    print("| case | expected | observed | pass |\n|---|---|---|---|")
    for name, expected, observed, passed in rows:
        print(f"| {name} | {expected} | {observed.replace('|', '/')} | {'yes' if passed else 'NO'} |")
    print(f"{sum(r[3] for r in rows)} passed, {sum(not r[3] for r in rows)} failed")
    raise SystemExit(0 if all(r[3] for r in rows) else 1)


if __name__ == "__main__":
    main_cli()
