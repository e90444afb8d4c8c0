"""Benchmark: vectorised in-batch debiased loss (morec.losses.sasrec_inbatch_loss) against the
per-row SPEC definition (morec.tools.reference.inbatch_loss_per_row), forward + backward, on CPU,
and its floor: the bare logits matmul (R, d) @ (d, S) of the same batch.

    python scripts/bench_loss.py [--batch 128] [--seq_len 20] [--dim 64] [--items 1400] [--threads 2]
    python scripts/bench_loss.py --floor_only --batch_size 512 --items 79707 --threads 1   # MIND size

Random SASRec batch: left-padded sequences (about a third of them shorter than L+1), items from a
Zipf-like popularity so that items repeat within and across users. Floor lines (candidate and
floor repeats interleaved, medians): the exclusion masks (own items, padding, label slot: build +
fill) over the logits matmul's forward, and the whole loss forward + backward over the matmul's
forward + backward (its three matmuls). --floor_only skips the per-row reference (too slow at
B = 512). Last line: `speedup: <x>x` (with --floor_only: `loss / matmul floor: <x>x`).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import statistics
import time

import torch

from morec.losses import ExcludeBeforeSoftmax, holds_any, sasrec_inbatch_loss
from morec.tools.reference import inbatch_loss_per_row


def make_batch(batch: int, seq_len: int, dim: int, num_items: int, seed: int = 0):
    """states (B, L, d), seq_vecs (B, L+1, d), seqs (B, L+1), log_pop (N+1,)."""
    gen = torch.Generator().manual_seed(seed)
    width = seq_len + 1
    popularity = 1.0 / torch.arange(1, num_items + 1, dtype=torch.double)       # Zipf, s = 1
    items = torch.multinomial(popularity, batch * width, replacement=True, generator=gen) + 1
    lengths = torch.where(torch.rand(batch, generator=gen) < 0.35,
                          torch.randint(2, width, (batch,), generator=gen), width)
    seqs = torch.where(torch.arange(width) >= width - lengths[:, None], items.view(batch, width), 0)
    log_pop = torch.cat([torch.zeros(1), (popularity / popularity.sum()).log().float()])
    states = torch.randn(batch, seq_len, dim, generator=gen, requires_grad=True)
    seq_vecs = torch.randn(batch, width, dim, generator=gen, requires_grad=True)
    return states, seq_vecs, seqs, log_pop


def forward_backward(loss_fn, states, seq_vecs, seqs, log_pop):
    """Loss value and its gradients w.r.t. states and seq_vecs."""
    loss = loss_fn(states, seq_vecs, seqs, log_pop)
    grads = torch.autograd.grad(loss, [states, seq_vecs])
    return loss.detach(), grads


def timed(fn, repeats: int):
    """Median wall seconds of `repeats` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def floor_parts(states, seq_vecs, seqs, log_pop):
    """Three timed closures on one batch: the loss forward + backward, the bare logits matmul
    forward + backward (no loss around it), and the exclusion masks alone (as inbatch_debiased_loss
    builds and applies them, into a preallocated (R, S) buffer)."""
    width = seqs.shape[1]
    users, positions = torch.nonzero(seqs[:, :-1], as_tuple=True)
    rows = states[users, positions].detach().requires_grad_(True)                 # (R, d)
    slot_vecs = seq_vecs.detach().reshape(-1, seq_vecs.shape[-1]).requires_grad_(True)   # (S, d)
    slot_items, labels = seqs.reshape(-1), users * width + positions + 1
    upstream = torch.randn(len(rows), len(slot_items))                            # a stand-in gradient
    buffer = torch.empty(len(rows), len(slot_items))

    def matmul_forward():
        return rows.detach() @ slot_vecs.detach().T

    def matmul_forward_backward():
        return torch.autograd.grad(rows @ slot_vecs.T, [rows, slot_vecs], upstream)

    def masks():
        excluded = (holds_any(seqs, slot_items) | (slot_items == 0))[users]       # (R, S)
        excluded[torch.arange(len(labels)), labels] = False
        return ExcludeBeforeSoftmax.apply(buffer, excluded)

    def loss():
        return forward_backward(sasrec_inbatch_loss, states, seq_vecs, seqs, log_pop)
    return dict(loss=loss, matmul_fb=matmul_forward_backward, masks=masks, matmul=matmul_forward)


def floor_ratios(inputs, repeats: int) -> float:
    """Interleaved repeats of each part, medians; prints the ratios; returns loss / matmul floor."""
    parts = floor_parts(*inputs)
    times = {name: [] for name in parts}
    for _ in range(repeats):
        for name, fn in parts.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"logits matmul forward {1e3 * med['matmul']:.1f} ms, forward+backward {1e3 * med['matmul_fb']:.1f} ms; "
          f"exclusion masks {1e3 * med['masks']:.1f} ms; loss forward+backward {1e3 * med['loss']:.1f} ms "
          f"(medians of {repeats}, interleaved)")
    print(f"exclusion masks / logits matmul: {med['masks'] / med['matmul']:.2f}x")
    print(f"loss forward+backward / matmul forward+backward: {med['loss'] / med['matmul_fb']:.2f}x")
    return med["loss"] / med["matmul_fb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", "--batch_size", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--items", type=int, default=1400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the reference")
    parser.add_argument("--floor_repeats", type=int, default=5)
    parser.add_argument("--floor_only", action="store_true", help="only the floor ratios (no per-row reference)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inputs = make_batch(args.batch, args.seq_len, args.dim, args.items)
    seqs = inputs[2]
    rows = int((seqs[:, :-1] != 0).sum())
    distinct = len(torch.unique(seqs[seqs != 0]))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"B={args.batch} L={args.seq_len} d={args.dim} catalogue {args.items}: {rows} prediction rows, "
          f"{seqs.numel()} slots ({int((seqs == 0).sum())} padding, {distinct} distinct items)")
    ratio = floor_ratios(inputs, args.floor_repeats)
    if args.floor_only:
        print(f"loss / matmul floor: {ratio:.2f}x")
        return

    fast, (fast_loss, fast_grads) = timed(lambda: forward_backward(sasrec_inbatch_loss, *inputs), 20)
    slow, (slow_loss, slow_grads) = timed(lambda: forward_backward(inbatch_loss_per_row, *inputs),
                                          args.repeats)
    grad_diff = max((a - b).abs().max().item() for a, b in zip(fast_grads, slow_grads))
    print(f"loss vectorised {fast_loss.item():.6f}  per-row {slow_loss.item():.6f}  "
          f"|diff| {abs(fast_loss - slow_loss).item():.2e}  max |grad diff| {grad_diff:.2e}")
    torch.testing.assert_close(fast_loss, slow_loss, rtol=1e-4, atol=1e-4)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    print(f"vectorised forward+backward: {1e3 * fast:.2f} ms (median of 20)")
    print(f"per-row    forward+backward: {1e3 * slow:.2f} ms (median of {args.repeats})")
    print(f"speedup: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
