"""The run folder: its files, lock, resume checks, config records, logging and signals (random
state and checkpoint contents: morec.run_state; metrics and test records: morec.run_records; the
training loop itself: morec.train).

A run lives in one folder: config.json (resolved values), train.log, metrics.jsonl (one line per
evaluation), checkpoint_last.pt (everything needed to resume), checkpoint_best.pt (weights of the
best valid HR@10) and, after testing, test_metrics.json and test_ranks.npz (per-user tie counts).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tqdm import tqdm

from morec.atomic_io import remove_stale_temp_files, write_json_atomic
from morec.checkpoint import load_checkpoint
from morec.config import RUN_CONTROL, UNUSED_BY_TOWER, Config, make_config, run_control, run_setting
from morec.data.identity import check_recorded_files
from morec.digests import forget_inputs
from morec.distributed import World, barrier
from morec.errors import InputError
from morec.nearest_run import no_checkpoint_message
from morec.runlock import run_lock

if TYPE_CHECKING:
    from morec.train import EpochProgress

log = logging.getLogger("morec")


@dataclass(frozen=True)
class RunFiles:
    """The paths of one run folder's files."""
    dir: Path

    @property
    def config(self) -> Path: return self.dir / "config.json"
    @property
    def log(self) -> Path: return self.dir / "train.log"
    @property
    def metrics(self) -> Path: return self.dir / "metrics.jsonl"
    @property
    def last(self) -> Path: return self.dir / "checkpoint_last.pt"
    @property
    def best(self) -> Path: return self.dir / "checkpoint_best.pt"
    @property
    def test(self) -> Path: return self.dir / "test_metrics.json"
    @property
    def test_ranks(self) -> Path: return self.dir / "test_ranks.npz"


# ----------------------------------------------------------------------------- the folder and its log

@contextlib.contextmanager
def training_folder(cfg: Config, files: RunFiles) -> Iterator[None]:
    """Hold the run folder while a run trains: its lock (rank 0; morec.runlock), temp files a
    killed run left removed, and a new run's folder removed again if its setup fails."""
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if cfg.init_from and not (cfg.resume and files.last.exists()):
        refuse_own_source(cfg, files)
    with run_lock(files.dir, take=main_rank):
        if main_rank and (stale := remove_stale_temp_files(files.dir)):
            log.warning("removed %s left in %s by a killed run", ", ".join(stale), files.dir)
        # a finished run's files are never removed by a failure, unless --overwrite said so
        fresh = main_rank and not (cfg.resume and files.last.exists()) and (cfg.overwrite or not finished_files(files))
        with removed_if_setup_fails(files, fresh):
            yield


def refuse_own_source(cfg: Config, files: RunFiles) -> None:
    """--init_from naming the run's own folder: a new run there would delete the checkpoint it
    starts from (--overwrite included), so it is refused before anything is touched."""
    if Path(cfg.init_from).expanduser().resolve() == files.dir.expanduser().resolve():
        raise InputError(f"--init_from {cfg.init_from} names this run's own folder {files.dir}: a new run "
                         "there would delete the checkpoint it starts from (even with --overwrite); "
                         "pass --label NAME for the new run")


@contextlib.contextmanager
def removed_if_setup_fails(files: RunFiles, fresh: bool):
    """A new run that fails before its first checkpoint_last.pt (bad encoder weights, too little
    memory, a NaN loss or a full disk in epoch 1, ...) leaves no folder behind: its files are
    removed, then the folder and the runs folder if empty. Only once it has written its own
    config.json: a command refused before that (even with --overwrite) removes no earlier run's files."""
    before = file_identity(files.config)
    try:
        yield
    except BaseException:
        if fresh and not files.last.exists() and file_identity(files.config) != before:
            for path in (files.config, files.log, files.metrics, files.best, files.test,
                         *files.dir.glob(".*.tmp*")):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                files.dir.rmdir()
                files.dir.parent.rmdir()               # the runs folder too, if this made it
        raise


