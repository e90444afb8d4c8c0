"""The training loop and the test run (SPEC "Training", "Evaluation").

A run lives in one folder: config.json (resolved values), train.log, metrics.jsonl (one line per
evaluation), checkpoint_last.pt (everything needed to resume), checkpoint_best.pt (weights of the
best valid HR@10) and, after testing, test_metrics.json and test_ranks.npz (per-user tie counts).

Reproducibility: the model is initialised from `seed`; every epoch derives its random streams
(batch order, negatives, dropout, DataLoader workers) from (seed, epoch, rank, purpose)
(morec.streams), so a run resumed from the checkpoint of epoch e continues exactly as the
uninterrupted run would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from morec.atomic_io import remove_stale_temp_files, write_bytes_atomic, write_json_atomic, write_text_atomic
from morec.checkpoint import load_checkpoint, load_weights, require_entries, save_checkpoint
from morec.cost import peak_memory_mb, reset_peak_memory, trainable_parameters
from morec.config import RUN_CONTROL, UNUSED_BY_TOWER, Config, make_config, run_setting, validate
from morec.data import PairBatches, SequenceBatches, SequenceData, load_sequence_data
from morec.data.images import BatchesWithImages, ItemChunks, ItemImages, image_loader
from morec.data.identity import bind_run_to_data, check_data_identity, data_identity
from morec.distributed import World, all_reduce_sum, any_rank, barrier, gather_rows, init_world
from morec.errors import InputError, Preempted
from morec.memory import check_memory
from morec.runlock import run_lock
from morec.evaluate import check_tie_rule, cold_start_view, metrics_from_counts, tie_counts
from morec.features import item_tower_inputs, run_item_images
from morec.models import LayerMixFeatureTower, Recommender
from morec.models.build import build_model
from morec.resolve import data_spec, item_input_spec, memory_spec, model_spec, transfer_spec
from morec.transfer import check_source, freeze_user_encoder, init_from_source, record_source
from morec.data.sequences import with_train_users
from morec.models.adapters import reloaded_digest, reloaded_keys, trained_state
from morec.streams import DROPOUT, STREAMS, WORKERS, stream_generator, stream_seed

log = logging.getLogger("morec")


@dataclass(frozen=True)
class RunFiles:
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


# ----------------------------------------------------------------------------- setup

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} asked for, but CUDA is not available; use --device cpu")
    if name.startswith("cuda:") and int(name.partition(":")[2]) >= torch.cuda.device_count():
        raise InputError(f"--device {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def start_devices(cfg: Config) -> tuple[torch.device, World]:
    """This process's device and its place among torchrun's processes (one GPU per process)."""
    device = resolve_device(cfg.device)
    world = init_world(device.type)
    if world.distributed and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device, world


def check_config(cfg: Config) -> None:
    """Every value checked before anything is written (morec.config.validate)."""
    validate(cfg)


def load_data(cfg: Config) -> SequenceData:
    check_config(cfg)
    data = load_sequence_data(cfg.data_dir(), cfg.behaviors, cfg.news, cfg.max_seq_len,
                              cfg.min_seq_len, cfg.warm_min_count)
    return with_train_users(data, cfg.train_user_fraction) if cfg.train_user_fraction < 1 else data


def build_run_model(cfg: Config, data: SequenceData, device: torch.device) -> Recommender:
    item_inputs = item_tower_inputs(item_input_spec(cfg), data, device)   # modality towers: tokens / cached features
    torch.manual_seed(cfg.seed)
    popularity = torch.from_numpy(data.popularity()).clamp_min(1e-30)   # (N+1,), > 0 so log is finite
    model = build_model(model_spec(cfg), data.num_items, data.num_users, popularity, item_inputs).to(device)
    if cfg.freeze_user_encoder:                               # issue 16: linear-probe-style transfer
        log.info("--freeze_user_encoder: %d user-encoder parameters do not train", freeze_user_encoder(model))
    if device.type == "cuda":
        for module in model.modules():
            if hasattr(module, "use_channels_last"):          # a ResNet vision tower
                module.use_channels_last()
    return model


def build_optimizer(model: Recommender, cfg: Config) -> torch.optim.Optimizer:
    """AdamW with two groups: the pretrained encoder (fine_tune_*) and everything else."""
    encoder = [p for p in model.item_tower.encoder_parameters() if p.requires_grad]
    mix = [p for m in model.modules() if isinstance(m, LayerMixFeatureTower) for p in (m.layer_scalars, m.gamma)]
    own_group = {id(p) for p in encoder + mix}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own_group]
    groups = [{"params": rest, "lr": cfg.lr, "weight_decay": cfg.l2_weight}]
    encoder_all = model.item_tower.encoder_parameters()
    if encoder_all:
        log.info("trainable encoder tensors: %d of %d (%d of %d parameters, lr %g, weight decay %g)",
                 len(encoder), len(encoder_all), sum(p.numel() for p in encoder),
                 sum(p.numel() for p in encoder_all), cfg.fine_tune_lr, cfg.fine_tune_l2_weight)
    log.info("trainable recommender tensors: %d (%d parameters, lr %g, weight decay %g)",
             len(rest), sum(p.numel() for p in rest), cfg.lr, cfg.l2_weight)
    vision = vision_encoder_group(model, cfg)                # text+vision: the vision encoder's own lr
    encoder = [p for p in encoder if id(p) not in {id(q) for q in vision.get("params", [])}]
    if encoder:
        groups.append({"params": encoder, "lr": cfg.fine_tune_lr, "weight_decay": cfg.fine_tune_l2_weight})
    if vision:
        groups.append(vision)
    if mix:                                       # --ts_layers all: the scalar mix, its own lr (docs/parameters.md)
        log.info("scalar mix of the layers: %d parameters, lr %g, no weight decay", sum(p.numel() for p in mix),
                 cfg.ts_mix_lr)
        groups.append({"params": mix, "lr": cfg.ts_mix_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def vision_encoder_group(model: Recommender, cfg: Config) -> dict:
    """item_tower text+vision: the vision encoder's trainable parameters with cv_fine_tune_lr
    (-1: fine_tune_lr); {} for every other tower (their groups stay as they were)."""
    from morec.models.multimodal import MultiModalTower
    towers = [m for m in model.item_tower.modules() if isinstance(m, MultiModalTower)]
    params = [p for tower in towers for p in tower.vision_encoder_parameters() if p.requires_grad]
    if not params:
        return {}
    lr = cfg.fine_tune_lr if cfg.cv_fine_tune_lr == -1 else cfg.cv_fine_tune_lr
    log.info("of these, the vision encoder's %d tensors (%d parameters) train with lr %g", len(params),
             sum(p.numel() for p in params), lr)
    return {"params": params, "lr": lr, "weight_decay": cfg.fine_tune_l2_weight}


def make_batches(cfg: Config, data: SequenceData) -> SequenceBatches | PairBatches:
    train = torch.from_numpy(data.train)
    if cfg.model == "dssm":
        return PairBatches(train, cfg.batch_size, data.num_items, cfg.neg_num if cfg.loss == "bce" else 0,
                           cfg.extra_negatives)
    return SequenceBatches(train, cfg.batch_size, data.num_items, with_negatives=cfg.loss == "bce",
                           extra_negatives=cfg.extra_negatives)


def progress(iterable, cfg: Config, **kwargs):
    return tqdm(iterable, disable=not shows_bar(cfg), leave=False, **kwargs)


def shows_bar(cfg: Config) -> bool:
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


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: Recommender, data: SequenceData, split: str, cfg: Config, device: torch.device,
             world: World = World(), images: ItemImages | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """Full-ranking metrics of `split` ('valid' or 'test') and each user's tie counts (U, 2): items
    scoring strictly higher than the target (h) and tied with it (t); metrics by the tie rule
    `cfg.ties` (SPEC "Evaluation": expected under uniformly random tie-breaking).

    The catalogue is encoded once; SASRec looks its input items up there. Under DDP each rank
    encodes a share of the catalogue and ranks a share of the users; the shares are gathered, so
    every rank returns the same result. `images`: the items' pixels, for a vision tower."""
    check_tie_rule(cfg.ties)
    model.eval()
    item_vecs = catalogue_vectors(model, data.num_items, world, device, cfg, images)   # (N+1, d)
    inputs = (torch.arange(data.num_users) if cfg.model == "dssm"
              else torch.from_numpy(data.split_input(split)))                         # (U,) or (U, L)
    targets = torch.from_numpy(data.split_target(split))
    history = torch.from_numpy(data.split_history(split))
    mine = shard(data.num_users, world)
    counts = [torch.empty(0, 2, dtype=torch.long, device=device)]
    for start in range(mine.start, mine.stop, cfg.eval_batch_size):
        rows = slice(start, min(start + cfg.eval_batch_size, mine.stop))
        user_vecs = model.user_vectors(inputs[rows].to(device), item_vecs)
        counts.append(tie_counts(user_vecs, item_vecs, targets[rows].to(device),
                                 history[rows].to(device), cfg.eval_chunk_elems, first_user=start))
    counts = gather_rows(torch.cat(counts), world).cpu()                               # (U, 2)
    return metrics_from_counts(counts, ties=cfg.ties), counts


