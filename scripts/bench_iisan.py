"""Benchmark the cached IISAN text tower (`--side_network iisan`, docs/iisan.md) against fine-tuning
the text encoder: seconds per training step, peak memory and trainable parameters of in-batch
SASRec on ml-100k with the real all-MiniLM-L6-v2, with ratios to full fine-tuning and to the
top 2 blocks measured in the same run, and a TPME-style composite cost.

    python scripts/bench_iisan.py [--encoder all_minilm_l6_v2] [--batch 64] [--seq_len 20]
                                  [--steps 3] [--threads 1] [--device cpu|cuda] [--only full,top2,ts_all,iisan]

Each configuration runs in a fresh subprocess: build the model (the all-layer feature cache is
extracted beforehand, once, so no configuration pays for it), then 1 warm-up step and `--steps`
timed steps (forward, backward, AdamW) on the same first batches of the epoch. Memory: on the CPU
the process's resident set (peak, and the part the training steps add over the built model:
VmHWM after a reset through /proc/self/clear_refs, minus the RSS once built); on CUDA
torch.cuda.max_memory_allocated over the steps (weights, gradients, optimizer state,
activations), and the part added over the built model.

TPME (after IISAN's "training-time, parameter and memory efficiency"; lower is better, 1 for
full fine-tuning): TPME = (T / T_full + P / P_full + M / M_full) / 3, with T the seconds per step,
P the trainable parameters (encoder and recommender) and M the memory the training steps add.
The weights are equal here (1/3 each); the paper weighs its three terms with its own factors, so
these numbers compare rows of this table, not with the paper's.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_common import (add_step_options, add_worker_options, answer_as_worker, chosen_configs,  # noqa: E402
                          first_batches, median_after_warmup, reset_peak_rss, rss_mib, run_configurations,
                          run_worker_process, timed_steps, worker_command)

CACHED = {"two_stage": True, "ts_layers": "all"}
CONFIGS = {                                # name -> (label, Config values)
    "full": ("full fine-tuning", {}),
    "top2": ("top-2 blocks", {"trainable_layers": 2}),
    "ts_all": ("two-stage, --ts_layers all (scalar mix)", CACHED),
    "iisan": ("IISAN, --side_network iisan (cached)", {**CACHED, "side_network": "iisan"}),
}
DEFAULT = ("full", "top2", "ts_all", "iisan")


def run_values(args, name: str) -> dict:
    return dict(item_tower="text", loss="inbatch", bert_model_load=args.encoder, batch_size=args.batch,
                max_seq_len=args.seq_len, embedding_dim=64, device=args.device, cache_dir=args.cache_dir,
                amp=False, **CONFIGS[name][1])


def prepare(args) -> None:
    """Extract the all-layer feature cache once (no timed configuration pays for it)."""
    from morec.config import make_config
    from morec.features import ensure_features
    from morec.parts import load_data, resolve_device
    from morec.resolve import item_input_spec
    cfg = make_config(run_values(args, "iisan"))
    ensure_features(item_input_spec(cfg), load_data(cfg), resolve_device(cfg.device))


def memory_now(device) -> float:
    import torch
    return torch.cuda.memory_allocated(device) / 2 ** 20 if device.type == "cuda" else rss_mib("VmRSS")


def worker(args) -> dict:
    """One configuration in this (fresh) process: seconds per step, memory, trainable parameters."""
    import torch
    torch.set_num_threads(args.threads)
    from morec.config import make_config
    from morec.parts import build_optimizer, build_run_model, load_data, resolve_device
    cfg = make_config(run_values(args, args.worker))
    device = resolve_device(cfg.device)
    data = load_data(cfg)
    model = build_run_model(cfg, data, device)
    optimizer = build_optimizer(model, cfg)
    batches = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
               for batch in first_batches(cfg, data, args.steps + 1)]
    built = memory_now(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    reset = device.type == "cuda" or reset_peak_rss()
    model.train()
    times = timed_steps(model, optimizer, batches, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        peak = rss_mib("VmHWM") if reset else float("nan")
    return {"name": args.worker, "seconds_per_step": median_after_warmup(times), "built_mib": built,
            "peak_mib": peak, "added_mib": peak - built,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "batch_shape": list(batches[0]["seqs"].shape)}


def run_worker(name: str, args) -> dict:
    """`name` (or "prepare") in a fresh interpreter."""
    command = worker_command(__file__, name, args, "--device", args.device, "--cache_dir", args.cache_dir)
    return run_worker_process(command, name, args.threads)


def tpme(row: dict, base: dict) -> float:
    """(T / T_full + P / P_full + M / M_full) / 3 (module docstring): morec.cost.tpme on the rows' values."""
    from morec.cost import tpme as cost_tpme
    return cost_tpme((row["seconds_per_step"], row["trainable"], row["added_mib"]),
                (base["seconds_per_step"], base["trainable"], base["added_mib"]))


def table(results: dict[str, dict]) -> str:
    """Markdown table with ratios to full fine-tuning and to the top 2 blocks (when run)."""
    full, top2 = results.get("full"), results.get("top2")

    def ratio(row, base, key):
        return f"{row[key] / base[key]:.3f}x" if base and base[key] else "n/a"
    lines = ["| configuration | trainable params | s / step | vs full | vs top-2 | peak memory (MiB) "
             "| added by training (MiB) | vs full | vs top-2 | TPME |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in results.items():
        lines.append(f"| {CONFIGS[name][0]} | {row['trainable']:,} | {row['seconds_per_step']:.4f} | "
                     f"{ratio(row, full, 'seconds_per_step')} | {ratio(row, top2, 'seconds_per_step')} | "
                     f"{row['peak_mib']:.0f} | {row['added_mib']:.0f} | {ratio(row, full, 'added_mib')} | "
                     f"{ratio(row, top2, 'added_mib')} | {f'{tpme(row, full):.3f}' if full else 'n/a'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_options(parser)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--only", default="", help="comma-separated, from " + ",".join(CONFIGS))
    add_worker_options(parser)
    args = parser.parse_args()
    from morec.errors import InputError
    try:
        if answer_as_worker(args, prepare, worker):
            return
        names = chosen_configs(args.only, CONFIGS, DEFAULT)
        results = run_configurations(args, names, run_worker,
                                     prepare_first=any(CONFIGS[n][1].get("two_stage") for n in names))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    first = next(iter(results.values()))
    print(f"encoder {args.encoder}, batch {tuple(first['batch_shape'])} (B, L+1), device {first['device']}, "
          f"{first['threads']} thread(s), median of {args.steps} steps after 1 warm-up; one fresh process per "
          "configuration\n")
    print(table(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