def file_identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None if absent: a file rewritten (atomically) has another."""
    with contextlib.suppress(OSError):
        stat = path.stat()
        return stat.st_ino, stat.st_mtime_ns
    return None


@contextlib.contextmanager
def run_logging(path: Path | None):
    """Log to stderr and to the run's train.log (appending, so a resumed run keeps its history).
    path None (DDP ranks other than 0): warnings on stderr only."""
    log.setLevel(logging.INFO if path is not None else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if path is not None:
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


# ----------------------------------------------------------------------------- progress of an epoch

def progress(iterable, cfg: Config, **kwargs):
    """`iterable` with a tqdm bar when cfg.progress and stderr is a terminal."""
    return tqdm(iterable, disable=not shows_bar(cfg), leave=False, **kwargs)


def shows_bar(cfg: Config) -> bool:
    """Whether progress shows as a bar (else as StepLog lines)."""
    return cfg.progress and sys.stderr.isatty()


class StepLog:
    """Without a progress bar (a log file, a SLURM job), a log line every `cfg.log_every`
    optimizer steps, or about every `seconds` when that is 0, so a slow run is seen to be alive."""

    def __init__(self, cfg: Config, epoch: int, total: int, seconds: float = 30.0):
        self.enabled, self.every, self.seconds = not shows_bar(cfg), cfg.log_every, seconds
        self.epoch, self.total = epoch, total
        self.start = self.last = time.perf_counter()
        self.items = 0

    def step(self, done: "EpochProgress", micro_batches: list[dict]) -> None:
        """Count the step's items (non-padding item slots); log when a line is due."""
        if not self.enabled:
            return
        self.items += sum(int(batch[key].count_nonzero()) for batch in micro_batches
                          for key in ("seqs", "items") if key in batch)
        now = time.perf_counter()
        due = done.step % self.every == 0 if self.every > 0 else now - self.last >= self.seconds
        if due:
            self.last = now
            loss = done.loss_sum / max(done.step - done.skipped, 1)
            log.info("epoch %d step %d/%d loss %.4f, %.0f items/s", self.epoch, done.step, self.total,
                     loss, self.items / max(now - self.start, 1e-9))


# ----------------------------------------------------------------------------- start or resume

def defining_values(cfg: Config) -> dict:
    """The values that define a run's numbers (everything but the run-control values; `epoch`
    is one of them under --lr_schedule cosine)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in run_control(cfg)}


def saved_setting(saved: dict) -> dict:
    """The world size and precision a run folder's config.json records (older runs, without a
    "setting" entry: derived from their saved nproc_per_node, nnodes, device, amp, amp_dtype, with
    device "auto" resolved on this machine)."""
    if "setting" in saved:
        return saved["setting"]
    known = {f.name for f in fields(Config)}
    return run_setting(make_config({k: v for k, v in saved.items() if k in known}))


def config_record(cfg: Config) -> dict:
    """What config.json holds: every value (epoch and patience included) and the run setting."""
    return {**cfg.to_dict(), "setting": run_setting(cfg)}


def prepare_run(cfg: Config, files: RunFiles, world: World) -> dict | None:
    """Rank 0 checks and prepares the folder; every rank then gets the same checkpoint (or None)."""
    checkpoint = start_or_resume(cfg, files) if world.is_main else None
    barrier(world)
    if not world.is_main and cfg.resume and files.last.exists():
        checkpoint = load_checkpoint(files.last)
    return checkpoint


def start_or_resume(cfg: Config, files: RunFiles) -> dict | None:
    """Check the run folder; return the checkpoint to resume from, or None to start fresh."""
    forget_inputs()                          # the inputs this run reads are noted from here on
    if files.last.exists() and cfg.resume:
        check_resume_values(cfg, files)
        check_recorded_files(files.config, "resume")
        return load_checkpoint(files.last)
    if files.last.exists() and not cfg.overwrite:
        raise InputError(f"{files.dir} already holds a run; pass --resume to continue it, "
                         "--overwrite to start over, or --label NAME for a new run")
    if (kept := finished_files(files)) and not cfg.overwrite:
        kept_list = ", ".join(kept)
        if cfg.resume:
            raise InputError(f"--resume of {files.dir}: its {files.last.name} is missing, so there is nothing "
                             f"to continue, and it holds a finished run ({kept_list}); restore "
                             f"{files.last.name}, pass --overwrite to retrain it from scratch, or --label NAME")
        raise InputError(f"{files.dir} holds a finished run ({kept_list}, no {files.last.name}); pass "
                         "--overwrite to retrain it from scratch (deleting them), or --label NAME for a new run")
    start_folder(cfg, files)
    return None


def finished_files(files: RunFiles) -> list[str]:
    """The files that make a folder a finished run (a best checkpoint, test results), whatever
    else is missing: a new run there deletes them, so it needs --overwrite."""
    return [path.name for path in (files.best, files.test, files.test_ranks) if path.exists()]


def check_resume_values(cfg: Config, files: RunFiles) -> None:
    """--resume continues a run with its own values and setting; a new epoch or patience is
    written into its config.json."""
    saved = read_run_config(files)
    changed = {k for k, v in defining_values(cfg).items() if saved.get(k, v) != v}
    if changed:
        raise InputError(f"--resume of {files.dir} with other values for {sorted(changed)}; "
                         "resume with the values of config.json or use another --label")
    if saved and saved_setting(saved) != run_setting(cfg):
        raise InputError(f"--resume of {files.dir} with setting {run_setting(cfg)}, but it was trained with "
                         f"{saved_setting(saved)} (world size = nproc_per_node x nnodes; precision from "
                         "--amp, --amp_dtype, --cpu_amp and the device): these change the numbers; resume with the "
                         "saved setting or start a new run (another --label, or without --label)")
    if saved and any(saved.get(k) != getattr(cfg, k) for k in ("epoch", "patience")):
        write_json_atomic(files.config, {**saved, "setting": saved_setting(saved), "epoch": cfg.epoch,
                                         "patience": cfg.patience})


def start_folder(cfg: Config, files: RunFiles) -> None:
    """Make the folder of a new run: an earlier run's files removed, the new config.json written."""
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        for path in (files.last, files.best, files.metrics, files.test, files.test_ranks, files.log):
            path.unlink(missing_ok=True)
        write_json_atomic(files.config, config_record(cfg))
    except OSError as err:
        raise InputError(f"cannot write to the run folder {files.dir} ({err}); "
                         "free space or choose a writable --runs_dir") from None


