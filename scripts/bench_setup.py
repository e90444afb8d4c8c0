"""Benchmark: a run's setup before its first step -- reading items.tsv and users.tsv, dropping
short users, the cut to the last L+3 items and the leave-one-out split (SPEC "Data") -- with the
array reader (morec.data.load_sequence_data) against the line-by-line reference it replaced
(morec.data.sequences.line_by_line_sequence_data), in the same run.

    python scripts/bench_setup.py --root_data_dir DIR --dataset NAME [--max_seq_len 20] [--min_seq_len 5]
                                  [--warm_min_count 0] [--no_reference]

Each path runs in its own child process (one thread), so each peak RSS is its own: the peak RSS
of the process, torch's import included (morec.data imports it; the RSS after the imports is
printed too). Seconds are wall-clock; the CPU time beside them shows the work on a shared
machine. Both must give the same data (item ids, user names, split), or the script fails.
Make MIND-size data with `python scripts/make_synthetic.py --preset mind --out DIR/synthetic_mind`.
Last line: `setup <s> s, peak RSS <GB> GB` of the array reader.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import hashlib
import json
import os
import resource
import subprocess
import time
from pathlib import Path

GB = 1e9


def peak_rss() -> float:
    """This process's peak RSS in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(args: argparse.Namespace) -> dict:
    """One path's seconds per phase, peak RSS and a digest of the data it built (child process)."""
    from morec.data import build_sequence_data, read_items, read_user_ids
    from morec.data.sequences import line_by_line_sequence_data
    folder = Path(args.root_data_dir) / args.dataset
    sizes = (args.max_seq_len, args.min_seq_len)
    record = {"rss_after_imports": peak_rss()}
    start, cpu_start = time.perf_counter(), time.process_time()
    if args.child == "reference":
        data = line_by_line_sequence_data(folder, args.behaviors, args.news, *sizes, args.warm_min_count)
    else:
        items = read_items(folder / args.news)
        record["read items"] = time.perf_counter() - start
        users = read_user_ids(folder / args.behaviors, [row.name for row in items])
        record["read users"] = time.perf_counter() - start - record["read items"]
        data = build_sequence_data(items, users, *sizes, folder / args.behaviors, args.warm_min_count)
        record["filter, cut, split"] = time.perf_counter() - start - record["read items"] - record["read users"]
    record["total"], record["cpu"] = time.perf_counter() - start, time.process_time() - cpu_start
    record["peak_rss"] = peak_rss()
    digest = hashlib.sha256("\n".join(row.name for row in data.items[1:]).encode())
    digest.update("\n".join(data.user_names).encode())
    digest.update(data.full.tobytes())
    record.update(users=data.num_users, items=data.num_items, digest=digest.hexdigest())
    return record


def growth(record: dict, only: bool = False) -> str | float:
    """The peak RSS over the RSS after the imports: what the setup itself added."""
    added = record["peak_rss"] - record["rss_after_imports"]
    return added if only else f"+{added / GB:.2f} GB over the imports"


def run_child(args: argparse.Namespace, which: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", which], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {which} path failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root_data_dir", default="dataset")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--behaviors", default="users.tsv")
    parser.add_argument("--news", default="items.tsv")
    parser.add_argument("--max_seq_len", type=int, default=20)
    parser.add_argument("--min_seq_len", type=int, default=5)
    parser.add_argument("--warm_min_count", type=int, default=0)
    parser.add_argument("--no_reference", action="store_true", help="skip the line-by-line reference")
    parser.add_argument("--child", choices=["arrays", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    folder = Path(args.root_data_dir) / args.dataset
    size = sum((folder / name).stat().st_size for name in (args.behaviors, args.news))
    fast = run_child(args, "arrays")
    print(f"{folder}: {size / 1e6:.1f} MB of tsv; {fast['users']:,} users and {fast['items']:,} items kept "
          f"(L={args.max_seq_len}, min_seq_len={args.min_seq_len}, warm_min_count={args.warm_min_count})")
    phases = ", ".join(f"{name} {fast[name]:.2f} s" for name in ("read items", "read users", "filter, cut, split"))
    print(f"array reader: {phases}; {fast['cpu']:.2f} s of CPU time; RSS {fast['rss_after_imports'] / GB:.2f} GB "
          f"after the imports (torch), peak {fast['peak_rss'] / GB:.2f} GB ({growth(fast)})")
    if not args.no_reference:
        reference = run_child(args, "reference")
        if reference["digest"] != fast["digest"]:
            raise SystemExit("error: the array reader and the line-by-line reference built different data")
        print(f"line-by-line reference: {reference['total']:.2f} s ({reference['cpu']:.2f} s of CPU time), "
              f"peak RSS {reference['peak_rss'] / GB:.2f} GB ({growth(reference)}); same data")
        print(f"array reader against the reference: speed-up {reference['total'] / fast['total']:.1f}x "
              f"(CPU time {reference['cpu'] / fast['cpu']:.1f}x), "
              f"peak RSS {fast['peak_rss'] / reference['peak_rss']:.2f}x, "
              f"RSS growth {growth(fast, only=True) / growth(reference, only=True):.2f}x")
    print(f"setup {fast['total']:.2f} s, peak RSS {fast['peak_rss'] / GB:.2f} GB")


if __name__ == "__main__":
    main()
