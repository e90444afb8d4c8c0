"""Benchmark: a PixelRec-size data set from its raw interaction log to training and evaluation,
with bounded memory (docs/benchmarks.md, "Bounded memory at Pixel8M size").

    python scripts/make_synthetic.py --preset pixel1m --out DIR/pixel1m_raw
    python scripts/bench_prepared.py --raw DIR/pixel1m_raw --work DIR [--steps 200] [--eval_users 100000]
                                     [--reference] [--ddp_parsed] [--phases convert,setup,one,pair]
    python scripts/bench_prepared.py --raw DIR/pixel1m_raw --work DIR --phases evalpass --eval_dir DIR/pass
                                     [--steps 5] [--shard_users 500000]

--phases runs some of the phases below (each command under 20 minutes on a shared machine at
Pixel8M size): `setup` needs the converted folder of `convert`, `one` and `pair` the prepared form
of `setup`.

Each phase runs in its own child process (one thread each; seconds are wall-clock, peak RSS is the
child's own, imports included: torch alone is about 0.4-0.6 GB):

1. conversion: `scripts/convert_dataset.py --from pixelrec --no_images --stream` (Polars) of the
   raw log into DIR/<name>/users.tsv + items.tsv; --reference also runs the converter without
   --stream (in memory) on the same log, and both outputs must be the same bytes;
2. setup: parsing the tsv files (morec.data.load_sequence_data), building the prepared form once
   (morec.data.prepared, under DIR/cache) and mapping it (what every later run and rank does);
   all three must give the same data (digest of items, users and the split);
3. one rank: the run's setup with --prepared_data, the ID SASRec model (d = 64, L = 20, the
   config's loss and batch size), `--steps` training steps of the loop's own train_step (steps/s
   after 5 warm-up steps, and the epoch time it implies), then an exact full-ranking evaluation
   (morec.train.evaluate, valid split) of the first `--eval_users` users, extrapolated to all;
   RSS, PSS and anonymous memory from /proc/self/smaps_rollup (RSS counts the mapped file pages a
   process touched: the popularity of the loss reads every train row, so the whole mapped split is
   resident; they are page cache, clean, and shared with any other process mapping the file);
4. two gloo ranks on this machine (DDP, WORLD_SIZE 2), each mapping the prepared form: steps/s and
   each rank's RSS / PSS (the mapped pages are shared: RSS counts them in each rank, PSS splits
   them); --ddp_parsed also runs the pair parsing the tsv files instead, for comparison;
5. `evalpass` (not in the default phases): the exact evaluation of phase 3 over every user, measured
   rather than extrapolated, in shards of `--shard_users` users that survive an interrupted
   command: the model of the first start (trained as in phase 3) is kept in `--eval_dir`, each
   finished shard's per-user counts, repeat flags, wall and CPU seconds and peak RSS are written
   there (temp file + rename), and the same command goes on with the first missing shard. When
   every shard is in, it prints the metrics over all users and the summed seconds. Users are
   independent in the full ranking (morec.train.evaluate ranks them in groups anyway), so the
   shards' counts are the one pass's counts (tests/test_prepared.py checks it on ml-100k).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path

GB = 1e9
WARMUP = 5


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_now() -> dict:
    """Rss, Pss and their shared / private parts now (bytes), from /proc/self/smaps_rollup."""
    values = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0]) * 1024
    shared = values.get("Shared_Clean", 0) + values.get("Shared_Dirty", 0)
    return {"rss": values["Rss"], "pss": values["Pss"], "shared": shared, "anon": values.get("Anonymous", 0),
            "peak_rss": peak_rss()}


def digest(data) -> str:
    h = hashlib.sha256("\n".join(row.name for row in data.items[1:]).encode())
    names = data.user_names
    h.update("\n".join(names[k] for k in range(0, len(names), max(1, len(names) // 1000))).encode())
    for first in range(0, len(data.full), 1 << 18):
        h.update(data.full[first:first + (1 << 18)].tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- children

def child_convert(args) -> dict:
    from morec.tools.convert import convert
    from morec.tools.stream_convert import stream_convert
    dst = Path(args.work) / (args.name if args.child == "convert" else f"{args.name}_reference")
    shutil.rmtree(dst, ignore_errors=True)
    start = time.perf_counter()
    (stream_convert if args.child == "convert" else convert)("pixelrec", args.raw, dst, no_images=True)
    return {"seconds": time.perf_counter() - start, "peak_rss": peak_rss()}


def child_setup(args) -> dict:
    from morec.data import load_sequence_data
    from morec.data.prepared import prepared_sequence_data
    folder, imported = Path(args.work) / args.name, peak_rss()
    start = time.perf_counter()
    if args.child == "parse":
        data = load_sequence_data(folder, "users.tsv", "items.tsv", 20, 5)
    else:
        data = prepared_sequence_data(folder, "users.tsv", "items.tsv", 20, 5, 0, Path(args.work) / "cache")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "imports_rss": imported, **memory_now(), "users": data.num_users,
            "items": data.num_items, "interactions": int((data.full > 0).sum()), "digest": digest(data)}


def make_run(args, world_size: int):
    """What train_step reads of a run (as scripts/bench_id_step.py), DDP when world_size > 1."""
    import torch
    from types import SimpleNamespace
    from morec.config import make_config
    from morec.parts import (build_optimizer, build_run_model, distributed_trainer, grad_scaler, load_data,
                             make_batches, start_devices)
    cfg = make_config(dict(item_tower="id", embedding_dim=64, max_seq_len=20, device="cpu",
                           root_data_dir=args.work, dataset=args.name, cache_dir=str(Path(args.work) / "cache"),
                           prepared_data=not args.parsed, nproc_per_node=world_size))
    start = time.perf_counter()
    data = load_data(cfg)
    setup = time.perf_counter() - start
    device, world = start_devices(cfg)
    model = build_run_model(cfg, data, device)
    model.train()
    return SimpleNamespace(cfg=cfg, device=device, world=world, model=model, images=None,
                           trainer=distributed_trainer(model, cfg, world, device), optimizer=build_optimizer(model, cfg),
                           scaler=grad_scaler(cfg, device), batches=make_batches(cfg, data), data=data,
                           setup=setup, torch=torch)


def user_slice(data, users: slice):
    """The SequenceData of the users `users` of `data` (their rows of the mapped split, no copy)."""
    from morec.data.sequences import SequenceData
    return SequenceData(data.items, data.user_names[users], data.full[users], data.max_seq_len)


def child_train(args) -> dict:
    from morec.train import EpochProgress, evaluate, optimizer_steps, train_step
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    run = make_run(args, world_size)
    run.torch.set_num_threads(1)
    steps = optimizer_steps(run, 1, EpochProgress())
    for k in range(WARMUP + args.steps):
        if k == WARMUP:
            start = time.perf_counter()
        train_step(run, next(steps))
    step_seconds = (time.perf_counter() - start) / args.steps
    record = {"setup": run.setup, "steps_per_s": 1 / step_seconds, "batches_per_epoch": run.batches.num_batches(world_size),
              **memory_now()}
    if world_size == 1 and args.eval_users:
        data = run.data
        users = min(args.eval_users, data.num_users)
        part = user_slice(data, slice(0, users))
        start = time.perf_counter()
        evaluate(run.model, part, "valid", run.cfg, run.device)
        record.update(eval_users=users, eval_seconds=time.perf_counter() - start, users=data.num_users,
                      items=data.num_items, after_eval=memory_now())
    return record


# ----------------------------------------------------------------------------- parent

def shard_path(eval_dir: Path, index: int) -> Path:
    return eval_dir / f"shard-{index:05d}.npz"


def pass_model(run, args) -> None:
    """The model every shard of the pass evaluates: trained as in phase 3 at the first start and
    kept in --eval_dir/model.pt (our own file: a plain state dict, loaded with weights_only)."""
    from morec.checkpoint import save_checkpoint
    from morec.train import EpochProgress, optimizer_steps, train_step
    torch, path = run.torch, Path(args.eval_dir) / "model.pt"
    if path.is_file():
        run.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return
    steps = optimizer_steps(run, 1, EpochProgress())
    for _ in range(WARMUP + args.steps):
        train_step(run, next(steps))
    save_checkpoint(path, run.model.state_dict())


def evaluate_shards(model, data, cfg, device, eval_dir: Path, shard_users: int) -> None:
    """Evaluate (valid split) every shard of `shard_users` users not yet in eval_dir, one file each
    (written whole: morec.atomic_io)."""
    import io
    import numpy as np
    from morec.atomic_io import write_bytes_atomic
    from morec.train import evaluate
    shards = -(-data.num_users // shard_users)
    for index in range(shards):
        if shard_path(eval_dir, index).is_file():
            continue
        users = slice(index * shard_users, min((index + 1) * shard_users, data.num_users))
        part = user_slice(data, users)
        wall, cpu = time.perf_counter(), time.process_time()
        _, counts = evaluate(model, part, "valid", cfg, device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        record = io.BytesIO()
        np.savez(record, counts=counts.numpy(), repeat=part.split_repeats("valid"), wall=wall, cpu=cpu,
                 peak_rss=peak_rss())
        write_bytes_atomic(shard_path(eval_dir, index), record.getvalue())
        print(f"shard {index + 1} of {shards}: users {users.start:,}-{users.stop - 1:,} in {wall:.0f} s "
              f"({cpu:.0f} CPU s), peak RSS {gb(peak_rss())}", file=sys.stderr, flush=True)


def pass_totals(eval_dir: Path, num_users: int, cfg) -> dict:
    """Metrics over every user from the shards' counts, and the summed seconds."""
    import numpy as np
    import torch
    from morec.evaluate import rule_metrics
    shards = [dict(np.load(path)) for path in sorted(eval_dir.glob("shard-*.npz"))]
    counts = torch.from_numpy(np.concatenate([shard["counts"] for shard in shards]))
    repeat = torch.from_numpy(np.concatenate([shard["repeat"] for shard in shards]))
    if len(counts) != num_users:
        raise SystemExit(f"error: the shards in {eval_dir} hold {len(counts):,} users, the data {num_users:,}")
    metrics = rule_metrics(counts, repeat, cfg.repeat_targets, ties=cfg.ties)
    return {"users": num_users, "shards": len(shards), "wall": float(sum(s["wall"] for s in shards)),
            "cpu": float(sum(s["cpu"] for s in shards)), "peak_rss": float(max(s["peak_rss"] for s in shards)),
            "HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"]}


