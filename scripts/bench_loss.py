"""Benchmark: vectorised in-batch debiased loss (morec.losses.sasrec_inbatch_loss) against the
per-row SPEC definition (morec.tools.reference.inbatch_loss_per_row), forward + backward, on CPU.

    python scripts/bench_loss.py [--batch 128] [--seq_len 20] [--dim 64] [--items 1400] [--threads 2]

Random SASRec batch: left-padded sequences (about a third of them shorter than L+1), items from a
Zipf-like popularity so that items repeat within and across users. Last line: `speedup: <x>x`.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import statistics
import time

import torch

from morec.losses import sasrec_inbatch_loss
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--items", type=int, default=1400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the reference")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    inputs = make_batch(args.batch, args.seq_len, args.dim, args.items)
    seqs = inputs[2]
    rows = int((seqs[:, :-1] != 0).sum())
    distinct = len(torch.unique(seqs[seqs != 0]))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"B={args.batch} L={args.seq_len} d={args.dim} catalogue {args.items}: {rows} prediction rows, "
          f"{seqs.numel()} slots ({int((seqs == 0).sum())} padding, {distinct} distinct items)")

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
