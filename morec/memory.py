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
- MISSRec (`--model missrec`) has its own terms (`missrec_*` below): its interest encoder runs on
  B x L sequences of K interest tokens, its decoder adds cross-attention, and its DPC-KNN
  clustering holds pairwise token distances (B x prefixes x T x T, T = L x modalities tokens) in
  chunks of morec.models.missrec.CLUSTER_ELEMS elements; its candidate vectors are P x d wide.
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
    if model.user_encoder == "missrec":
        count += missrec_parameter_count(model, num_items)
    elif model.user_encoder == "sasrec":
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
    if model.user_encoder == "missrec":
        return missrec_training_bytes(spec)
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
    if model.user_encoder == "missrec":
        return missrec_evaluation_bytes(spec, num_items)
    attention = 2 * u * heads * length * length if model.user_encoder == "sasrec" else 0
    encoder = attention + 8 * u * length * d if model.user_encoder != "dssm" else 4 * u * d
    return FLOAT * ((num_items + 1) * d + encoder + 2 * spec.eval_chunk_elems)


# ----------------------------------------------------------------------------- MISSRec

def missrec_parts(model: ModelSpec) -> tuple[int, int]:
    """(M modality tokens per item, P candidate parts): M from the item tower, P = M (+1 with IDs)."""
    modalities = 2 if model.tower.kind == "text+vision" else 1
    return modalities, modalities + model.missrec.ids


def missrec_parameter_count(model: ModelSpec, num_items: int) -> int:
    """MISSRec's parameters but the heads over the features (their width is known once the
    cache is read): positions and their LayerNorm; per block an interest encoder block (as
    SASRec's, 12 d^2 + 9 d) and a decoder block (self- and cross-attention 8 d^2, feed-forward
    8 d^2 + 5 d, 3 LayerNorms); the fusion's Linear(d, P) (trainable with --missrec_fusion user);
    the ID table with --missrec_ids."""
    d, (_, parts) = model.tower.dim, missrec_parts(model)
    count = (model.max_seq_len + 2) * d + model.blocks * ((12 * d * d + 9 * d) + (16 * d * d + 11 * d))
    count += (d * parts + parts) if model.missrec.fusion == "user" else 0
    return count + ((num_items + 1) * d if model.missrec.ids else 0)


def missrec_cluster_elems(batch: int, length: int, tokens: int) -> int:
    """Elements of one chunk of DPC-KNN's pairwise distances (B x q prefixes x T x T), as
    morec.models.missrec.prefix_interests chunks them."""
    from morec.models.missrec import CLUSTER_ELEMS
    prefixes = min(length, max(1, CLUSTER_ELEMS // max(1, batch * tokens * tokens)))
    return batch * prefixes * tokens * tokens


def missrec_encoder_bytes(batch: int, model: ModelSpec, kept: int) -> int:
    """The user side of one batch of B windows: `kept` copies (about 20 while training, kept for
    backward; 8 without gradients) of the interest encoder's (B L, K, d) and the decoder's
    (B, L, d) states, the attention maps (interest (B L, heads, K, K), decoder (B, heads, L, L),
    3 copies each), the cross-attention's keys and values (B L, K, d) x 4, the clustering
    weights (B, L, K, T) and the modality tokens (B, L, M, d); float32 bytes."""
    length, d, heads, k = model.max_seq_len, model.tower.dim, model.heads, model.missrec.interests
    modalities, _ = missrec_parts(model)
    tokens = length * modalities
    per_block = (batch * length * (kept * k * d + heads * k * k * 3)                   # interest encoder
                 + batch * (kept * length * d + heads * length * length * 3)           # decoder self-attention
                 + batch * length * k * d * 4)                                         # cross-attention K, V
    return FLOAT * (model.blocks * per_block + batch * length * k * tokens + batch * length * modalities * d * 3)


def missrec_cluster_bytes(batch: int, model: ModelSpec) -> int:
    """DPC-KNN's transient share (no gradient, freed before the encoder runs): about 3 float32
    copies of one chunk of pairwise distances (the distances, the masked ones, the nearer-parent
    ones; the masks are bytes); measured: tests/test_missrec_memory.py."""
    modalities, _ = missrec_parts(model)
    return FLOAT * 3 * missrec_cluster_elems(batch, model.max_seq_len, model.max_seq_len * modalities)


def missrec_training_bytes(spec: MemorySpec) -> int:
    """One MISSRec training batch: the clustering's distances come and go before the encoder
    runs, so the peak is the larger of them and of the user side kept for backward with the
    loss's logits (in-batch: (B L) x (B (L+1)), 3 copies) and the P x d wide candidates."""
    model, b = spec.model, spec.batch_size
    length, d = model.max_seq_len, model.tower.dim
    _, parts = missrec_parts(model)
    logits = (b * length) * (b * (length + 1)) * 3 if model.loss.kind == "inbatch" else b * length * 6
    candidates = b * (length + 1) * parts * d * 4                                     # states and candidates
    return max(missrec_cluster_bytes(b, model), missrec_encoder_bytes(b, model, 20) + FLOAT * (logits + candidates))


def missrec_evaluation_bytes(spec: MemorySpec, num_items: int) -> int:
    """Evaluation: the catalogue's P x d wide vectors, one user batch through clustering and the
    encoder-decoder without gradients, two score blocks."""
    model, u = spec.model, spec.eval_batch_size
    _, parts = missrec_parts(model)
    user_side = max(missrec_encoder_bytes(u, model, 8), missrec_cluster_bytes(u, model))
    return FLOAT * ((num_items + 1) * parts * model.tower.dim + 2 * spec.eval_chunk_elems) + user_side


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
