"""The training loop and the test run (SPEC "Training", "Evaluation"): the optimizer step with
gradient accumulation, the non-finite policy and clipping, the epoch, evaluation and the test.
The run folder (lock, resume checks, signals) is morec.runs, checkpoints morec.run_state and
records morec.run_records; the parts a run is built from (device, data, model, optimizer,
batches) are morec.parts.

Reproducibility: the model is initialised from `seed`; every epoch derives its random streams
(batch order, negatives, dropout, DataLoader workers) from (seed, epoch, rank, purpose)
(morec.streams), so a run resumed from the checkpoint of epoch e continues exactly as the
uninterrupted run would.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from morec.atomic_io import write_json_atomic
from morec.checkpoint import load_checkpoint, require_entries
from morec.config import Config
from morec.cost import TrainClock, reset_peak_memory
from morec.data import PairBatches, SequenceBatches, SequenceData
from morec.data.images import BatchesWithImages, ItemChunks, ItemImages, image_loader
from morec.data.identity import bind_run_to_data, check_data_identity, data_identity
from morec.distributed import World, all_reduce_sum, any_rank, gather_rows
from morec.errors import InputError, Preempted
from morec.evaluate import (apply_repeat_rule, check_repeat_rule, check_tie_rule, ranked_history, repeat_record,
                             rule_metrics, tie_counts)
from morec.features import run_item_images
from morec.memory import check_memory
from morec.resolve import memory_spec, run_specs
from morec.models import Recommender
from morec.parts import (autocast, build_optimizer, build_run_model, distributed_trainer, grad_scaler, load_data,
                         lr_scheduler, make_batches, resolve_device, start_devices)
from morec.runlock import run_lock
from morec.run_records import cost_record, percent, print_test_result, save_test_ranks, test_record, write_metrics
from morec.run_state import (fresh_state, load_model_weights, log_checkpoint_contents, resumed_state, save_best,
                             save_last, save_mid_epoch, set_rng_state)
from morec.runs import RunFiles, StepLog, prepare_run, progress, run_logging, saved_config, stop_signals, training_folder
from morec.streams import DROPOUT, STREAMS, WORKERS, stream_generator, stream_seed
from morec.transfer import check_source, init_from_source, record_source

log = logging.getLogger("morec")


# ----------------------------------------------------------------------------- evaluation

RANKED_TOGETHER = 16384   # users ranked in one tie_counts call (their vectors: 4 MiB at d = 64)


@torch.no_grad()
def evaluate(model: Recommender, data: SequenceData, split: str, cfg: Config, device: torch.device,
             world: World = World(), images: ItemImages | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """Full-ranking metrics of `split` ('valid' or 'test') and each user's tie counts (U, 2): items
    scoring strictly higher than the target (h) and tied with it (t); metrics by the tie rule
    `cfg.ties` (SPEC "Evaluation": expected under uniformly random tie-breaking) and the repeat
    rule `cfg.repeat_targets` (SPEC "Evaluation": a target also in the history is a miss by
    default, counts (MISSED, 0); `rank` removes no history; `skip` leaves those users out of the
    metrics, their counts are still returned).

    The catalogue is encoded once; SASRec looks its input items up there. Under DDP each rank
    encodes a share of the catalogue and ranks a share of the users; the shares are gathered, so
    every rank returns the same result. `images`: the items' pixels, for a vision tower."""
    check_tie_rule(cfg.ties)
    check_repeat_rule(cfg.repeat_targets)
    model.eval()
    item_vecs = catalogue_vectors(model, data.num_items, world, device, cfg, images)   # (N+1, d)
    inputs = (torch.arange(data.num_users) if cfg.model == "dssm"
              else torch.from_numpy(data.split_input(split)))                         # (U,) or (U, L)
    targets = torch.from_numpy(data.split_target(split))
    history = ranked_history(torch.from_numpy(data.split_history(split)), cfg.repeat_targets)
    mine = shard(data.num_users, world)
    counts = [torch.empty(0, 2, dtype=torch.long, device=device)]
    ranked_together = max(cfg.eval_batch_size, RANKED_TOGETHER)      # the item blocks are laid out once per group
    for start in range(mine.start, mine.stop, ranked_together):
        group = range(start, min(start + ranked_together, mine.stop))
        user_vecs = torch.cat([model.user_vectors(inputs[first: min(first + cfg.eval_batch_size, group.stop)].to(device),
                                                  item_vecs) for first in range(group.start, group.stop, cfg.eval_batch_size)])
        counts.append(tie_counts(user_vecs, item_vecs, targets[group.start: group.stop].to(device),
                                 history[group.start: group.stop].to(device), cfg.eval_chunk_elems, first_user=start))
    counts = gather_rows(torch.cat(counts), world).cpu()                               # (U, 2)
    repeat = torch.from_numpy(data.split_repeats(split))
    counts = apply_repeat_rule(counts, repeat, cfg.repeat_targets)
    return rule_metrics(counts, repeat, cfg.repeat_targets, ties=cfg.ties), counts