def read_run_config(files: RunFiles) -> dict:
    """The run's config.json (the values it was trained with), or a clear error."""
    fix = "restore it, or retrain the run (the train script with --overwrite)"
    try:
        saved = json.loads(files.config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{files.config} is missing, so the values of this run are unknown; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{files.config} cannot be read ({err}); {fix}") from None
    if not isinstance(saved, dict):
        raise InputError(f"{files.config} holds a {type(saved).__name__}, not the run's values; {fix}")
    return saved


def saved_config(files: RunFiles, cfg: Config) -> Config:
    """The run's own config.json, with this invocation's run-control values (device, sizes)."""
    if not files.best.exists():
        raise InputError(no_checkpoint_message(files.dir, cfg))
    saved = read_run_config(files)
    forget_inputs()                          # the inputs this test reads are noted from here on
    check_recorded_files(files.config, "test")
    known = {f.name for f in fields(Config)}
    values = {k: v for k, v in saved.items() if k in known}
    values.update({k: getattr(cfg, k) for k in RUN_CONTROL if k in known})
    warn_ignored_values(cfg, values, files.dir)
    try:
        return make_config(values)
    except InputError as err:
        raise InputError(f"{files.config}: {err}; restore the file or retrain the run") from None


def warn_ignored_values(given: Config, saved: dict, run_dir: Path) -> None:
    """A test evaluates the run as trained: say which of the given values (script or command
    line) differ from the run's saved ones and are therefore not used."""
    read = set(saved) - UNUSED_BY_TOWER.get(saved.get("item_tower", "id"), set())
    for name in sorted(read - RUN_CONTROL):
        value = getattr(given, name)
        if value != saved[name]:
            print(f"warning: --{name} {value} is ignored: run {run_dir.name} was trained with "
                  f"{name} {saved[name]} and is tested as trained", file=sys.stderr)


# ----------------------------------------------------------------------------- signals, random state

@contextlib.contextmanager
def stop_signals():
    """SIGTERM (cluster preemption) and SIGINT ask the loop to stop after the current step and
    save a checkpoint; a second SIGINT stops at once. Yields {"signal": None or the number}."""
    request = {"signal": None}

    def handler(signum, _frame):
        if request["signal"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt           # a second Ctrl-C; a repeated SIGTERM (SLURM sends
        request["signal"] = signum            # it to every process of a job) is the same request

    if threading.current_thread() is not threading.main_thread():
        yield request                         # signals can only be caught in the main thread
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
