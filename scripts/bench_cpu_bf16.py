"""Benchmark bf16 autocast on the CPU (--cpu_amp true) against fp32: seconds per training step of
the MiniLM text tower end to end and of the ID tower, in-batch SASRec on ml-100k, and the ratio.

    OMP_NUM_THREADS=1 python scripts/bench_cpu_bf16.py [--batch 64] [--seq_len 10] [--steps 3]
                                                       [--rounds 3] [--threads 1] [--profile]

Each step (forward, backward, AdamW) is timed as scripts/bench_text.py's step_times does, on the
same batches from the same initial weights, under morec.parts.autocast of the run's values (fp32:
the default; bf16: --cpu_amp true), timed both in wall seconds and in this process's CPU seconds
(time.process_time: on a shared, loaded machine the wall time also counts the waits for a core;
one thread, so CPU seconds are the work). fp32 and bf16 alternate for `--rounds` rounds (order
swapped each round, so a load change hits both), each round 1 warm-up step then `--steps` timed
ones; medians over all timed steps. Text: all_minilm_l6_v2, titles, top-2 blocks trainable (the
study SMALL settings); ID: an ID table. --profile: the ops that take the most time in one step
of each precision (torch.profiler, self CPU time), to see where bf16 gains or loses.

    python scripts/bench_cpu_bf16.py --quality RUNS_DIR

Quality instead of speed: the tested runs under RUNS_DIR (train_id.py / test_id.py, the same values
with and without --cpu_amp true) split by their recorded precision, HR@10 and NDCG@10 (percent) per
seed, and bf16 - fp32 with scripts/results_table.py's seed-level test (paired t over the shared
seeds, two-level bootstrap interval). Runs with --amp_fp32_loss true are their own side
("bf16 + fp32 loss"), compared with fp32 and with the plain bf16 runs. The train seconds per epoch are the runs' own (wall, load included).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import argparse
import contextlib
import copy
import statistics
import tempfile
import time
from dataclasses import replace

import torch

from morec.config import make_config, run_setting
from morec.cost import TrainClock
from morec.errors import InputError, run_cli
from morec.parts import autocast, build_optimizer, build_run_model, cpu_supports_bf16, load_data

from bench_common import first_batches  # noqa: E402

CPU = torch.device("cpu")
TOWERS = {"text": dict(item_tower="text", bert_model_load="all_minilm_l6_v2", news_attributes="title",
                       trainable_layers=2, fine_tune_lr=1e-4),
          "id": dict(item_tower="id")}


def setup(tower: str, args):
    """The model, its initial weights and `steps + 1` batches of one in-batch SASRec run."""
    cfg = make_config(dict(TOWERS[tower], loss="inbatch", batch_size=args.batch, max_seq_len=args.seq_len,
                           embedding_dim=64, device="cpu", cpu_amp=True, cache_dir=tempfile.mkdtemp()))
    with autocast(cfg, CPU):                       # what a --cpu_amp run trains under
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    data = load_data(cfg)
    model = build_run_model(cfg, data, CPU)
    batches = first_batches(cfg, data, args.steps + 1)
    return cfg, model, copy.deepcopy(model.state_dict()), batches


def matmul_ratio(rows: int, inner: int, cols: int, reps: int = 20) -> str:
    """The ceiling of bf16's gain at one shape: CPU seconds of a bare (rows, inner) @ (inner, cols)
    matmul in fp32 over bf16 (median of `reps`)."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        times = []
        for _ in range(reps + 1):
            start = time.process_time()
            a @ b
            times.append(time.process_time() - start)
        seconds[dtype] = statistics.median(times[1:])
    flops = 2 * rows * inner * cols
    return (f"bare matmul ({rows}, {inner}) @ ({inner}, {cols}): fp32 {flops / seconds[torch.float32] / 1e9:.1f} "
            f"GFLOP/s, bf16 {flops / seconds[torch.bfloat16] / 1e9:.1f} GFLOP/s, "
            f"bf16 speed-up {seconds[torch.float32] / seconds[torch.bfloat16]:.2f}x")


