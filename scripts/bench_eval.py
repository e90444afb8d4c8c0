"""Benchmark: chunked full ranking (morec.evaluate.tie_counts + metrics_from_counts, the tie rule of
SPEC "Evaluation") against the per-user argsort loop of the paper's code
(morec.tools.reference.ranks_per_user), on CPU. Ranks compared: 1 + h (items strictly above the target).

    python scripts/bench_eval.py [--quick] [--threads 2]
    python scripts/bench_eval.py --scaling [--scaling_users 10000,100000,630000] [--scaling_items 80000] [--threads 1]

(a) ml-100k, valid split, random user/item vectors (d = 64); (b) synthetic: 100k users x 50k
items, d = 64, ~20 history items per user (--quick: 10k x 5k). The reference runs on the first
`--ref_users` users only and its time is extrapolated linearly to all users; ranks and metrics
are compared on those users. Vectors lie on the grid k/16, so float32 dot products are exact and
both paths must agree exactly. The vectorised path of (b) runs in a child process (for two user
counts) that samples its own RSS, to show that memory is bounded by the chunk, not by users x items.
Each case also prints the vectorised path's time over two floors timed in the same process: the
bare blocked matmul (the same users x items, in the score blocks the path uses, `block_shape`,
without the path's extra target columns, into one reused buffer) and the bare full-row chunked
matmul (chunks of `eval_chunk_elems` scores over all items, a fresh result each: the path before
item blocks). (b) and --scaling time `--repeats` interleaved rounds of path and floors by process
CPU time (steadier than wall time on a shared machine), medians. Last line: `speedup: <x>x` for (b).

--scaling: the vectorised path alone at MIND size (d = 64, 80k items; 10k, 100k and 630k users),
each size in its own child process: seconds, users/s, RSS with the data loaded, peak RSS while
ranking. Time grows linearly with users, the ranking's extra memory stays at the chunk's size. The
per-user reference runs only on the first `--ref_users` users of the smallest size (ranks compared,
time extrapolated); its speed-up is the last line.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
import os
import resource
import subprocess
import tempfile
import threading
import time

import numpy as np
import torch

from morec.config import Config
from morec.evaluate import block_shape, metrics_from_counts, metrics_from_ranks, tie_counts
from morec.tools.reference import ranks_per_user
from morec.parts import load_data

CHUNK_ELEMS = Config().eval_chunk_elems
MiB = 2 ** 20


def grid_vectors(gen: torch.Generator, rows: int, dim: int) -> torch.Tensor:
    """N(0, 1) rounded to multiples of 1/16 within [-4, 4]: exact float32 dot products (d <= 64)."""
    return (torch.randn(rows, dim, generator=gen) * 16).round().clamp(-64, 64) / 16


def synthetic_case(users: int, items: int, dim: int, hist: int, seed: int = 0):
    """user_vecs (U, d), item_vecs (N+1, d), targets (U,), history (U, hist + 5), 0-padded."""
    gen = torch.Generator().manual_seed(seed)
    user_vecs, item_vecs = grid_vectors(gen, users, dim), grid_vectors(gen, items + 1, dim)
    width = hist + 5
    lengths = torch.randint(hist - 5, width + 1, (users, 1), generator=gen)     # ~hist on average
    history = torch.randint(1, items + 1, (users, width), generator=gen)
    history *= torch.arange(width) >= width - lengths                          # left padding
    targets = torch.randint(1, items + 1, (users,), generator=gen)
    return user_vecs, item_vecs, targets, history


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def vectorised(user_vecs, item_vecs, targets, history):
    """Tie counts and metrics by the chunked path; returns (seconds, ranks 1 + h, metrics)."""
    start = time.perf_counter()
    counts = tie_counts(user_vecs, item_vecs, targets, history, CHUNK_ELEMS)       # (U, 2)
    metrics = metrics_from_counts(counts)
    return time.perf_counter() - start, 1 + counts[:, 0], metrics


def bare_chunked_matmul(user_vecs, item_vecs, targets=None, history=None) -> float:
    """The old floor: full-row chunks of CHUNK_ELEMS scores, a fresh result each; seconds."""
    start = time.perf_counter()
    num_rows = max(1, CHUNK_ELEMS // item_vecs.shape[0])
    item_vecs_t = item_vecs.float().T.contiguous()                                  # (d, N+1)
    for first in range(0, len(user_vecs), num_rows):
        user_vecs[first:first + num_rows].float() @ item_vecs_t                      # (C, N+1)
    return time.perf_counter() - start


def bare_blocked_matmul(user_vecs, item_vecs, targets=None, history=None) -> float:
    """The floor of the vectorised path: its score blocks' matmuls alone (no target columns), into
    one reused buffer; seconds (the blocks are copied out before the clock starts)."""
    rows, items = block_shape(len(item_vecs), CHUNK_ELEMS, user_vecs.device)
    blocks = [item_vecs[first:first + items].float().T.contiguous() for first in range(0, len(item_vecs), items)]
    scores = torch.empty(rows, items)                                                # (C, items)
    start = time.perf_counter()
    for first in range(0, len(user_vecs), rows):
        users = user_vecs[first:first + rows].float()
        for block in blocks:
            torch.mm(users, block, out=scores[:len(users), :block.shape[1]])
    return time.perf_counter() - start


def cpu_seconds(fn, *args) -> float:
    """Process CPU time of fn(*args) (one torch thread: the work's own time, not the waits)."""
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def timed_rounds(case, repeats: int) -> dict:
    """Medians of `repeats` interleaved rounds: path, blocked floor, full-row floor (CPU seconds)."""
    rounds = [[cpu_seconds(fn, *case) for fn in (vectorised, bare_blocked_matmul, bare_chunked_matmul)]
              for _ in range(repeats)]
    path, blocked, full_row = (float(np.median(column)) for column in zip(*rounds))
    return {"cpu_seconds": path, "blocked_floor": blocked, "full_row_floor": full_row,
            "rounds": [[round(x, 3) for x in r] for r in rounds]}


def child(args) -> None:
    """Run the vectorised path of case (b) in this process, sampling RSS every 2 ms."""
    torch.set_num_threads(args.threads)
    case = synthetic_case(args.users, args.items, args.dim, args.hist)
    before, peak, done = rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    seconds, ranks, metrics = vectorised(*case)
    done.set()
    sampler.join()
    np.save(args.out, ranks.numpy())
    print(json.dumps({"seconds": seconds, **timed_rounds(case, args.repeats), "metrics": metrics, "rss_before": before,
                      "rss_peak": max(peak[0], rss_bytes()),
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_child(args, users: int, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--users", str(users), "--items", str(args.items),
           "--dim", str(args.dim), "--hist", str(args.hist), "--threads", str(args.threads), "--out", out,
           "--repeats", str(args.repeats)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def reference(case, num_users: int):
    """Per-user loop on the first `num_users` users; returns (seconds, ranks)."""
    user_vecs, item_vecs, targets, history = (x.numpy() for x in case)
    start = time.perf_counter()
    ranks = ranks_per_user(user_vecs[:num_users], item_vecs, targets[:num_users], history[:num_users])
    return time.perf_counter() - start, ranks


def compare(name: str, fast_ranks: np.ndarray, slow_ranks: np.ndarray) -> None:
    """Ranks and HR/NDCG@10 must be identical on the users both paths ranked."""
    n = len(slow_ranks)
    fast_m = metrics_from_ranks(torch.from_numpy(fast_ranks[:n]))
    slow_m = metrics_from_ranks(torch.from_numpy(slow_ranks))
    same = np.array_equal(fast_ranks[:n], slow_ranks) and fast_m == slow_m
    print(f"  [{name}] identical ranks and metrics on {n} users: {same}  "
          f"(HR@10 {100 * slow_m['HR@10']:.2f}, NDCG@10 {100 * slow_m['NDCG@10']:.2f})")
    if not same:
        raise SystemExit(f"mismatch: {int((fast_ranks[:n] != slow_ranks).sum())} users differ")


def print_floor(name: str, fast_s: float, blocked_s: float, full_row_s: float, how: str) -> None:
    print(f"  [{name}] bare blocked matmul {blocked_s:.3f}s, bare full-row chunked matmul {full_row_s:.3f}s; "
          f"vectorised / blocked: {fast_s / blocked_s:.2f}x, / full-row: {fast_s / full_row_s:.2f}x ({how})")


def report(name: str, users: int, fast_s: float, ref_s: float, ref_users: int) -> float:
    ref_total = ref_s * users / ref_users
    note = "" if ref_users == users else f" (measured {ref_s:.2f}s on {ref_users} users, extrapolated)"
    print(f"  [{name}] vectorised: {fast_s:.3f}s, {users / fast_s:,.0f} users/s")
    print(f"  [{name}] per-user:   {ref_total:.3f}s, {ref_users / ref_s:,.0f} users/s{note}")
    print(f"  [{name}] speed-up {ref_total / fast_s:.1f}x")
    return ref_total / fast_s


def bench_ml100k(args) -> None:
    data = load_data(Config())
    gen = torch.Generator().manual_seed(1)
    case = (grid_vectors(gen, data.num_users, args.dim), grid_vectors(gen, data.num_items + 1, args.dim),
            torch.from_numpy(data.split_target("valid")), torch.from_numpy(data.split_history("valid")))
    print(f"(a) ml-100k valid: {data.num_users} users x {data.num_items} items, d={args.dim}, "
          f"history width {case[3].shape[1]}")
    times, blocked, full_row = [], [], []
    for _ in range(10):                                    # interleaved with the floors
        times.append(vectorised(*case))
        blocked.append(bare_blocked_matmul(*case))
        full_row.append(bare_chunked_matmul(*case))
    fast_s = float(np.median([t[0] for t in times]))
    print_floor("ml-100k", fast_s, float(np.median(blocked)), float(np.median(full_row)),
                "wall time, medians of 10, interleaved")
    ref_s, slow_ranks = reference(case, data.num_users)
    compare("ml-100k", times[0][1].numpy(), slow_ranks)
    report("ml-100k", data.num_users, fast_s, ref_s, data.num_users)


def bench_synthetic(args) -> float:
    print(f"(b) synthetic: {args.users} users x {args.items} items, d={args.dim}, ~{args.hist} "
          f"history items, chunk_elems {CHUNK_ELEMS}, score blocks of "
          f"{' users x '.join(map(str, block_shape(args.items + 1, CHUNK_ELEMS, torch.device('cpu'))))} items")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ranks.npy")
        runs = {u: run_child(args, u, out) for u in (args.users // 5, args.users)}
        fast_ranks = np.load(out)                                      # of the last (full) run
    print("  vectorised path memory (child process; RSS sampled every 2 ms while ranking):")
    for users, r in runs.items():
        unchunked, extra = users * (args.items + 1) * 4, r["rss_peak"] - r["rss_before"]
        print(f"    {users:>7} users: RSS {r['rss_before'] / MiB:7.1f} MiB with data loaded, peak "
              f"{r['rss_peak'] / MiB:7.1f} MiB while ranking (+{extra / MiB:.1f}), "
              f"process ru_maxrss {r['maxrss'] / MiB:.1f} MiB; unchunked scores would need "
              f"{unchunked / MiB:,.0f} MiB")
    case = synthetic_case(args.users, args.items, args.dim, args.hist)
    ref_s, slow_ranks = reference(case, args.ref_users)
    compare("synthetic", fast_ranks, slow_ranks)
    full = runs[args.users]
    print_floor("synthetic", full["cpu_seconds"], full["blocked_floor"], full["full_row_floor"],
                f"CPU time, medians of {args.repeats} interleaved rounds")
    return report("synthetic", args.users, full["seconds"], ref_s, args.ref_users)


def bench_scaling(args) -> float:
    """Table of the vectorised path over user counts (child processes); returns the speed-up on the
    smallest size against the per-user reference on its first `ref_users` users."""
    sizes = [int(u) for u in args.scaling_users.split(",")]
    args.items = args.scaling_items
    rows, items = block_shape(args.items + 1, CHUNK_ELEMS, torch.device("cpu"))
    print(f"scaling: {args.items} items, d={args.dim}, ~{args.hist} history items per user, chunk_elems "
          f"{CHUNK_ELEMS}, score blocks of {rows} users x {items} items, torch threads {args.threads}; "
          "one child process per size")
    print(f"| {'users':>7} | {'seconds':>8} | {'CPU s':>6} | {'/ blocked matmul':>16} | {'/ full-row matmul':>17} | {'users/s':>8} | {'s per 100k users':>16} | {'RSS with data':>13} "
          f"| {'peak while ranking':>18} | {'ranking extra':>13} | {'unchunked scores':>16} |")
    print(f"|{'-' * 9}|{'-' * 10}|{'-' * 8}|{'-' * 18}|{'-' * 19}|{'-' * 10}|{'-' * 18}|{'-' * 15}|{'-' * 20}|{'-' * 15}|{'-' * 18}|")
    with tempfile.TemporaryDirectory() as tmp:
        for index, users in enumerate(sizes):
            out = os.path.join(tmp, f"ranks{index}.npy")
            r = run_child(args, users, out)
            extra = r["rss_peak"] - r["rss_before"]
            print(f"| {users:>7,} | {r['seconds']:>8.2f} | {r['cpu_seconds']:>6.2f} | "
                  f"{r['cpu_seconds'] / r['blocked_floor']:>15.2f}x | {r['cpu_seconds'] / r['full_row_floor']:>16.2f}x | "
                  f"{users / r['seconds']:>8,.0f} | "
                  f"{r['seconds'] * 1e5 / users:>16.2f} | {r['rss_before'] / MiB:>9.0f} MiB | "
                  f"{r['rss_peak'] / MiB:>14.0f} MiB | {extra / MiB:>9.0f} MiB | "
                  f"{users * (args.items + 1) * 4 / 2 ** 30:>12.1f} GiB |", flush=True)
            if index == 0:
                first_ranks, first = np.load(out), r
    case = synthetic_case(sizes[0], args.items, args.dim, args.hist)
    ref_s, slow_ranks = reference(case, args.ref_users)
    compare(f"{sizes[0]} users", first_ranks, slow_ranks)
    return report(f"{sizes[0]} users", sizes[0], first["seconds"], ref_s, args.ref_users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k users x 5k items, 500 reference users")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--hist", type=int, default=20)
    parser.add_argument("--ref_users", type=int, default=2000)
    parser.add_argument("--scaling", action="store_true", help="vectorised path only, at MIND size, over user counts")
    parser.add_argument("--scaling_users", default="10000,100000,630000")
    parser.add_argument("--scaling_items", type=int, default=80_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds of path and floors")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.quick:
        args.users, args.items, args.ref_users = 10_000, 5_000, 500
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, reference: numpy {np.__version__}")
    if args.scaling:
        args.ref_users = min(args.ref_users, 300)
        speedup = bench_scaling(args)
        print(f"speedup: {speedup:.1f}x")
        return
    bench_ml100k(args)
    speedup = bench_synthetic(args)
    print(f"speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main()