def shard(n: int, world: World) -> range:
    """This rank's contiguous share of range(n)."""
    return range(n * world.rank // world.size, n * (world.rank + 1) // world.size)


@torch.no_grad()
def catalogue_vectors(model: Recommender, num_items: int, world: World, device: torch.device,
                      cfg: Config | None = None, images: ItemImages | None = None) -> torch.Tensor:
    """(N+1, d) float vectors of every item; under DDP each rank encodes its share, then all
    gather. A vision tower reads the pixels of `images` in chunks (DataLoader workers).
    Encoded in fp32 for every tower unless cfg.eval_amp (then under the run's autocast)."""
    cfg = cfg or Config()
    ids = torch.tensor(shard(num_items + 1, world), dtype=torch.long)
    with eval_precision(cfg, device):
        if images is None:                  # the tower's one encoding path, in its own chunks
            mine = [model.item_tower.encode_items(ids.to(device)).float()]
        else:                               # pixels read in chunks by DataLoader workers
            mine = []
            chunks = ItemChunks(ids, cfg.eval_batch_size, images)
            for part, pixels in image_loader(chunks, cfg.num_workers, device.type == "cuda"):
                part, pixels = part.to(device), pixels.to(device, non_blocking=True)
                mine.append(model.item_tower.encode_items(part, (part, pixels)).float())
    mine = torch.cat(mine) if mine else torch.empty(0, model.item_tower.dim, device=device)
    return gather_rows(mine, world) if world.distributed else mine


def eval_precision(cfg: Config, device: torch.device) -> torch.autocast:
    """Catalogue encoding precision (SPEC "Evaluation"): fp32 (autocast off, also inside an outer
    autocast) unless cfg.eval_amp asks for the run's mixed precision."""
    return autocast(cfg, device) if cfg.eval_amp else torch.autocast(device.type, enabled=False)


def autocast(cfg: Config, device: torch.device) -> torch.autocast:
    """Mixed precision on CUDA when cfg.amp (bf16, or fp16 with the run's GradScaler); off on CPU."""
    dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=cfg.amp and device.type == "cuda")


