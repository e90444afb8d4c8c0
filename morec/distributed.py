"""Distributed data parallel on one code path with single-process runs (nanoGPT style).

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; when WORLD_SIZE > 1 the process group starts
(NCCL on CUDA, gloo on CPU), otherwise every helper here is a no-op for world size 1.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from morec.errors import InputError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """Join the process group that torchrun describes in the environment (if any)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched_size() -> int:
    """How many ranks this process is one of: the initialised process group's size, else
    torchrun's WORLD_SIZE (1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_world(asked: int, grad_cache_chunk: int, size: int | None = None) -> None:
    """Refuse, before anything is written, a run whose processes are not what its values say.

    `asked` is the world size of the values (nproc_per_node x nnodes: the run label and
    config.json record it, and test scripts find the run folder by it), `size` the processes'
    (default: `launched_size()`). A bare torchrun launch has to pass the same numbers to the
    script; taking the size from the processes instead would give the run a label that the
    one-process test script, computing it from the values, cannot find. Gradient caching
    (`grad_cache_chunk` > 0) is refused with more than one rank: its re-entrant backward is not
    synchronised with DDP's all-reduce."""
    size = launched_size() if size is None else size
    if grad_cache_chunk > 0 and size > 1:
        raise InputError(f"--inbatch_chunk (gradient caching) runs in one process, but this run has {size} ranks "
                         "(its re-entrant backward is not synchronised with DDP's all-reduce): set "
                         "--inbatch_chunk 0 (for less memory per rank, lower --batch_size and raise "
                         "--nproc_per_node), or run gradient caching in one process without torchrun")
    if size > asked:
        raise InputError(f"this process is one of {size} torchrun ranks (WORLD_SIZE {size}), but the values ask for "
                         f"nproc_per_node x nnodes = {asked}; the run label and config.json record the world size, "
                         "so pass the same --nproc_per_node / --nnodes to the script, or start it without torchrun "
                         f"(python SCRIPT --nproc_per_node {size} restarts itself under torchrun)")
    if size < asked:
        raise InputError(f"the values ask for nproc_per_node x nnodes = {asked} processes, but this run has {size}; "
                         f"start the script as python SCRIPT --nproc_per_node {asked} (it restarts itself under "
                         "torchrun), or give torchrun the same numbers")


def finish_world() -> None:
    """End a finished run on every rank together, then leave the process group.

    Ranks finish at different moments (rank 0 still writes checkpoints and metrics while the
    others are done); a rank that tears its gloo connections down while another still uses
    them can abort ("terminate called without an active exception"). So: a final barrier that
    every rank reaches only after all its collective work, a garbage collection that frees the
    DistributedDataParallel wrapper (its reducer holds the process group), then leave."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        gc.collect()
    leave_world()


def leave_world() -> None:
    """Leave the process group (if this process joined one): every rank calls it before exiting,
    so the backend shuts its threads down in order rather than in the interpreter's teardown."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of a tensor over ranks (a copy; no gradient)."""
    if not world.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if `flag` is true on some rank (keeps ranks in step, e.g. on SIGTERM)."""
    if not world.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor(float(flag), device=device), world) > 0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the sum of all ranks' gradients for its part."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)                      # gloo has no reduce_scatter: reduce, then slice
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]


def gather_with_grad(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0, gradients flowing back to their owners.

    All ranks must pass the same shape."""
    if not world.distributed:
        return tensor
    return _GatherWithGrad.apply(tensor)


def gather_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's rows (counts may differ by rank), in rank order, no gradient."""
    if not world.distributed:
        return tensor
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world.size)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:len(tensor)] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(c.item())] for part, c in zip(parts, counts)])


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