def step_times(model, batches: list[dict], cfg, steps: int) -> list[tuple[float, float]]:
    """(wall s, CPU s) of each of `steps` training steps after one warm-up step, under cfg's autocast."""
    model.train()
    optimizer = build_optimizer(model, cfg)
    times = []
    for batch in batches[:steps + 1]:
        clock = TrainClock()
        with autocast(cfg, CPU):
            loss = model.calculate_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(clock.seconds())
    return times[1:]


def bench(tower: str, args) -> None:
    bf16_cfg, model, initial, batches = setup(tower, args)
    configs = {"fp32": replace(bf16_cfg, cpu_amp=False), "bf16": bf16_cfg}
    assert {name: run_setting(cfg)["precision"] for name, cfg in configs.items()} == {"fp32": "fp32", "bf16": "bf16"}
    times = {"fp32": [], "bf16": []}
    for round_ in range(args.rounds):
        for name in (("fp32", "bf16") if round_ % 2 == 0 else ("bf16", "fp32")):
            model.load_state_dict(initial)
            torch.manual_seed(0)
            times[name] += step_times(model, batches, configs[name], args.steps)
    wall = {name: statistics.median(t[0] for t in steps) for name, steps in times.items()}
    cpu = {name: statistics.median(t[1] for t in steps) for name, steps in times.items()}
    print(f"{tower:4s} step, B {args.batch}, L {args.seq_len}, {len(times['fp32'])} steps each: "
          f"CPU s/step fp32 {cpu['fp32']:.4f}, bf16 {cpu['bf16']:.4f}, bf16/fp32 {cpu['bf16'] / cpu['fp32']:.2f} "
          f"(speed-up {cpu['fp32'] / cpu['bf16']:.2f}x); wall s/step fp32 {wall['fp32']:.4f}, bf16 "
          f"{wall['bf16']:.4f}, bf16/fp32 {wall['bf16'] / wall['fp32']:.2f}")
    if args.profile:
        for name, cfg in configs.items():
            profile_step(model, initial, batches, cfg, name, tower)


