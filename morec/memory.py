"""Will a run fit in memory? An estimate made before anything is allocated.

`--embedding_dim 1000000` or `--max_seq_len 100000` used to end in an allocator traceback or a
silent OOM kill. The estimate counts what the values alone decide, in float32 bytes:
- parameters: the ID embedding tables (items, and users for DSSM), SASRec's position table and
  blocks (12 d^2 each: Q, K, V, O and the 4d feed-forward), GRU4Rec's GRU (6 d^2), NextItNet's
  convolutions (4 of 3 d^2 per repeat); while training x4 for the gradient and AdamW's two moments;
- training activations of one batch: per SASRec block the attention maps (B x heads x L x L,
  kept for backward about 3 times: scores, probabilities, dropout mask) and about 20 tensors of
  B x L x d (GRU4Rec: about 20 in all; NextItNet: about 20 per repeat, no attention maps); the
  in-batch loss's (B L) x (B (L+1)) logits (about 3 copies);
- `--extra_negatives K`: K more logit columns for every row ((B L) x K, about 3 copies) and the
  K candidates' vectors (about 3 copies of K x d, and their int64 ids);
- evaluation: the catalogue's vectors, one user batch through the encoder, and about two score
  blocks of `eval_chunk_elems` (SPEC "Evaluation", README "Evaluation cost").
A pretrained text or vision encoder is not counted (its size is known only once loaded), so
the estimate is a lower bound: it refuses what cannot fit, it does not promise the rest fits.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from morec.errors import InputError
from morec.specs import MemorySpec, ModelSpec

FLOAT = 4          # bytes of a float32
GIB = 2 ** 30


def parameter_count(model: ModelSpec, num_items: int, num_users: int) -> int:
    """Trainable recommender parameters the values decide (pretrained encoders excluded)."""
    d, tower = model.tower.dim, model.tower
    count = (num_items + 1) * d if tower.kind == "id" or tower.fusion != "none" else 0
    if model.user_encoder == "sasrec":
        count += (model.max_seq_len + 2) * d + model.blocks * (12 * d * d + 9 * d)       # positions, LNs, blocks
    elif model.user_encoder == "gru4rec":
        count += 6 * d * d + 6 * d                                                         # 3 gates x (W_ih, W_hh)
    elif model.user_encoder == "nextitnet":
        count += model.blocks * 4 * (3 * d * d + 3 * d)                                    # convolutions, LNs
    else:
        count += num_users * d + 2 * model.dnn_layers * (d * d + d)
    return count


def training_activation_bytes(spec: MemorySpec) -> int:
    """Activations of one training batch kept for backward."""
    model, loss = spec.model, spec.model.loss
    b, length, d, heads = spec.batch_size, model.max_seq_len, model.tower.dim, model.heads
    if model.user_encoder == "dssm":
        logits = b * b * 3 if loss.kind == "inbatch" else b * (1 + loss.neg_num) * 3
        return FLOAT * (b * d * (4 + 2 * model.dnn_layers) * 3 + logits)
    attention = b * heads * length * length * 3 if model.user_encoder == "sasrec" else 0   # (B, heads, L, L) x 3
    hidden = b * length * d * 20                                       # (B, L, d) x 20
    layers = 1 if model.user_encoder == "gru4rec" else model.blocks
    logits = (b * length) * (b * (length + 1)) * 3 if loss.kind == "inbatch" else b * length * 6
    return FLOAT * (layers * (attention + hidden) + logits)


def extra_negative_bytes(spec: MemorySpec) -> int:
    """The --extra_negatives' share of a training batch: K logit columns per row and K vectors."""
    model, k = spec.model, spec.model.loss.extra_negatives
    rows = spec.batch_size if model.user_encoder == "dssm" else spec.batch_size * model.max_seq_len
    return FLOAT * (rows * k * 3 + k * model.tower.dim * 3 + 2 * k)


def evaluation_bytes(spec: MemorySpec, num_items: int) -> int:
    """Catalogue vectors, one user batch through the user encoder (no gradient) and two score blocks."""
    model = spec.model
    u, length, d, heads = spec.eval_batch_size, model.max_seq_len, model.tower.dim, model.heads
    attention = 2 * u * heads * length * length if model.user_encoder == "sasrec" else 0
    encoder = attention + 8 * u * length * d if model.user_encoder != "dssm" else 4 * u * d
    return FLOAT * ((num_items + 1) * d + encoder + 2 * spec.eval_chunk_elems)


def estimate(spec: MemorySpec, num_items: int = 0, num_users: int = 0, training: bool = True) -> dict[str, int]:
    """Bytes by part; with num_items = num_users = 0 a bound from the values alone (before the
    data is loaded)."""
    params = parameter_count(spec.model, num_items, num_users) * FLOAT * (4 if training else 1)
    parts = {"parameters" + (", gradients and AdamW state" if training else ""): params,
             "evaluation": evaluation_bytes(spec, num_items)}
    if training:
        parts["activations of a training batch"] = training_activation_bytes(spec)
        if spec.model.loss.extra_negatives:
            parts["extra negatives' logit columns and vectors"] = extra_negative_bytes(spec)
    return parts


def _meminfo_available() -> int | None:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _cgroup_available() -> int | None:
    """The container's memory limit minus its use (cgroup v2), if it has one."""
    folder = Path("/sys/fs/cgroup")
    try:
        limit = (folder / "memory.max").read_text().strip()
        used = int((folder / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def available_bytes(device: torch.device) -> int:
    """Free memory where the run's tensors go: the GPU's free memory, or the machine's
    available memory (/proc/meminfo, a cgroup limit, or sysconf)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    candidates = []
    try:
        candidates.append(_meminfo_available())
    except OSError:
        candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    candidates.append(_cgroup_available())
    return min(c for c in candidates if c is not None)


def memory_device(name: str) -> torch.device:
    """The device the run will use (`name`: auto | cpu | cuda | cuda:N; this process's GPU under
    torchrun), without starting it."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        return torch.device("cpu")                 # resolve_device reports the missing GPU
    if name.startswith("cuda:"):
        index = int(name.partition(":")[2])
        return torch.device(name) if index < torch.cuda.device_count() else torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def check_memory(spec: MemorySpec, num_items: int = 0, num_users: int = 0, training: bool = True,
                 available: int | None = None) -> None:
    """Refuse a run whose estimate exceeds the free memory (`available`, default: measured)."""
    device = memory_device(spec.device)
    parts = estimate(spec, num_items, num_users, training)
    need = sum(parts.values())
    free = available_bytes(device) if available is None else available
    if need > free:
        detail = ", ".join(f"{name} {size / GIB:.3g}" for name, size in parts.items())
        raise InputError(f"this run needs at least {need / GIB:.3g} GiB ({detail}), more than the "
                         f"{free / GIB:.3g} GiB free on {device}; lower --embedding_dim, --max_seq_len, "
                         "--batch_size, " + ("--extra_negatives, " if spec.model.loss.extra_negatives and training
                                             else "") + "--eval_batch_size or --eval_chunk_elems")