def percent(metrics: dict[str, float], k: int = 10) -> str:
    return f"HR@{k} {100 * metrics[f'HR@{k}']:.2f} NDCG@{k} {100 * metrics[f'NDCG@{k}']:.2f}"


# ----------------------------------------------------------------------------- training

@dataclass
class Run:
    """What one training run holds while it trains."""
    cfg: Config
    data: SequenceData
    files: RunFiles
    device: torch.device
    world: World
    model: Recommender                 # the module whose weights are saved
    trainer: torch.nn.Module           # `model`, or its DDP wrapper: call it for the loss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler       # enabled for fp16 autocast on CUDA only
    batches: SequenceBatches | PairBatches
    stop: dict                         # {"signal": None or the signal number}
    images: ItemImages | None = None   # vision end to end: the items' pixels, read per batch
    items_encoded: int = 0             # item vectors computed in this epoch's training steps (morec.cost)


@dataclass
class EpochProgress:
    """Where the epoch in progress stands; saved with a checkpoint taken mid-epoch."""
    step: int = 0                # batches done (including skipped ones)
    loss_sum: float = 0.0        # of the losses averaged over ranks
    skipped: int = 0             # batches skipped for a non-finite loss or gradient
    grad_norm_sum: float = 0.0
    grad_norm_max: float = 0.0

    def summary(self) -> dict:
        done = max(self.step - self.skipped, 1)
        return {"train_loss": self.loss_sum / done, "grad_norm_mean": self.grad_norm_sum / done,
                "grad_norm_max": self.grad_norm_max, "skipped_steps": self.skipped}


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


def rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_states_of_all_ranks(run: Run) -> list[dict]:
    states = [None] * run.world.size
    if run.world.distributed:
        torch.distributed.all_gather_object(states, rng_state(run.device))
    else:
        states[0] = rng_state(run.device)
    return states


