"""One training epoch of the real loop (batches, negatives, loss normalisation, DDP, gradient
accumulation) with plain SGD, for tests/test_distributed.py. Run it under torchrun with W gloo
ranks, or as a plain process (one rank); rank 0 saves the final weights and the mean loss.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_epoch.py OUT.pt --key value ...

SGD, because its update is linear in the gradient: two runs whose gradients agree up to float
summation order end with weights that agree to the same order. (AdamW divides each gradient
element by its own running magnitude, so an element whose true gradient is ~0 takes a full
lr-sized step in the direction of its rounding noise; weights after AdamW steps are not a
summation-order-proof observable.)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from morec.config import make_config, parse_overrides  # noqa: E402
from morec.distributed import finish_world  # noqa: E402
from morec.parts import build_run_model, load_data, make_batches, start_devices  # noqa: E402
from morec.runs import RunFiles  # noqa: E402
from morec.train import EpochProgress, Run, train_steps  # noqa: E402

def sgd_epoch(argv: list[str]) -> dict:
    """Train epoch 1 of the run described by `argv` (--key value) with SGD at --lr; returns
    {"loss": mean step loss, "steps": optimizer steps, "model": final weights, "initial": weights
    before training, "rank", "world_size"}."""
    ranks = int(os.environ.get("WORLD_SIZE", "1"))               # a bare torchrun: the values say so too
    cfg = make_config({"device": "cpu", "drop_rate": 0.0, "nproc_per_node": ranks, **parse_overrides(argv)})
    data = load_data(cfg)
    device, world = start_devices(cfg)
    torch.manual_seed(0)
    model = build_run_model(cfg, data, device)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.distribute(world, cfg.gather_negatives)
    trainer = DistributedDataParallel(model) if world.distributed else model
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)          # the run's --lr
    run = Run(cfg, data, RunFiles(Path(".")), device, world, model, trainer, optimizer,
              torch.amp.GradScaler("cpu", enabled=False), make_batches(cfg, data), {"signal": None})
    done = EpochProgress()
    assert train_steps(run, 1, done)
    return {"loss": done.loss_sum / done.step, "steps": done.step, "model": model.state_dict(), "initial": initial,
            "rank": world.rank, "world_size": world.size}


if __name__ == "__main__":
    result = sgd_epoch(sys.argv[2:])
    if result["rank"] == 0:
        torch.save(result, sys.argv[1])
    finish_world()                     # as launch.main: barrier, free the DDP wrapper, then leave
