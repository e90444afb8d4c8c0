"""What the training-step benchmarks (scripts/bench_*.py) share: the first batches of an epoch,
the timed training step (forward, backward, AdamW), the process's memory, and the
one-configuration-per-process runner with its command-line options. Each benchmark keeps its own
table and output lines; this module prints only a worker's JSON line (answer_as_worker). torch is
imported where it is used, so a parent process that only starts workers (and `--help`) does not
load it.
"""
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# ------------------------------------------------------------------------------ batches and steps

def first_batches(cfg, data, count: int) -> list[dict]:
    """The first `count` training batches of the epoch drawn at cfg.seed (the same batches for every
    configuration of a benchmark); the rest of the epoch is never drawn."""
    from morec.parts import make_batches
    batches = []
    for batch in make_batches(cfg, data).epoch(seed=cfg.seed):
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def eval_loss(model, batch: dict) -> float:
    """The loss of `batch` in eval mode (no dropout), without gradients; leaves the model in train mode."""
    import torch
    model.eval()
    with torch.no_grad():
        loss = model.calculate_loss(batch).item()
    model.train()
    return loss


def training_step(model, optimizer, batch: dict, device_type: str = "cpu", amp: bool = False) -> None:
    """One training step: forward (under bf16 autocast on `device_type` when `amp`), backward,
    optimizer step."""
    import torch
    with torch.autocast(device_type, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
        loss = model.calculate_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed_steps(model, optimizer, batches: list[dict], device=None, amp: bool = False,
                after_step=None) -> list[float]:
    """Wall seconds of one training step on each batch, in order (the first is the warm-up: callers
    take the median of the rest). device: the torch.device the batches are on (default CPU); on
    CUDA each step is timed to the end of its kernels. after_step(seconds): called after each
    step, outside the timing."""
    import torch
    device = device if device is not None else torch.device("cpu")

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    times = []
    for batch in batches:
        synchronize()
        start = time.perf_counter()
        training_step(model, optimizer, batch, device.type, amp)
        synchronize()
        times.append(time.perf_counter() - start)
        if after_step is not None:
            after_step(times[-1])
    return times


def median_after_warmup(times: list[float]) -> float:
    """Median seconds per step, leaving out the first (warm-up) step."""
    return statistics.median(times[1:])


# ------------------------------------------------------------------------------ memory

def rss_mib(key: str) -> float:
    """VmRSS / VmHWM of this process from /proc/self/status, in MiB (NaN off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: /proc/self/clear_refs); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def process_peak_rss_mib() -> float:
    """The peak resident set of this process since it started (ru_maxrss, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ one process per configuration

def add_step_options(parser) -> None:
    """--encoder, --batch, --seq_len, --steps, --threads: the sizes every step benchmark takes."""
    parser.add_argument("--encoder", default="all_minilm_l6_v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)


def add_worker_options(parser) -> None:
    """--cache_dir, --json and the hidden --worker (the configuration a child process runs)."""
    import argparse
    parser.add_argument("--cache_dir", default="", help="token / feature cache (default: a temporary folder)")
    parser.add_argument("--json", default="", help="also write the raw results to this file")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)


def chosen_configs(only: str, configs: dict, default: tuple[str, ...]) -> list[str]:
    """The configuration names of `--only` (comma-separated; `default` when empty); InputError
    naming any that `configs` lacks."""
    from morec.errors import InputError
    names = [n for n in (only.split(",") if only else default) if n]
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise InputError(f"--only {','.join(unknown)}: unknown; choose from {', '.join(configs)}")
    return names


def worker_command(script: str, name: str, args, *extra: str) -> list[str]:
    """The command line that runs configuration `name` (or "prepare") of `script` in a fresh
    interpreter with this run's sizes, then `extra` options."""
    return [sys.executable, script, "--worker", name, "--encoder", args.encoder, "--batch", str(args.batch),
            "--seq_len", str(args.seq_len), "--steps", str(args.steps), "--threads", str(args.threads), *extra]


def run_worker_process(command: list[str], name: str, threads: int) -> dict:
    """Run one configuration's worker (OMP_NUM_THREADS=threads) and return the JSON of its last
    output line; exit with its stderr's tail when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"error: configuration {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def answer_as_worker(args, prepare, worker) -> bool:
    """In a worker process (`--worker NAME`): run prepare(args) for "prepare" (printing "{}") or
    worker(args) for a configuration (printing its result as one JSON line); True when this
    process was a worker, False in the parent."""
    if args.worker == "prepare":
        prepare(args)
        print("{}")
        return True
    if args.worker:
        print(json.dumps(worker(args)))
        return True
    return False


def run_configurations(args, names: list[str], run_worker, prepare_first: bool) -> dict:
    """{name: run_worker(name, args)} for each configuration in `names`, in order, after
    run_worker("prepare", args) when `prepare_first` (the feature cache, extracted once so no
    configuration pays for it). The cache is args.cache_dir, or a temporary folder removed after."""
    with tempfile.TemporaryDirectory() as tmp:
        args.cache_dir = args.cache_dir or tmp
        if prepare_first:
            run_worker("prepare", args)
        return {name: run_worker(name, args) for name in names}