def optimizer_steps(run: Run, epoch: int, done: EpochProgress) -> Iterator[list[dict]]:
    """The epoch's optimizer steps from step `done.step` on, each a list of
    `accumulation_steps` micro-batches (the last may be shorter). A vision run's batches come
    with the pixels of their distinct items, decoded by `num_workers` DataLoader workers."""
    world, cfg = run.world, run.cfg
    batch_iter = run.batches.epoch(cfg.seed, world.rank, world.size, epoch=epoch)
    # replay the batches (and their negatives) already done: only an epoch's last step is short
    batch_iter = itertools.islice(batch_iter, done.step * cfg.accumulation_steps, None)
    if run.images is not None:
        workers = stream_generator(cfg.seed, epoch, world.rank, WORKERS)   # not the global (dropout) RNG
        batch_iter = iter(image_loader(BatchesWithImages(list(batch_iter), run.images), cfg.num_workers,
                                       run.device.type == "cuda", workers))
    return iter(lambda: list(itertools.islice(batch_iter, cfg.accumulation_steps)), [])


def steps_per_epoch(run: Run) -> int:
    return -(-run.batches.num_batches(run.world.size) // run.cfg.accumulation_steps)


def step_rows(run: Run, micro_batches: list[dict]) -> torch.Tensor:
    """Prediction rows (non-padded positions / pairs) of a whole optimizer step, summed over
    every micro-batch and every rank: the loss's normaliser (a float tensor on the device)."""
    rows = sum(run.model.prediction_rows(batch) for batch in micro_batches)
    return all_reduce_sum(torch.tensor(float(rows), device=run.device), run.world)


def train_step(run: Run, micro_batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """One optimizer step over accumulated micro-batches; returns (loss averaged over ranks,
    gradient norm, step taken). A non-finite loss or gradient (on any rank) leaves the weights
    untouched; under fp16 the GradScaler skips steps with overflowing gradients itself.

    The loss is the mean over the rows of the whole step (all micro-batches, all ranks), so for
    BCE k micro-batches of b rows give the gradient of one batch of k*b rows (SPEC "Training")."""
    cfg, device, world = run.cfg, run.device, run.world
    run.optimizer.zero_grad(set_to_none=True)
    total_rows = step_rows(run, micro_batches)
    loss_sum = torch.zeros((), device=device)
    for index, batch in enumerate(micro_batches):
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        last = index == len(micro_batches) - 1
        no_sync = run.trainer.no_sync() if world.distributed and not last else contextlib.nullcontext()
        with no_sync:                                     # DDP averages the gradients on the last one
            with autocast(cfg, device):
                loss = run.trainer(batch, total_rows=total_rows)     # this share of the step's mean
            run.scaler.scale(loss).backward()
        loss_sum += loss.detach().float()
    run.scaler.unscale_(run.optimizer)
    params = [p for p in run.model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    loss = all_reduce_sum(loss_sum, world) / world.size
    finite_grad = bool(torch.isfinite(grad_norm))
    taken = bool(torch.isfinite(loss)) and (finite_grad or run.scaler.is_enabled())
    if taken:
        if cfg.max_grad_norm > 0 and finite_grad:
            torch.nn.utils.clip_grads_with_norm_(params, cfg.max_grad_norm, grad_norm)
        run.scaler.step(run.optimizer)
    run.scaler.update()
    return loss, grad_norm, taken


def train_steps(run: Run, epoch: int, done: EpochProgress) -> bool:
    """Run the rest of the epoch from step `done.step`; False if a stop signal cut it short."""
    cfg, world = run.cfg, run.world
    run.trainer.train()
    step_log = StepLog(cfg, epoch, steps_per_epoch(run))
    for micro_batches in progress(optimizer_steps(run, epoch, done), cfg, total=steps_per_epoch(run),
                                  initial=done.step, desc=f"epoch {epoch}"):
        loss, grad_norm, taken = train_step(run, micro_batches)
        run.items_encoded += sum(run.model.items_encoded(batch) for batch in micro_batches)
        if taken:
            done.loss_sum += loss.item()
            if torch.isfinite(grad_norm):
                done.grad_norm_sum += grad_norm.item()
                done.grad_norm_max = max(done.grad_norm_max, grad_norm.item())
        elif cfg.skip_nonfinite:
            done.skipped += 1
            log.warning("skipped epoch %d step %d: loss %s, gradient norm %s", epoch, done.step,
                        loss.item(), grad_norm.item())
        else:
            kept = ("the last good checkpoint is kept" if run.files.last.exists()
                    else "no epoch finished, so there is no checkpoint")
            raise InputError(f"the loss is {loss.item()} (gradient norm {grad_norm.item()}) at epoch "
                             f"{epoch}, step {done.step}; {kept}. Lower --lr, "
                             "set --max_grad_norm, or pass --skip_nonfinite to skip such batches")
        done.step += 1
        step_log.step(done, micro_batches)
        if any_rank(run.stop["signal"] is not None, world, run.device):     # all ranks stop together
            return False
    return True


def selection_score(cfg: Config, metrics: dict[str, float]) -> list[float]:
    """Best checkpoint by valid HR@10 (then NDCG@10 if tie_break_ndcg); compared as a list."""
    return [metrics["HR@10"], metrics["NDCG@10"]] if cfg.tie_break_ndcg else [metrics["HR@10"]]


def defining_values(cfg: Config) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in RUN_CONTROL}


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


def start_or_resume(cfg: Config, files: RunFiles) -> dict | None:
    """Check the run folder; return the checkpoint to resume from, or None to start fresh."""
    if files.last.exists() and cfg.resume:
        saved = read_run_config(files)
        changed = {k for k, v in defining_values(cfg).items() if saved.get(k, v) != v}
        if changed:
            raise InputError(f"--resume of {files.dir} with other values for {sorted(changed)}; "
                             "resume with the values of config.json or use another --label")
        if saved and saved_setting(saved) != run_setting(cfg):
            raise InputError(f"--resume of {files.dir} with setting {run_setting(cfg)}, but it was trained with "
                             f"{saved_setting(saved)} (world size = nproc_per_node x nnodes; precision from "
                             "--amp, --amp_dtype and the device): these change the numbers; resume with the "
                             "saved setting or start a new run (another --label, or without --label)")
        if saved and any(saved.get(k) != getattr(cfg, k) for k in ("epoch", "patience")):
            write_json_atomic(files.config, {**saved, "setting": saved_setting(saved), "epoch": cfg.epoch,
                                             "patience": cfg.patience})
        return load_checkpoint(files.last)
    if files.last.exists() and not cfg.overwrite:
        raise InputError(f"{files.dir} already holds a run; pass --resume to continue it, "
                         "--overwrite to start over, or --label NAME for a new run")
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        for path in (files.last, files.best, files.metrics, files.test, files.test_ranks, files.log):
            path.unlink(missing_ok=True)
        write_json_atomic(files.config, config_record(cfg))
    except OSError as err:
        raise InputError(f"cannot write to the run folder {files.dir} ({err}); "
                         "free space or choose a writable --runs_dir") from None
    return None


def prepare_run(cfg: Config, files: RunFiles, world: World) -> dict | None:
    """Rank 0 checks and prepares the folder; every rank then gets the same checkpoint (or None)."""
    checkpoint = start_or_resume(cfg, files) if world.is_main else None
    barrier(world)
    if not world.is_main and cfg.resume and files.last.exists():
        checkpoint = load_checkpoint(files.last)
    return checkpoint


@contextlib.contextmanager
def removed_if_setup_fails(files: RunFiles, fresh: bool):
    """A new run that fails before its first checkpoint_last.pt (bad encoder weights, too little
    memory, a NaN loss or a full disk in epoch 1, ...) leaves no folder behind: its files are
    removed, then the folder and the runs folder if empty (issue 12)."""
    try:
        yield
    except BaseException:
        if fresh and not files.last.exists():
            for path in (files.config, files.log, files.metrics, files.best, files.test,
                         *files.dir.glob(".*.tmp*")):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                files.dir.rmdir()
                files.dir.parent.rmdir()               # the runs folder too, if this made it
        raise


def train(cfg: Config, run_dir: Path) -> dict:
    """Train one run to early stop, holding the run folder's lock (rank 0; morec.runlock);
    returns the best valid record. A new run that fails before its first checkpoint leaves no
    folder behind."""
    check_memory(memory_spec(cfg))            # what the values alone need, before loading data
    files = RunFiles(run_dir)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with run_lock(files.dir, take=main_rank):
        if main_rank and (stale := remove_stale_temp_files(files.dir)):
            log.warning("removed %s left in %s by a killed run", ", ".join(stale), files.dir)
        fresh = main_rank and not (cfg.resume and files.last.exists())
        with removed_if_setup_fails(files, fresh):
            return train_in_folder(cfg, run_dir)


def train_in_folder(cfg: Config, run_dir: Path) -> dict:
    """Train one run to early stop; returns the best valid record."""
    data = load_data(cfg)                     # bad data fails here, before anything is written
    check_memory(memory_spec(cfg), data.num_items, data.num_users)
    device, world = start_devices(cfg)
    files = RunFiles(run_dir)
    resuming = cfg.resume and files.last.exists()
    source = check_source(transfer_spec(cfg)) if cfg.init_from and not resuming else None  # transfer: before writing
    checkpoint = prepare_run(cfg, files, world)
    with run_logging(files.log if world.is_main else None), stop_signals() as stop:
        # a failure here leaves no folder behind: train() wraps this in removed_if_setup_fails
        model = build_run_model(cfg, data, device)            # loads encoders: bad weights fail here
        images = run_item_images(item_input_spec(cfg), data)  # vision: the LMDB must hold every item
        bind_run_to_data(files.config, data_spec(cfg), data, resumed=checkpoint is not None, record=world.is_main)
        if source is not None and checkpoint is None:      # a resumed run continues from its own checkpoint
            init_from_source(model, transfer_spec(cfg), source)
            if world.is_main:
                record_source(files.config, transfer_spec(cfg), source)
        model.distribute(world, cfg.gather_negatives)
        trainer = model
        if world.distributed:
            trainer = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile_model:
            trainer = torch.compile(trainer)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and cfg.amp_dtype == "fp16"
                                      and device.type == "cuda")
        run = Run(cfg, data, files, device, world, model, trainer, build_optimizer(model, cfg), scaler,
                  make_batches(cfg, data), stop, images)
        log_checkpoint_contents(model)
        state = {"epoch": 0, "best": None, "bad_evals": 0, "history": [], "partial": None}
        if checkpoint is not None:
            require_entries(checkpoint, files.last, ("model", "optimizer", "epoch"))
            load_model_weights(model, checkpoint, files.last)
            run.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scaler"):
                scaler.load_state_dict(checkpoint["scaler"])
            state = {key: checkpoint.get(key, default) for key, default in state.items()}
            step = f", step {state['partial']['progress']['step']}" if state["partial"] else ""
            log.info("resumed %s after epoch %d%s", files.dir.name, state["epoch"], step)
        else:
            if cfg.resume:
                log.warning("no %s in %s: starting a new run", files.last.name, files.dir)
            log.info("run %s: %d users, %d items, %d optimizer steps per epoch, %d rank(s), device %s",
                     files.dir.name, data.num_users, data.num_items, steps_per_epoch(run), world.size, device)
        if world.is_main:
            write_text_atomic(files.metrics, "".join(json.dumps(r) + "\n" for r in state["history"]))
        while state["epoch"] < cfg.epoch and state["bad_evals"] < cfg.patience:
            run_epoch(run, state)
        best = state["best"]
        if best is None:
            raise InputError(f"{files.dir} finished no epoch; raise --epoch")
        log.info("best epoch %d: valid %s", best["epoch"], percent(best["valid"]))
        return best


def save_last(run: Run, state: dict) -> None:
    if run.world.is_main:
        save_checkpoint(run.files.last, {**model_entries(run.model), "optimizer": run.optimizer.state_dict(),
                                         "scaler": run.scaler.state_dict(), **state})
        if state["epoch"] == 1 and not state["partial"]:
            log.info("%s: %.2f MiB", run.files.last.name, run.files.last.stat().st_size / 2 ** 20)


def model_entries(model: Recommender) -> dict:
    """A checkpoint's weights: {"model": what trains + the recommender}, and under PEFT the sha1 of
    the frozen pretrained tensors left out ("reloaded_sha1"; morec.models.adapters)."""
    digest = getattr(model, "_reloaded_sha1", None)
    if digest is None:                        # computed once: frozen tensors never change
        digest = model._reloaded_sha1 = reloaded_digest(model) or ""
    return {"model": trained_state(model), **({"reloaded_sha1": digest} if digest else {})}


def load_model_weights(model: Recommender, checkpoint: dict, path: Path) -> None:
    """Load a checkpoint's weights; the frozen pretrained tensors a PEFT checkpoint leaves out
    must be those it was trained with (the encoder folder unchanged), else the run is refused."""
    load_weights(model, checkpoint["model"], path, reloaded=reloaded_keys(model))
    saved = checkpoint.get("reloaded_sha1")
    if saved is not None and saved != model_entries(model).get("reloaded_sha1"):
        raise InputError(f"checkpoint {path} was trained on other frozen encoder weights than those now "
                         "in the encoder folder (they are reloaded from it, not saved): put back the "
                         "encoder folder the run was trained with, or retrain")


def log_checkpoint_contents(model: Recommender) -> None:
    """Say what a checkpoint holds: all weights, or (PEFT) what trains plus the recommender."""
    skipped = reloaded_keys(model)
    state = model.state_dict()
    kept = sum(t.numel() * t.element_size() for k, t in state.items() if k not in skipped)
    left = sum(state[k].numel() * state[k].element_size() for k in skipped)
    if skipped:
        log.info("checkpoints hold %d tensors (%.2f MiB of weights, plus the optimizer state); the %d "
                 "frozen pretrained encoder tensors (%.2f MiB) are not saved: they are reloaded from the "
                 "encoder folder", len(state) - len(skipped), kept / 2 ** 20, len(skipped), left / 2 ** 20)
    else:
        log.info("checkpoints hold all %d model tensors (%.2f MiB of weights, plus the optimizer state)",
                 len(state), kept / 2 ** 20)


def epoch_start(run: Run, state: dict, epoch: int) -> EpochProgress:
    """The progress to continue from: a saved mid-epoch point, or a fresh, reseeded epoch."""
    partial = state["partial"]
    if partial and partial.get("streams") != STREAMS:
        log.warning("the checkpoint was taken mid-epoch by a version with other random streams: epoch %d "
                    "restarts from its beginning", epoch)
        partial = None
    if partial and partial.get("world_size", 1) == run.world.size:
        rng = partial["rng"]                                  # one state per rank (a dict: older runs)
        set_rng_state(rng[run.world.rank] if isinstance(rng, list) else rng)
        return EpochProgress(**partial["progress"])
    if partial:
        log.warning("the checkpoint was taken mid-epoch with %d rank(s), this run has %d: epoch %d "
                    "restarts from its beginning", partial.get("world_size", 1), run.world.size, epoch)
    torch.manual_seed(stream_seed(run.cfg.seed, epoch, run.world.rank, DROPOUT))   # dropout RNG
    return EpochProgress()


def run_epoch(run: Run, state: dict) -> None:
    """Train, evaluate, checkpoint (best, then last), then rewrite metrics.jsonl from the history.

    Randomness is a function of (seed, epoch, rank, purpose): each epoch reseeds its streams,
    so a run resumed from any checkpoint continues exactly as the uninterrupted run would."""
    cfg, files = run.cfg, run.files
    epoch = state["epoch"] + 1
    done = epoch_start(run, state, epoch)
    memory_kind = reset_peak_memory(run.device)        # CUDA: reset_peak_memory_stats; CPU: peak RSS
    run.items_encoded = 0
    start = time.perf_counter()
    if not train_steps(run, epoch, done):
        state["partial"] = {"progress": dataclasses.asdict(done), "rng": rng_states_of_all_ranks(run),
                            "world_size": run.world.size, "streams": STREAMS}
        save_last(run, state)
        raise Preempted(run.stop["signal"] or signal.SIGTERM, f"stopped by signal {run.stop['signal']} at epoch "
                        f"{epoch}, step {done.step}; saved {files.last}; continue with the same command and --resume")
    state["partial"] = None
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    valid, _ = evaluate(run.model, run.data, "valid", cfg, run.device, run.world, run.images)
    record = {"epoch": epoch, **done.summary(), "valid": valid, "train_seconds": round(train_seconds, 3),
              "eval_seconds": round(time.perf_counter() - start, 3), "steps": done.step}
    if run.device.type == "cuda":                    # this rank's peak over the epoch's training and evaluation
        record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(run.device) / 2 ** 20, 1)
    record.update(cost_record(run, train_seconds, memory_kind))
    best = state["best"]
    if best is None or selection_score(cfg, valid) > selection_score(cfg, best["valid"]):
        state["best"], state["bad_evals"] = {"epoch": epoch, "valid": valid}, 0
        if run.world.is_main:
            save_checkpoint(files.best, {**model_entries(run.model), "epoch": epoch, "valid": valid})
    else:
        state["bad_evals"] += 1
    state["epoch"] = epoch
    state["history"].append(record)
    save_last(run, state)
    if run.world.is_main:
        write_text_atomic(files.metrics, "".join(json.dumps(r) + "\n" for r in state["history"]))
    log.info("epoch %d loss %.4f grad norm %.3g valid %s (train %.1fs, eval %.1fs)%s", epoch,
             record["train_loss"], record["grad_norm_mean"], percent(valid), record["train_seconds"],
             record["eval_seconds"], " *" if state["bad_evals"] == 0 else "")


