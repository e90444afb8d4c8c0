"""What a run costs, recorded per epoch in metrics.jsonl: seconds, items encoded per
second, trainable parameters and peak memory.

- ``train_seconds`` and ``train_cpu_seconds``: the wall seconds (time.perf_counter) and this
  process's CPU seconds (time.process_time: user + system time of all its threads) of the epoch's
  training steps, evaluation excluded (`TrainClock`); under DDP rank 0's, which writes
  metrics.jsonl. DataLoader worker processes are not included in the CPU seconds. With N threads
  the CPU seconds can reach N x the wall seconds; a run that was paused (SIGSTOP) or waited for a
  core on a loaded machine shows wall seconds well above its CPU seconds. On CUDA the CPU seconds
  are the host's (launching kernels, waiting on the device), not the GPU's.
- ``items_encoded_per_second``: item vectors the item tower computed in the epoch's training
  steps (all ranks), per second of training. An item counts once per batch when the tower
  deduplicates (text / vision end to end, the default), once per slot otherwise (ID lookups, the
  two-stage head, `--dedup_items false`); padding slots never count. See
  `morec.models.recommender.Recommender.items_encoded`.
- ``trainable_parameters``: parameters with requires_grad (frozen encoder weights and cached
  two-stage features are not parameters that train).
- ``peak_memory_mb`` (MiB, 2^20 bytes) over the epoch's training and evaluation, of this
  process (under DDP rank 0, which writes metrics.jsonl), and ``peak_memory_kind``: "max_allocated" on CUDA
  (torch.cuda.max_memory_allocated: tensors only, not the allocator's cache), "max_rss" on CPU
  (the resident set's high-water mark VmHWM of /proc/self/status, reset at the epoch start through
  Linux's /proc/self/clear_refs; DataLoader worker processes are not included), or
  "max_rss_process" where that reset is refused: then it is getrusage's peak since the process
  started, which may come from earlier work of the same process (an earlier run of a study).
  Not getrusage on Linux: its ru_maxrss also keeps the peak that any exited thread of the process
  saw, which clear_refs does not reset.

``tpme``: IISAN's composite of the three (Fu et al., SIGIR 2024, "training-time, parameter and
memory efficiency"), used by morec/report/rows.py (the tables) and scripts/bench_iisan.py.
"""
from __future__ import annotations

import math
import resource
import sys
import time

import torch

MIB = 2 ** 20
TPME_WEIGHTS = (1 / 3, 1 / 3, 1 / 3)     # training time, trainable parameters, memory: equal weights


def tpme(cost: tuple[float, float, float], reference: tuple[float, float, float],
         weights: tuple[float, float, float] = TPME_WEIGHTS) -> float:
    """TPME = w_T * T / T_ref + w_P * P / P_ref + w_M * M / M_ref (Fu et al., SIGIR 2024, IISAN):
    `cost` and `reference` are (training time, trainable parameters, memory), the reference being
    full fine-tuning; lower is better, 1 for the reference. The weights here are equal (1/3 each);
    the paper weighs its terms with its own factors, so values compare rows measured alike, not
    with the paper's. NaN when a value is NaN or a reference value is not positive."""
    if len(cost) != 3 or len(reference) != 3 or any(not ref > 0 for ref in reference):
        return math.nan
    return sum(w * (value / ref) for w, value, ref in zip(weights, cost, reference))


class TrainClock:
    """Wall and CPU seconds since it was made (module docstring: train_seconds, train_cpu_seconds)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def seconds(self) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this process, all threads) since the clock started."""
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak-memory window; returns the kind of peak `peak_memory_mb` will report."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "max_allocated"
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")                      # Linux >= 4.0: reset the peak RSS to the current RSS
        return "max_rss"
    except OSError:
        return "max_rss_process"


def linux_rss_high_water_kib() -> int | None:
    """VmHWM of /proc/self/status (KiB), the peak RSS that clear_refs resets; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])                         # "VmHWM:  123456 kB"
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since `reset_peak_memory` (or the process start), MiB."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    high_water_kib = linux_rss_high_water_kib()
    if high_water_kib is not None:
        return round(high_water_kib / 1024, 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss                # KiB on Linux, bytes on macOS
    return round(peak / (MIB if sys.platform == "darwin" else 1024), 1)
