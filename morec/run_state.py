"""A run's random-state snapshots and checkpoint contents: what checkpoint_last.pt (resume) and
checkpoint_best.pt (test) hold, how they are saved, and how weights are loaded back (the run
folder itself is morec.runs; the training loop morec.train)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from morec.checkpoint import load_weights, require_entries, save_checkpoint
from morec.data.identity import check_run_inputs
from morec.distributed import World
from morec.errors import InputError
from morec.models.adapters import reloaded_digest, reloaded_keys, trained_state
from morec.streams import STREAMS

if TYPE_CHECKING:
    from morec.models import Recommender
    from morec.train import EpochProgress, Run

log = logging.getLogger("morec")

def rng_state(device: torch.device) -> dict:
    """This process's global random state: the CPU generator and, on CUDA, every GPU's."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}


def set_rng_state(state: dict) -> None:
    """Restore a `rng_state` snapshot."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_states_of_all_ranks(world: World, device: torch.device) -> list[dict]:
    """Every rank's `rng_state`, indexed by rank (gathered under DDP), for a mid-epoch checkpoint."""
    states = [None] * world.size
    if world.distributed:
        torch.distributed.all_gather_object(states, rng_state(device))
    else:
        states[0] = rng_state(device)
    return states


# ----------------------------------------------------------------------------- checkpoints

def fresh_state() -> dict:
    """The loop state of a run before its first epoch (what checkpoint_last.pt saves besides weights)."""
    return {"epoch": 0, "best": None, "bad_evals": 0, "history": [], "partial": None}


def resumed_state(run: Run, checkpoint: dict) -> dict:
    """Load checkpoint_last.pt's weights, optimizer, scaler and lr scheduler into `run`; return its
    loop state."""
    require_entries(checkpoint, run.files.last, ("model", "optimizer", "epoch"))
    load_model_weights(run.model, checkpoint, run.files.last)
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler"):
        run.scaler.load_state_dict(checkpoint["scaler"])
    if checkpoint.get("scheduler"):                       # older checkpoints: no schedule (constant lr)
        run.scheduler.load_state_dict(checkpoint["scheduler"])
    state = {key: checkpoint.get(key, default) for key, default in fresh_state().items()}
    step = f", step {state['partial']['progress']['step']}" if state["partial"] else ""
    log.info("resumed %s after epoch %d%s", run.files.dir.name, state["epoch"], step)
    return state


def save_last(run: Run, state: dict) -> None:
    """checkpoint_last.pt (rank 0): weights, optimizer, scaler, lr scheduler and the loop state."""
    if run.world.is_main:
        save_checkpoint(run.files.last, {**model_entries(run.model), "optimizer": run.optimizer.state_dict(),
                                         "scaler": run.scaler.state_dict(), "scheduler": run.scheduler and run.scheduler.state_dict(),
                                         **state})
        if state["epoch"] == 1 and not state["partial"]:
            log.info("%s: %.2f MiB", run.files.last.name, run.files.last.stat().st_size / 2 ** 20)


def save_mid_epoch(run: Run, state: dict, done: EpochProgress) -> None:
    """checkpoint_last.pt of an epoch cut short: its progress and every rank's random state."""
    state["partial"] = {"progress": dataclasses.asdict(done), "rng": rng_states_of_all_ranks(run.world, run.device),
                        "world_size": run.world.size, "streams": STREAMS}
    save_last(run, state)


def save_best(run: Run, epoch: int, valid: dict[str, float]) -> None:
    """checkpoint_best.pt (rank 0): the weights of the best epoch and its valid metrics."""
    if run.world.is_main:
        save_checkpoint(run.files.best, {**model_entries(run.model), "epoch": epoch, "valid": valid})


def model_entries(model: Recommender) -> dict:
    """A checkpoint's weights: {"model": what trains + the recommender}, and under PEFT the sha1 of
    the frozen pretrained tensors left out ("reloaded_sha1"; morec.models.adapters)."""
    digest = getattr(model, "_reloaded_sha1", None)
    if digest is None:                        # computed once: frozen tensors never change
        digest = model._reloaded_sha1 = reloaded_digest(model) or ""
    return {"model": trained_state(model), **({"reloaded_sha1": digest} if digest else {})}


def load_model_weights(model: Recommender, checkpoint: dict, path: Path) -> None:
    """Load a checkpoint's weights; the frozen pretrained tensors a PEFT checkpoint leaves out
    must be those it was trained with (the encoder folder unchanged), else the run is refused, as
    is a run whose encoder, tokenizer or feature cache differ from those its config.json records."""
    check_run_inputs(path.parent / "config.json", "test" if path.name == "checkpoint_best.pt" else "resume")
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