def cost_record(run: Run, train_seconds: float, memory_kind: str) -> dict:
    """The epoch's cost fields of metrics.jsonl (morec.cost): items encoded per second of training
    (all ranks), trainable parameters, and this rank's peak memory over training and evaluation."""
    items = all_reduce_sum(torch.tensor(float(run.items_encoded), device=run.device), run.world)
    return {"items_encoded_per_second": round(float(items) / max(train_seconds, 1e-9), 1),
            "trainable_parameters": trainable_parameters(run.model),
            "peak_memory_mb": peak_memory_mb(run.device), "peak_memory_kind": memory_kind}


# ----------------------------------------------------------------------------- test

def saved_config(files: RunFiles, cfg: Config) -> Config:
    """The run's own config.json, with this invocation's run-control values (device, sizes)."""
    if not files.best.exists():
        raise InputError(f"no checkpoint in {files.dir}; train this run first (the train script "
                         "with the same values or --label), then test it")
    saved = read_run_config(files)
    known = {f.name for f in fields(Config)}
    values = {k: v for k, v in saved.items() if k in known}
    values.update({k: getattr(cfg, k) for k in RUN_CONTROL if k in known})
    warn_ignored_values(cfg, values, files.dir)
    try:
        return make_config(values)
    except InputError as err:
        raise InputError(f"{files.config}: {err}; restore the file or retrain the run") from None


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