def child_evalpass(args) -> dict:
    eval_dir = Path(args.eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    run = make_run(args, 1)
    run.torch.set_num_threads(1)
    pass_model(run, args)
    evaluate_shards(run.model, run.data, run.cfg, run.device, eval_dir, args.shard_users)
    return pass_totals(eval_dir, run.data.num_users, run.cfg)


def evalpass_phase(args) -> None:
    """Phase 5: the child's progress lines go straight to stderr (run_child's stream_stderr)."""
    total = run_child(args, "evalpass", stream_stderr=True)
    print(f"exact evaluation over all {total['users']:,} users (valid, {total['shards']} shards): "
          f"{total['wall'] / 3600:.2f} h wall, {total['cpu'] / 3600:.2f} h CPU summed over the shards; "
          f"peak RSS {gb(total['peak_rss'])}; HR@10 {100 * total['HR@10']:.4f}, NDCG@10 {100 * total['NDCG@10']:.4f}")


def run_child(args, role: str, env: dict | None = None, stream_stderr: bool = False) -> dict:
    """Run this script as the `role` child (one thread); its last stdout line is its result.
    stream_stderr: the child's stderr (progress lines) goes to ours as it comes, not into the error."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "POLARS_MAX_THREADS": "2", **(env or {})}
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", role], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=None if stream_stderr else subprocess.PIPE)
    if out.returncode != 0:
        raise SystemExit(f"the {role} child failed (exit {out.returncode})" +
                         (" (its stderr is above); for evalpass the same command goes on with the first missing shard"
                          if stream_stderr else f":\n{out.stderr[-4000:]}"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_pair(args, parsed: bool) -> list[dict]:
    """Two gloo ranks started together (the environment torchrun would give them)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "LOCAL_WORLD_SIZE": "2"}
    extra = ["--parsed"] if parsed else []
    children = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], *extra, "--child", "train"],
                                 env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for r in range(2)]
    results = []
    for rank, child in enumerate(children):
        out, err = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"rank {rank} failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def gb(value: float) -> str:
    return f"{value / GB:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", required=True, help="the raw PixelRec-layout folder (make_synthetic.py --preset pixel1m)")
    parser.add_argument("--work", required=True, help="folder for the converted data set and the cache")
    parser.add_argument("--name", default="pixel_bench", help="the converted data set's folder name in --work")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval_users", type=int, default=100_000, help="users of the timed evaluation (0: none)")
    parser.add_argument("--reference", action="store_true", help="also the in-memory converter (same output)")
    parser.add_argument("--ddp_parsed", action="store_true", help="also two ranks that parse the tsv files")
    parser.add_argument("--phases", default="convert,setup,one,pair", help="which phases to run (comma-separated)")
    parser.add_argument("--eval_dir", help="evalpass: where the model and the finished shards are kept")
    parser.add_argument("--shard_users", type=int, default=500_000, help="evalpass: users per shard")
    parser.add_argument("--parsed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        handler = {"convert": child_convert, "reference": child_convert, "parse": child_setup, "build": child_setup,
                   "open": child_setup, "train": child_train, "evalpass": child_evalpass}[args.child]
        print(json.dumps(handler(args)))
        return
    Path(args.work).mkdir(parents=True, exist_ok=True)
    phases = set(args.phases.split(","))
    if "evalpass" in phases and not args.eval_dir:
        raise SystemExit("error: --phases evalpass needs --eval_dir DIR (where the model and the shards are kept)")
    if "convert" in phases:
        convert_phase(args)
    if "setup" in phases:
        setup_phase(args)
    if "one" in phases:
        one_rank_phase(args)
    if "pair" in phases:
        for parsed in ([False, True] if args.ddp_parsed else [False]):
            pair_phase(args, parsed)
    if "evalpass" in phases:
        evalpass_phase(args)