def shard(n: int, world: World) -> range:
    """This rank's contiguous share of range(n)."""
    return range(n * world.rank // world.size, n * (world.rank + 1) // world.size)


@torch.no_grad()
def catalogue_vectors(model: Recommender, num_items: int, world: World, device: torch.device,
                      cfg: Config | None = None, images: ItemImages | None = None) -> torch.Tensor:
    """(N+1, d) float vectors of every item, through the tower's one catalogue path
    (ItemTower.all_item_vectors); under DDP each rank encodes its share, then all gather. A vision
    tower reads the pixels of `images` in chunks of eval_batch_size (DataLoader workers).
    Encoded in fp32 for every tower unless cfg.eval_amp (then under the run's autocast)."""
    cfg = cfg or Config()
    ids = torch.tensor(shard(num_items + 1, world), dtype=torch.long, device=device)   # this rank's rows

    def read_pixels(chunk_ids: torch.Tensor):
        return image_loader(ItemChunks(chunk_ids.cpu(), cfg.eval_batch_size, images), cfg.num_workers,
                            device.type == "cuda")
    with eval_precision(cfg, device):
        mine = model.item_tower.all_item_vectors(num_items, ids, None if images is None else read_pixels)
    return gather_rows(mine, world) if world.distributed else mine


def eval_precision(cfg: Config, device: torch.device) -> torch.autocast:
    """Catalogue encoding precision (SPEC "Evaluation"): fp32 (autocast off, also inside an outer
    autocast) unless cfg.eval_amp asks for the run's mixed precision."""
    return autocast(cfg, device) if cfg.eval_amp else torch.autocast(device.type, enabled=False)


def selection_score(cfg: Config, metrics: dict[str, float]) -> list[float]:
    """Best checkpoint by valid HR@10 (then NDCG@10 if tie_break_ndcg); compared as a list."""
    return [metrics["HR@10"], metrics["NDCG@10"]] if cfg.tie_break_ndcg else [metrics["HR@10"]]


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
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None   # --lr_schedule, --warmup_steps (morec.parts)


@dataclass
class EpochProgress:
    """Where the epoch in progress stands; saved with a checkpoint taken mid-epoch."""
    step: int = 0                # batches done (including skipped ones)
    loss_sum: float = 0.0        # of the losses averaged over ranks
    skipped: int = 0             # batches skipped for a non-finite loss or gradient
    grad_norm_sum: float = 0.0
    grad_norm_max: float = 0.0

    def summary(self) -> dict:
        """The epoch's training fields of metrics.jsonl (means over the steps taken)."""
        done = max(self.step - self.skipped, 1)
        return {"train_loss": self.loss_sum / done, "grad_norm_mean": self.grad_norm_sum / done,
                "grad_norm_max": self.grad_norm_max, "skipped_steps": self.skipped}


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
    """Optimizer steps in one epoch on this rank (batches / accumulation_steps, rounded up)."""
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
    run.trainer.train()
    step_log = StepLog(run.cfg, epoch, steps_per_epoch(run))
    for micro_batches in progress(optimizer_steps(run, epoch, done), run.cfg, total=steps_per_epoch(run),
                                  initial=done.step, desc=f"epoch {epoch}"):
        loss, grad_norm, taken = train_step(run, micro_batches)
        if run.scheduler is not None:                 # once per optimizer step: the lr is a function of the step
            run.scheduler.step()
        run.items_encoded += sum(run.model.items_encoded(batch) for batch in micro_batches)
        count_step(run, done, epoch, loss, grad_norm, taken)
        done.step += 1
        step_log.step(done, micro_batches)
        if any_rank(run.stop["signal"] is not None, run.world, run.device):     # all ranks stop together
            return False
    return True


def count_step(run: Run, done: EpochProgress, epoch: int, loss: torch.Tensor, grad_norm: torch.Tensor,
               taken: bool) -> None:
    """Add a step to the epoch's sums; a step not taken (non-finite) is skipped under
    --skip_nonfinite and stops the run otherwise."""
    if taken:
        done.loss_sum += loss.item()
        if torch.isfinite(grad_norm):
            done.grad_norm_sum += grad_norm.item()
            done.grad_norm_max = max(done.grad_norm_max, grad_norm.item())
    elif run.cfg.skip_nonfinite:
        done.skipped += 1
        log.warning("skipped epoch %d step %d: loss %s, gradient norm %s", epoch, done.step, loss.item(), grad_norm.item())
    else:
        kept = ("the last good checkpoint is kept" if run.files.last.exists()
                else "no epoch finished, so there is no checkpoint")
        raise InputError(f"the loss is {loss.item()} (gradient norm {grad_norm.item()}) at epoch "
                         f"{epoch}, step {done.step}; {kept}. Lower --lr, "
                         "set --max_grad_norm, or pass --skip_nonfinite to skip such batches")


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
    epoch = state["epoch"] + 1
    done = epoch_start(run, state, epoch)
    memory_kind = reset_peak_memory(run.device)        # CUDA: reset_peak_memory_stats; CPU: peak RSS
    run.items_encoded = 0
    clock = TrainClock()                               # wall and CPU seconds of the training steps
    if not train_steps(run, epoch, done):
        save_mid_epoch(run, state, done)
        raise Preempted(run.stop["signal"] or signal.SIGTERM, f"stopped by signal {run.stop['signal']} at epoch "
                        f"{epoch}, step {done.step}; saved {run.files.last}; continue with the same command and --resume")
    state["partial"] = None
    train_seconds, train_cpu_seconds = clock.seconds()
    start = time.perf_counter()
    valid, _ = evaluate(run.model, run.data, "valid", run.cfg, run.device, run.world, run.images)
    record = {"epoch": epoch, **done.summary(), "valid": valid,
              "valid_repeats": repeat_record(torch.from_numpy(run.data.split_repeats("valid")), run.cfg.repeat_targets),
              "train_seconds": round(train_seconds, 3), "train_cpu_seconds": round(train_cpu_seconds, 3),
              "eval_seconds": round(time.perf_counter() - start, 3), "steps": done.step}
    if run.device.type == "cuda":                    # this rank's peak over the epoch's training and evaluation
        record["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(run.device) / 2 ** 20, 1)
    record.update(cost_record(run, train_seconds, memory_kind))
    best = state["best"]
    if best is None or selection_score(run.cfg, valid) > selection_score(run.cfg, best["valid"]):
        state["best"], state["bad_evals"] = {"epoch": epoch, "valid": valid}, 0
        save_best(run, epoch, valid)
    else:
        state["bad_evals"] += 1
    state["epoch"] = epoch
    state["history"].append(record)
    save_last(run, state)
    write_metrics(run.files, state["history"], run.world)
    log.info("epoch %d loss %.4f grad norm %.3g valid %s (train %.1fs, CPU %.1fs, eval %.1fs)%s", epoch,
             record["train_loss"], record["grad_norm_mean"], percent(valid), train_seconds, train_cpu_seconds,
             record["eval_seconds"], " *" if state["bad_evals"] == 0 else "")


def train(cfg: Config, run_dir: Path) -> dict:
    """Train one run to early stop, holding the run folder's lock (rank 0; morec.runlock);
    returns the best valid record. A new run that fails before its first checkpoint leaves no
    folder behind."""
    check_memory(memory_spec(cfg))            # what the values alone need, before loading data
    with training_folder(cfg, RunFiles(run_dir)):
        return train_in_folder(cfg, run_dir)


def train_in_folder(cfg: Config, run_dir: Path) -> dict:
    """Train one run to early stop; returns the best valid record."""
    specs = run_specs(cfg)
    data = load_data(cfg)                     # bad data fails here, before anything is written
    check_memory(specs.memory, data.num_items, data.num_users)
    device, world = start_devices(cfg)
    files = RunFiles(run_dir)
    resuming = cfg.resume and files.last.exists()
    source = check_source(specs.transfer) if cfg.init_from and not resuming else None   # transfer: before writing
    checkpoint = prepare_run(cfg, files, world)
    with run_logging(files.log if world.is_main else None), stop_signals() as stop:
        # a failure here leaves no folder behind: train() holds the folder with training_folder
        model = build_run_model(cfg, data, device, specs)     # loads encoders: bad weights fail here
        images = run_item_images(specs.item_inputs, data)      # vision: the LMDB must hold every item
        bind_run_to_data(files.config, specs.data, data, resumed=checkpoint is not None, record=world.is_main)
        if source is not None and checkpoint is None:      # a resumed run continues from its own checkpoint
            init_from_source(model, specs.transfer, source)
            if world.is_main:
                record_source(files.config, specs.transfer, source)
        run = Run(cfg, data, files, device, world, model, distributed_trainer(model, cfg, world, device),
                  build_optimizer(model, cfg), grad_scaler(cfg, device), make_batches(cfg, data), stop, images)
        run.scheduler = lr_scheduler(run.optimizer, cfg, steps_per_epoch(run))
        log_checkpoint_contents(model)
        state = fresh_state() if checkpoint is None else resumed_state(run, checkpoint)
        if checkpoint is None:
            if cfg.resume:
                log.warning("no %s in %s: starting a new run", files.last.name, files.dir)
            log.info("run %s: %d users, %d items, %d optimizer steps per epoch, %d rank(s), device %s",
                     files.dir.name, data.num_users, data.num_items, steps_per_epoch(run), world.size, device)
        write_metrics(files, state["history"], world)
        while state["epoch"] < cfg.epoch and state["bad_evals"] < cfg.patience:
            run_epoch(run, state)
        if state["best"] is None:
            raise InputError(f"{files.dir} finished no epoch; raise --epoch")
        log.info("best epoch %d: valid %s", state["best"]["epoch"], percent(state["best"]["valid"]))
        return state["best"]


# ----------------------------------------------------------------------------- test

def test(cfg: Config, run_dir: Path) -> dict:
    """Evaluate the best checkpoint of a run on the test split, holding the run folder's lock
    (which also checks that test_metrics.json can be written before evaluating)."""
    with run_lock(run_dir, take=run_dir.is_dir()):
        return test_in_folder(cfg, run_dir)


def test_in_folder(cfg: Config, run_dir: Path) -> dict:
    """Evaluate the best checkpoint of a run on the test split; write test_metrics.json."""
    files = RunFiles(run_dir)
    cfg = saved_config(files, cfg)
    specs = run_specs(cfg)
    data = load_data(cfg)
    check_data_identity(files.config, data_identity(specs.data, data), "test")
    device = resolve_device(cfg.device)
    checkpoint = load_checkpoint(files.best, map_location=device)
    require_entries(checkpoint, files.best, ("model", "epoch", "valid"))
    check_memory(specs.memory, data.num_items, data.num_users, training=False)
    model = build_run_model(cfg, data, device, specs)
    load_model_weights(model, checkpoint, files.best)
    metrics, counts = evaluate(model, data, "test", cfg, device, images=run_item_images(specs.item_inputs, data))
    result = test_record(files, cfg, data, checkpoint, metrics, counts)
    save_test_ranks(files.test_ranks, counts, data.user_names, data.split_repeats("test"))
    write_json_atomic(files.test, result)
    print_test_result(result)
    return result


__all__ = ["train", "test", "evaluate", "RunFiles", "load_data", "build_run_model"]
