"""A run's records: metrics.jsonl, the cost fields of an epoch, test_metrics.json and
test_ranks.npz (the per-user tie counts the tables' paired tests read), and the test's lines on
stdout (the run folder itself is morec.runs)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from morec.atomic_io import write_bytes_atomic, write_text_atomic
from morec.config import Config
from morec.cost import peak_memory_mb, trainable_parameters
from morec.distributed import World, all_reduce_sum
from morec.evaluate import cold_start_view, kept_users, repeat_record
from morec.run_identity import RANKS_CHECKPOINT, file_sha256, tested_identity
from morec.runs import RunFiles

if TYPE_CHECKING:
    from morec.data import SequenceData
    from morec.train import Run

def write_metrics(files: RunFiles, history: list[dict], world: World) -> None:
    """Rewrite metrics.jsonl (rank 0) from the history: one json line per evaluated epoch."""
    if world.is_main:
        write_text_atomic(files.metrics, "".join(json.dumps(r) + "\n" for r in history))


def cost_record(run: Run, train_seconds: float, memory_kind: str) -> dict:
    """The epoch's cost fields of metrics.jsonl (morec.cost): items encoded per second of training
    (all ranks), trainable parameters, and this rank's peak memory over training and evaluation."""
    items = all_reduce_sum(torch.tensor(float(run.items_encoded), device=run.device), run.world)
    return {"items_encoded_per_second": round(float(items) / max(train_seconds, 1e-9), 1),
            "trainable_parameters": trainable_parameters(run.model),
            "peak_memory_mb": peak_memory_mb(run.device), "peak_memory_kind": memory_kind}


def test_record(files: RunFiles, cfg: Config, data: SequenceData, checkpoint: dict,
                metrics: dict[str, float], counts: torch.Tensor) -> dict:
    """What test_metrics.json holds: the best epoch, its valid and test metrics, the tie rule,
    the repeat rule with the number and share of repeat targets (test; valid in "valid_repeats"),
    and (cold_start_count > 0) the cold-start view of the test targets (of the users the repeat
    rule keeps), and the digests that tie it to its checkpoint and test_ranks.npz (morec.run_identity)."""
    repeat = torch.from_numpy(data.split_repeats("test"))
    keep = kept_users(repeat, cfg.repeat_targets)
    result = {"label": files.dir.name, "best_epoch": checkpoint["epoch"], "valid": checkpoint["valid"],
              "test": metrics, "num_users": data.num_users, "num_items": data.num_items, "ties": cfg.ties,
              "users_with_ties": int((counts[keep, 1] > 0).sum()), "per_user": files.test_ranks.name,
              **repeat_record(repeat, cfg.repeat_targets),
              "valid_repeats": repeat_record(torch.from_numpy(data.split_repeats("valid")), cfg.repeat_targets),
              **tested_identity(files.best, counts[:, 0].numpy(), counts[:, 1].numpy(), data.user_names, repeat.numpy())}
    result["cold_start"] = (cold_start_view(counts[keep], data.train_counts(), data.split_target("test")[keep.numpy()],
                                            cfg.cold_start_count, ties=cfg.ties)
                            if cfg.cold_start_count > 0 else None)
    return result


def print_test_result(result: dict) -> None:
    """The test's lines on stdout: valid of the best epoch, the cold-start view, test."""
    print(f"{result['label']} (best epoch {result['best_epoch']}): valid {percent(result['valid'])}")
    if (cold := result["cold_start"]) is not None:
        print(f"cold-start view (test targets with < {cold['below']} train interactions, {cold['users']} users): "
              + (percent(cold["metrics"]) if cold["metrics"] else "none"))
    if result.get("repeat_count"):
        print(f"repeat targets (also in the user's history): {result['repeat_count']} of {result['num_users']} "
              f"({100 * result['repeat_share']:.1f}%), rule {result['repeat_targets']}")
    print(f"test {percent(result['test'])}")


def percent(metrics: dict[str, float], k: int = 10) -> str:
    """'HR@k .. NDCG@k ..' in percent."""
    return f"HR@{k} {100 * metrics[f'HR@{k}']:.2f} NDCG@{k} {100 * metrics[f'NDCG@{k}']:.2f}"


def save_test_ranks(path: Path, counts: torch.Tensor, user_names: list[str], repeat: np.ndarray) -> None:
    """Per-user test tie counts for paired statistics (morec/report/run_files.py): an .npz holding
    `h` and `t` (U,) int64 (items strictly above / tied with the target, SPEC "Evaluation"; a
    target removed by the repeat rule has h = morec.evaluate.MISSED, t = 0), `repeat` (U,) bool
    (the target also occurs in the history; `skip` leaves these users out of the metrics) and
    `user` (U,) the user names in the same order, `checkpoint_sha256` (the tested checkpoint's,
    morec.run_identity); loads with np.load(path, allow_pickle=False)."""
    buffer = io.BytesIO()
    np.savez(buffer, h=counts[:, 0].numpy(), t=counts[:, 1].numpy(), user=np.array(user_names, dtype=str),
             repeat=np.asarray(repeat, dtype=bool), **{RANKS_CHECKPOINT: np.array(file_sha256(RunFiles(path.parent).best))})
    write_bytes_atomic(path, buffer.getvalue())