def profile_step(model, initial, batches, cfg, name: str, tower: str) -> None:
    """The 12 ops with the most self CPU time over the timed steps (after a warm-up step), per step.
    The profiler clocks wall time per op: on a loaded machine one preempted op can look slow."""
    model.load_state_dict(initial)
    model.train()
    optimizer = build_optimizer(model, cfg)
    for index, batch in enumerate(batches):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if index == 1 \
                else contextlib.nullcontext() as prof:                      # the timed steps: 1 .. steps
            for step_batch in ([batch] if index == 0 else batches[1:]):
                with autocast(cfg, CPU):
                    loss = model.calculate_loss(step_batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        if index == 1:
            break
    steps = len(batches) - 1
    print(f"--- {tower} step, {name}: top ops by self CPU time, {steps} steps (divide by {steps} for one)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


FP32_LOSS = " + fp32 loss"          # the name of a mixed-precision side run with --amp_fp32_loss true


def precision_name(config: dict) -> str:
    """fp32, bf16 or fp16, with FP32_LOSS appended for a mixed-precision run with --amp_fp32_loss."""
    precision = config["setting"]["precision"]
    return precision + FP32_LOSS if precision != "fp32" and config.get("amp_fp32_loss") else precision


def precision_pairs(runs: list) -> list[tuple[str, dict[str, list]]]:
    """[(system name, {precision name: runs})] for every system (everything that defines a run's
    result but its seed, precision and amp_fp32_loss: morec.report.grouping.group_key) with fp32
    runs and runs in at least one other precision (precision_name); fp32 first."""
    from morec.report.grouping import group_key, mode_name, tower_name
    systems: dict[str, dict[str, list]] = {}
    for run in runs:
        config = {**run.config, "setting": {**run.config["setting"], "precision": "any"}, "amp_fp32_loss": False}
        systems.setdefault(group_key(config), {"fp32": []}).setdefault(precision_name(run.config), []).append(run)
    return [(f"{tower_name(group['fp32'][0].config)} {mode_name(group['fp32'][0].config)}", group)
            for group in systems.values() if group["fp32"] and len(group) > 1]


def comparisons(sides: dict[str, list]) -> list[tuple[str, str]]:
    """(candidate, baseline) names: every mixed-precision side against fp32, and the fp32-loss
    variant against the plain one of the same precision where both are there."""
    mixed = [name for name in sides if name != "fp32"]
    return [(name, "fp32") for name in mixed] + [(name, name[:-len(FP32_LOSS)]) for name in mixed
                                                 if name.endswith(FP32_LOSS) and name[:-len(FP32_LOSS)] in sides]


def quality(runs_dir: str) -> None:
    """Mixed-precision vs fp32 runs of RUNS_DIR at the run (seed) level (module docstring), per
    system that has tested runs in fp32 and another precision (comparisons)."""
    from morec.report.run_files import METRICS, load_runs, read_history
    from morec.report.significance import compare, pairing
    pairs = precision_pairs(load_runs([runs_dir]))
    if not pairs:
        raise InputError(f"{runs_dir}: no system has tested runs in both fp32 and bf16 (--cpu_amp true); train and "
                         "test the same script with and without --cpu_amp true into this --runs_dir first")
    for system, runs in pairs:
        print(f"== {system}")
        for name, group in runs.items():
            group.sort(key=lambda run: run.config["seed"])
            for run in group:
                history = read_history(run.dir)
                cpu = [r["train_cpu_seconds"] for r in history if "train_cpu_seconds" in r]
                print(f"{name} seed {run.config['seed']}: HR@10 {100 * run.test['test']['HR@10']:.2f}, NDCG@10 "
                      f"{100 * run.test['test']['NDCG@10']:.2f}, best epoch {run.test['best_epoch']} of {len(history)}, "
                      f"train s/epoch (median) {statistics.median(r['train_seconds'] for r in history):.2f}"
                      + (f", CPU s/epoch (median) {statistics.median(cpu):.2f}" if len(cpu) == len(history) else ""))
        for candidate, baseline in comparisons(runs):
            pair = pairing(runs[candidate], runs[baseline])
            print(f"{candidate} - {baseline} ({pair.test_name}):")
            for metric in METRICS:
                result = compare(pair, metric)
                means = {name: 100 * statistics.mean(run.test["test"][metric] for run in runs[name])
                         for name in (baseline, candidate)}
                print(f"  {metric}: {baseline} {means[baseline]:.2f}, {candidate} {means[candidate]:.2f}, diff "
                      f"{result['diff']:+.2f} points [{result['ci_low']:+.2f}, {result['ci_high']:+.2f}], "
                      f"p {result['p']:.2f}")                                    # per-user values: percent


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 is steadier on a shared machine")
    parser.add_argument("--towers", default="id,text", help="comma-separated: id, text")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quality", metavar="RUNS_DIR", help="compare the tested bf16 and fp32 runs there instead")
    args = parser.parse_args(argv)
    if args.quality:
        return quality(args.quality)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, bf16 instructions: {cpu_supports_bf16()}")
    for tower in args.towers.split(","):
        bench(tower, args)
    tokens = args.batch * (args.seq_len + 1) * 30          # at most B (L+1) titles of <= 30 tokens
    print(matmul_ratio(args.batch * (args.seq_len + 1), 64, 64), "(the ID model's width)")
    print(matmul_ratio(tokens, 384, 1536), "(a MiniLM feed-forward layer over B (L+1) 30-token titles)")


if __name__ == "__main__":
    run_cli(main)
