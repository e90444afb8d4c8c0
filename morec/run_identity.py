"""What ties a run's test results to its files, so that a table can check them (morec/report/run_files.py).

A test (morec.train.test) records in test_metrics.json
    checkpoint        {"file", "bytes", "sha256"} of the checkpoint_best.pt it evaluated
    per_user_sha256   the digest of the per-user arrays it wrote to test_ranks.npz (ranks_digest)
and in test_ranks.npz the same checkpoint sha256 (`checkpoint_sha256`). A table recomputes both:
a checkpoint trained further, resumed or replaced after the test, or a test_ranks.npz of another
test, no longer matches, and the run is refused ("re-run its test script"). Runs tested before
these records existed cannot be checked; the table says so on stderr.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from morec.data.identity import file_sha256      # read in chunks: seconds for a GB-size checkpoint

CHECKPOINT_KEY = "checkpoint"                # in test_metrics.json
RANKS_KEY = "per_user_sha256"                # in test_metrics.json
RANKS_CHECKPOINT = "checkpoint_sha256"       # in test_ranks.npz


def checkpoint_record(path: Path) -> dict:
    """{"file": name, "bytes": size, "sha256": digest} of the checkpoint a test evaluated."""
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def ranks_digest(h: np.ndarray, t: np.ndarray, users, repeat: np.ndarray) -> str:
    """sha256 of the per-user test record: U, then h, t (U,) as int64, repeat (U,) as bool and the
    user names (U,), in this order; the same value from the arrays written and from those np.load reads."""
    digest = hashlib.sha256(f"{len(h)} users\n".encode())
    for values in (np.asarray(h, dtype=np.int64), np.asarray(t, dtype=np.int64), np.asarray(repeat, dtype=bool)):
        digest.update(np.ascontiguousarray(values).tobytes())
    digest.update("\n".join(str(u) for u in users).encode("utf-8"))
    return digest.hexdigest()


def tested_identity(best: Path, h: np.ndarray, t: np.ndarray, users, repeat: np.ndarray) -> dict:
    """The entries a test adds to test_metrics.json (module doc)."""
    return {CHECKPOINT_KEY: checkpoint_record(best), RANKS_KEY: ranks_digest(h, t, users, repeat)}


def checkpoint_check(run_dir: Path, test: dict) -> tuple[str | None, str | None]:
    """(sha256 of the run's checkpoint_best.pt now, None without one; why it is not the checkpoint
    its test evaluated: "" when it is, None when that cannot be checked (no record: a test from
    before it; or the checkpoint was deleted))."""
    best = run_dir / "checkpoint_best.pt"
    now = file_sha256(best) if best.is_file() else None
    record = test.get(CHECKPOINT_KEY)
    if now is None or not isinstance(record, dict):
        return now, None
    if now != record.get("sha256"):
        return now, (f"{best} is not the checkpoint its test evaluated (sha256 {str(record.get('sha256'))[:12]} at "
                     f"the test, {now[:12]} now: trained further, resumed or replaced after the test)")
    return now, ""