def warn_ignored_values(given: Config, saved: dict, run_dir: Path) -> None:
    """A test evaluates the run as trained: say which of the given values (script or command
    line) differ from the run's saved ones and are therefore not used."""
    read = set(saved) - UNUSED_BY_TOWER.get(saved.get("item_tower", "id"), set())
    for name in sorted(read - RUN_CONTROL):
        value = getattr(given, name)
        if value != saved[name]:
            print(f"warning: --{name} {value} is ignored: run {run_dir.name} was trained with "
                  f"{name} {saved[name]} and is tested as trained", file=sys.stderr)


def test(cfg: Config, run_dir: Path) -> dict:
    """Evaluate the best checkpoint of a run on the test split, holding the run folder's lock
    (which also checks that test_metrics.json can be written before evaluating)."""
    with run_lock(run_dir, take=run_dir.is_dir()):
        return test_in_folder(cfg, run_dir)


def test_in_folder(cfg: Config, run_dir: Path) -> dict:
    """Evaluate the best checkpoint of a run on the test split; write test_metrics.json."""
    files = RunFiles(run_dir)
    cfg = saved_config(files, cfg)
    data = load_data(cfg)
    check_data_identity(files.config, data_identity(data_spec(cfg), data), "test")
    device = resolve_device(cfg.device)
    checkpoint = load_checkpoint(files.best, map_location=device)
    require_entries(checkpoint, files.best, ("model", "epoch", "valid"))
    check_memory(memory_spec(cfg), data.num_items, data.num_users, training=False)
    model = build_run_model(cfg, data, device)
    load_model_weights(model, checkpoint, files.best)
    metrics, counts = evaluate(model, data, "test", cfg, device,
                               images=run_item_images(item_input_spec(cfg), data))
    result = {"label": files.dir.name, "best_epoch": checkpoint["epoch"], "valid": checkpoint["valid"],
              "test": metrics, "num_users": data.num_users, "num_items": data.num_items, "ties": cfg.ties,
              "users_with_ties": int((counts[:, 1] > 0).sum()), "per_user": files.test_ranks.name}
    cold = result["cold_start"] = (cold_start_view(counts, data.train_counts(), data.split_target("test"),
                                                   cfg.cold_start_count, ties=cfg.ties)
                                   if cfg.cold_start_count > 0 else None)
    save_test_ranks(files.test_ranks, counts, data.user_names)
    write_json_atomic(files.test, result)
    print(f"{files.dir.name} (best epoch {checkpoint['epoch']}): valid {percent(checkpoint['valid'])}")
    if cold is not None:
        print(f"cold-start view (test targets with < {cold['below']} train interactions, {cold['users']} users): "
              + (percent(cold["metrics"]) if cold["metrics"] else "none"))
    print(f"test {percent(metrics)}")
    return result


def save_test_ranks(path: Path, counts: torch.Tensor, user_names: list[str]) -> None:
    """Per-user test tie counts for paired statistics (scripts/results_table.py): an .npz holding
    `h` and `t` (U,) int64 (items strictly above / tied with the target, SPEC "Evaluation") and
    `user` (U,) the user names in the same order; loads with np.load(path, allow_pickle=False)."""
    buffer = io.BytesIO()
    np.savez(buffer, h=counts[:, 0].numpy(), t=counts[:, 1].numpy(), user=np.array(user_names, dtype=str))
    write_bytes_atomic(path, buffer.getvalue())


__all__ = ["train", "test", "evaluate", "RunFiles", "load_data", "build_run_model"]
