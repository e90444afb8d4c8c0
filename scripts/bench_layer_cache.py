"""Benchmark layer-cached partial fine-tuning (--cache_frozen_layers): seconds per training step
and peak RSS of in-batch SASRec with MiniLM, the top 1 and top 2 blocks trained, uncached against
cached, on the same batches; the cache's build time and size.

    python scripts/bench_layer_cache.py [--root_data_dir dataset] [--dataset amazon-scientific]
        [--encoder all_minilm_l6_v2] [--batch 64] [--seq_len 20] [--tops 1,2] [--steps 3]
        [--threads 1] [--build_threads 0] [--dtype float16] [--profile]

Each cache is built first, in a process of its own with --build_threads threads (0: every core;
a one-off pass of the catalogue through the frozen blocks, which dominates the run on one thread);
its build time is the one its sidecar records and its size the file's (an existing cache in
--cache_dir is reused and its recorded build time reported). Then every arm (top k x uncached /
cached) runs in a fresh process, so its peak RSS (ru_maxrss) is its own: the model built from the
same seed, 1 warm-up step, then `--steps` timed steps (forward, backward, AdamW) on the same
batches; the median is reported. The encoder's dropout is off (--encoder_dropout 0) in every arm,
so the loss of the first batch must agree between uncached and cached (to the cache's rounding:
float16 by default). --profile: torch.profiler's top operators of one step of each arm.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
import logging
import subprocess
import tempfile

import torch

from morec.config import make_config
from morec.parts import build_optimizer, build_run_model, load_data

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_common import (eval_loss, first_batches, median_after_warmup, process_peak_rss_mib,  # noqa: E402
                          timed_steps, training_step)


def arm_config(args, top: int, cached: bool):
    return make_config(dict(item_tower="text", loss="inbatch", bert_model_load=args.encoder,
                            root_data_dir=args.root_data_dir, dataset=args.dataset, batch_size=args.batch,
                            max_seq_len=args.seq_len, trainable_layers=top, encoder_dropout=0.0, device="cpu",
                            cache_frozen_layers=cached, layer_cache_dtype=args.dtype if cached else "float16",
                            cache_dir=args.cache_dir))


def run_arm(args, top: int, cached: bool) -> dict:
    """One arm in this process: median s/step, first-batch loss, peak RSS."""
    torch.set_num_threads(args.threads)
    cfg = arm_config(args, top, cached)
    data = load_data(cfg)
    model = build_run_model(cfg, data, torch.device("cpu"))
    batches = first_batches(cfg, data, args.steps + 1)
    loss = eval_loss(model, batches[0])
    optimizer = build_optimizer(model, cfg)
    times = timed_steps(model, optimizer, batches)
    result = {"top": top, "cached": cached, "s_per_step": median_after_warmup(times), "loss": loss,
              "peak_rss_mib": process_peak_rss_mib(),
              "distinct_items": int(torch.unique(batches[0]["seqs"][batches[0]["seqs"] != 0]).numel())}
    if args.profile:
        result["profile"] = profile(model, optimizer, batches[1])
    return result


def profile(model, optimizer, batch) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        training_step(model, optimizer, batch)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)


def build_cache(args, top: int) -> dict:
    """Build the arm's cache in this process (timed) and report its file and size."""
    import os
    torch.set_num_threads(args.build_threads or os.cpu_count())
    cfg = arm_config(args, top, True)
    data = load_data(cfg)
    build_run_model(cfg, data, torch.device("cpu"))
    (path,) = (pathlib.Path(args.cache_dir) / "layers").glob(f"*-top{top}-{args.dtype}-*.bin")
    seconds = json.loads(path.with_suffix(".json").read_text())["seconds"]
    return {"top": top, "build_s": seconds, "mib": path.stat().st_size / 2 ** 20, "file": path.name,
            "items": data.num_items, "threads": torch.get_num_threads()}


def in_subprocess(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root_data_dir", default="dataset")
    parser.add_argument("--dataset", default="amazon-scientific")
    parser.add_argument("--encoder", default="all_minilm_l6_v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--tops", default="1,2", help="trained top blocks, comma-separated")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 is steadier on a shared machine")
    parser.add_argument("--build_threads", type=int, default=0, help="threads of the cache builds (0: every core)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--cache_dir", default="", help="token and layer caches (default: a temporary folder)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--arm", default="", help=argparse.SUPPRESS)          # internal: TOP,CACHED or build,TOP
    args = parser.parse_args()
    if args.arm:
        kind, top = args.arm.split(",")[0], int(args.arm.split(",")[1])
        result = build_cache(args, top) if kind == "build" else run_arm(args, top, kind == "cached")
        print(json.dumps(result))
        return
    logging.basicConfig(level=logging.WARNING)
    args.cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="bench-layer-cache-")
    common = [f"--{name}={getattr(args, name)}" for name in
              ("root_data_dir", "dataset", "encoder", "batch", "seq_len", "steps", "threads", "build_threads", "dtype",
               "cache_dir")]
    common += ["--profile"] if args.profile else []
    print(f"{args.encoder} on {args.dataset}: B={args.batch}, L={args.seq_len}, {args.threads} thread(s), "
          f"median of {args.steps} steps after 1 warm-up, dropout off, cache {args.dtype}")
    for top in map(int, args.tops.split(",")):
        cache = in_subprocess(common + [f"--arm=build,{top}"])
        print(f"top {top}: cache of {cache['items']} items built in {cache['build_s']:.1f}s ({cache['threads']} "
              f"threads, encoder load included), {cache['mib']:.1f} MiB ({cache['file']})")
        plain, cached = (in_subprocess(common + [f"--arm={kind},{top}"]) for kind in ("plain", "cached"))
        for arm in (plain, cached):
            print(f"  {'cached  ' if arm['cached'] else 'uncached'} {arm['s_per_step']:.3f} s/step, peak RSS "
                  f"{arm['peak_rss_mib']:.0f} MiB, loss of batch 1 {arm['loss']:.6f} "
                  f"({arm['distinct_items']} distinct items)")
            if args.profile:
                print(arm["profile"])
        print(f"  top {top}: uncached / cached = {plain['s_per_step'] / cached['s_per_step']:.2f}x, "
              f"|loss difference| {abs(plain['loss'] - cached['loss']):.2e}")


if __name__ == "__main__":
    main()