def convert_phase(args) -> None:
    conv = run_child(args, "convert")
    raw_bytes = sum(p.stat().st_size for p in Path(args.raw).rglob("*.csv"))
    lines = sum(1 for _ in open(Path(args.work) / args.name / "users.tsv", "rb"))
    print(f"conversion (--stream) of {raw_bytes / GB:.2f} GB of csv into {lines:,} users: {conv['seconds']:.0f} s, "
          f"peak RSS {gb(conv['peak_rss'])}")
    if args.reference:
        ref = run_child(args, "reference")
        same = all((Path(args.work) / args.name / f).read_bytes() == (Path(args.work) / f"{args.name}_reference" / f).read_bytes()
                   for f in ("users.tsv", "items.tsv"))
        print(f"conversion in memory (reference): {ref['seconds']:.0f} s, peak RSS {gb(ref['peak_rss'])}; "
              f"{'same files' if same else 'DIFFERENT FILES'}")
        if not same:
            raise SystemExit("error: the two converters wrote different files")


def setup_phase(args) -> None:
    shutil.rmtree(Path(args.work) / "cache", ignore_errors=True)
    setups = {role: run_child(args, role) for role in ("parse", "build", "open")}
    if len({s["digest"] for s in setups.values()}) != 1:
        raise SystemExit("error: parsing and the prepared form gave different data")
    first = setups["parse"]
    print(f"data: {first['users']:,} users, {first['items']:,} items kept, {first['interactions']:,} interactions in "
          "the L+3 windows")
    for role, what in (("parse", "parse the tsv files"), ("build", "build the prepared form"),
                       ("open", "map the prepared form")):
        s = setups[role]
        print(f"setup, {what}: {s['seconds']:.1f} s, peak RSS {gb(s['peak_rss'])} (imports {gb(s['imports_rss'])}), "
              f"RSS {gb(s['rss'])}, PSS {gb(s['pss'])} after")


