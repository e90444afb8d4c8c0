"""Benchmark: the ID SASRec training step against its floor, the bare forward + backward of the same
user encoder on one fixed batch, on CPU.

    python scripts/bench_id_step.py [--loss inbatch] [--batch 64] [--seq_len 20] [--steps 30] [--threads 1]

The step is the training loop's own (morec.train.optimizer_steps + train_step on ml-100k): the
next batch from the data pipeline, the item lookups, the user encoder, the loss, backward, the
gradient norm and AdamW. The floor: model.encoder (the SASRec blocks) forward on fixed input
vectors (B, L, d) that require a gradient, and backward of the states' sum; no data, no loss, no
optimizer; for the in-batch loss also the loss's bare logits matmul (forward + backward) of the
same shape, a second floor; and the whole model's forward + backward on that fixed batch (item
lookups, encoder, loss: `model(batch).backward()`), which leaves out only what the training
loop adds (the data pipeline, the gradient norm, AdamW, the bookkeeping). Step and floors alternate (`--steps` of each, the first of each dropped as warm-up),
medians, by wall and by CPU time. With --profile, a torch.profiler table of 5 steps follows. The
ratio's last line (before the table):
`CPU time: step / encoder forward+backward: <x>x` (and the same by wall time above it).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import statistics
from types import SimpleNamespace

import torch

from morec.config import make_config
from morec.cost import TrainClock
from morec.distributed import World
from morec.parts import build_optimizer, build_run_model, distributed_trainer, grad_scaler, load_data, make_batches
from morec.train import EpochProgress, optimizer_steps, train_step


def make_run(args) -> SimpleNamespace:
    """What train_step and optimizer_steps read of a run, for one CPU process."""
    cfg = make_config(dict(item_tower="id", loss=args.loss, batch_size=args.batch, max_seq_len=args.seq_len,
                           embedding_dim=64, device="cpu"))
    data, device, world = load_data(cfg), torch.device("cpu"), World()
    model = build_run_model(cfg, data, device)
    model.train()
    return SimpleNamespace(cfg=cfg, device=device, world=world, model=model, images=None,
                           trainer=distributed_trainer(model, cfg, world, device),
                           optimizer=build_optimizer(model, cfg), scaler=grad_scaler(cfg, device),
                           batches=make_batches(cfg, data))


def real_steps(run):
    """Endless: each call times one step of the training loop, the batch's fetch included;
    yields (step seconds, of which fetching the batch)."""
    epoch = 1
    while True:
        steps = optimizer_steps(run, epoch, EpochProgress())
        while True:
            clock = TrainClock()
            micro_batches = next(steps, None)
            if micro_batches is None:
                break
            fetched = clock.seconds()[0]
            train_step(run, micro_batches)
            yield clock.seconds(), fetched
        epoch += 1


def bare_encoder(run):
    """A closure timing the user encoder's forward + backward on the first batch's inputs."""
    seqs = next(iter(run.batches.epoch(run.cfg.seed, 0, 1, epoch=1)))["seqs"]          # (B, L+1)
    input_ids = seqs[:, :-1]
    vecs = run.model.item_tower.encode_items(input_ids).detach().requires_grad_(True)  # (B, L, d)
    params = [p for p in run.model.encoder.parameters() if p.requires_grad]

    def forward_backward() -> tuple[float, float]:
        clock = TrainClock()
        run.model.states(vecs, input_ids).sum().backward()
        seconds = clock.seconds()
        for p in params + [vecs]:
            p.grad = None
        return seconds
    return forward_backward


def bare_model(run):
    """A closure timing the whole model's forward + backward (item lookups, user encoder, loss) on
    the first batch: what a step computes, without the data pipeline and the optimizer."""
    batch = next(iter(run.batches.epoch(run.cfg.seed, 0, 1, epoch=1)))
    params = [p for p in run.model.parameters() if p.requires_grad]

    def forward_backward() -> tuple[float, float]:
        clock = TrainClock()
        run.model(batch).backward()
        seconds = clock.seconds()
        for p in params:
            p.grad = None
        return seconds
    return forward_backward


def bare_logits(run):
    """A closure timing the in-batch loss's logits matmul alone, forward + backward, on the first
    batch's shape: (R, d) states @ (d, S) slot vectors, R non-padded inputs, S = B (L+1) slots."""
    seqs = next(iter(run.batches.epoch(run.cfg.seed, 0, 1, epoch=1)))["seqs"]          # (B, L+1)
    rows, slots = int((seqs[:, :-1] != 0).sum()), seqs.numel()
    states = torch.randn(rows, run.model.item_tower.dim, requires_grad=True)
    slot_vecs = torch.randn(slots, run.model.item_tower.dim, requires_grad=True)
    upstream = torch.randn(rows, slots)

    def forward_backward() -> tuple[float, float]:
        clock = TrainClock()
        torch.autograd.grad(states @ slot_vecs.T, [states, slot_vecs], upstream)
        return clock.seconds()
    return forward_backward


def profile_steps(run, steps) -> None:
    from torch.profiler import profile
    with profile() as prof:
        for _ in range(5):
            next(steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", default="inbatch", choices=["inbatch", "bce"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = make_run(args)
    steps, floor, logits, whole = real_steps(run), bare_encoder(run), bare_logits(run), bare_model(run)
    step_s, floor_s, logits_s, model_s = [], [], [], []
    for _ in range(args.steps):
        step_s.append(next(steps))
        floor_s.append(floor())
        model_s.append(whole())
        if args.loss == "inbatch":
            logits_s.append(logits())
    fetch = statistics.median(f for _, f in step_s[1:])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; ID SASRec, {args.loss} loss, "
          f"B={args.batch} L={args.seq_len} d=64, ml-100k; medians of {args.steps - 1}, interleaved; the "
          f"batch's fetch from the data pipeline: {1e3 * fetch:.2f} ms")
    for clock, name in ((0, "wall"), (1, "CPU")):
        step = statistics.median(s[clock] for s, _ in step_s[1:])
        bare = statistics.median(f[clock] for f in floor_s[1:])
        line = (f"{name} time: step (data, lookups, encoder, loss, backward, AdamW) {1e3 * step:.2f} ms, bare "
                f"encoder forward+backward {1e3 * bare:.2f} ms")
        if logits_s:
            matmul = statistics.median(m[clock] for m in logits_s[1:])
            line += (f", in-batch logits matmul forward+backward {1e3 * matmul:.2f} ms; step / (encoder + "
                     f"logits matmul) {step / (bare + matmul):.2f}x")
        model = statistics.median(m[clock] for m in model_s[1:])
        print(line + f"; bare model forward+backward (lookups, encoder, loss) {1e3 * model:.2f} ms, step / "
              f"model {step / model:.2f}x")
        print(f"{name} time: step / encoder forward+backward: {step / bare:.2f}x")
    if args.profile:                                     # the table goes last; the ratio is printed above
        profile_steps(run, steps)


if __name__ == "__main__":
    main()