def one_rank_phase(args) -> None:
    one = run_child(args, "train")
    print(f"one rank (mapped): setup {one['setup']:.1f} s; {one['steps_per_s']:.2f} steps/s over {args.steps} steps "
          f"-> {one['batches_per_epoch'] / one['steps_per_s'] / 3600:.1f} h per epoch of {one['batches_per_epoch']:,} steps; "
          f"RSS {gb(one['rss'])} (anonymous {gb(one['anon'])}, the rest mapped files and libraries), PSS {gb(one['pss'])}, "
          f"shared {gb(one['shared'])}, peak RSS {gb(one['peak_rss'])}")
    if "eval_seconds" in one:
        whole = one["eval_seconds"] * one["users"] / one["eval_users"]
        print(f"exact evaluation (valid, {one['items']:,} items): {one['eval_users']:,} users in {one['eval_seconds']:.0f} s "
              f"-> all {one['users']:,} users {whole / 60:.0f} min (extrapolated linearly); peak RSS "
              f"{gb(one['after_eval']['peak_rss'])}")


def pair_phase(args, parsed: bool) -> None:
    ranks = run_pair(args, parsed)
    label = "parsing the tsv files" if parsed else "mapping the prepared form"
    for r, rank in enumerate(ranks):
        print(f"two gloo ranks, {label}, rank {r}: setup {rank['setup']:.1f} s, {rank['steps_per_s']:.2f} steps/s, "
              f"RSS {gb(rank['rss'])} (anonymous {gb(rank['anon'])}), PSS {gb(rank['pss'])}, shared {gb(rank['shared'])}, "
              f"peak RSS {gb(rank['peak_rss'])}")
    print(f"two gloo ranks, {label}: RSS summed {gb(sum(r['rss'] for r in ranks))}, PSS summed "
          f"{gb(sum(r['pss'] for r in ranks))} (the memory the pair holds); epoch of "
          f"{ranks[0]['batches_per_epoch']:,} steps per rank -> "
          f"{ranks[0]['batches_per_epoch'] / min(r['steps_per_s'] for r in ranks) / 3600:.1f} h")


if __name__ == "__main__":
    main()
