"""Benchmark parameter-efficient fine-tuning of the text item tower: seconds per
training step and peak memory (RSS) of in-batch SASRec on ml-100k with the real all-MiniLM-L6-v2,
on CPU, for full fine-tuning, the top 2 blocks, LoRA r=8, BitFit and the layer-cached two-stage
head (`--ts_layers all`, when this tree has it; "n/a" otherwise), as a markdown table with ratios
to full fine-tuning and to LoRA r=8 (when run); `--only iisan` adds the cached IISAN side network
(`--side_network iisan`, the configuration of scripts/bench_iisan.py); `--only full,lora,lora_ckpt,lora_chunk,full_chunk` adds LoRA with gradient
checkpointing, and LoRA and full fine-tuning with gradient caching (`--inbatch_chunk 64`: the
same loss and gradients, activations of one chunk of 64 titles at a time).

    python scripts/bench_peft.py [--encoder all_minilm_l6_v2] [--batch 64] [--seq_len 20]
                                 [--steps 3] [--threads 1] [--only lora,full]
    python scripts/bench_peft.py --only full,lora,iisan       # IISAN against full fine-tuning and LoRA

Each configuration runs in a fresh subprocess (peak RSS is per process): build the model, then
1 warm-up step and `--steps` timed steps (forward, backward, AdamW) on the same first batches of
the epoch. Two-stage configurations read feature caches extracted beforehand, once, in their own
process (bench_iisan.prepare), so no configuration's time or peak includes the extraction. Two peaks are reported: the process's (ru_maxrss: imports, loading, training) and the
training's alone (VmHWM, reset through /proc/self/clear_refs once the model is built, Linux only).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (add_step_options, add_worker_options, answer_as_worker, chosen_configs,  # noqa: E402
                          first_batches, median_after_warmup, process_peak_rss_mib, reset_peak_rss, rss_mib,
                          run_configurations, run_worker_process, timed_steps, worker_command)

CONFIGS = {                                # name -> (label, Config values)
    "full": ("full fine-tuning", {}),
    "top2": ("top-2 blocks", {"trainable_layers": 2}),
    "lora": ("LoRA r=8", {"peft": "lora", "lora_r": 8}),
    "bitfit": ("BitFit", {"peft": "bitfit"}),
    "ts_all": ("two-stage, --ts_layers all", {"two_stage": True, "ts_layers": "all"}),
    "lora_ckpt": ("LoRA r=8 + gradient checkpointing", {"peft": "lora", "lora_r": 8, "gradient_checkpointing": True}),
    "lora_chunk": ("LoRA r=8 + gradient caching, chunks of 64", {"peft": "lora", "lora_r": 8, "inbatch_chunk": 64}),
    "full_chunk": ("full fine-tuning + gradient caching, chunks of 64", {"inbatch_chunk": 64}),
    "iisan": ("IISAN, --side_network iisan (cached)", {}),            # bench_iisan.CONFIGS' values (iisan_values)
}
DEFAULT = ("full", "top2", "lora", "bitfit", "ts_all")      # --only lora_ckpt,... for the others


def iisan_values() -> dict:
    """The IISAN configuration of scripts/bench_iisan.py (imported here: bench_iisan imports this module)."""
    from bench_iisan import CONFIGS as IISAN_CONFIGS
    return IISAN_CONFIGS["iisan"][1]


def config_values(name: str) -> dict:
    return iisan_values() if name == "iisan" else CONFIGS[name][1]


def has_fields(values: dict) -> bool:
    """Whether this tree's Config has every field of `values` (older trees lack ts_layers)."""
    from morec.config import Config
    return set(values) <= {f.name for f in fields(Config)}


def worker(args) -> dict:
    """One configuration in this (fresh) process: seconds per step and the memory peaks."""
    import torch
    torch.set_num_threads(args.threads)
    from morec.config import make_config
    from morec.parts import build_optimizer, build_run_model, load_data
    values = dict(item_tower="text", loss="inbatch", bert_model_load=args.encoder, batch_size=args.batch,
                  max_seq_len=args.seq_len, embedding_dim=64, device="cpu", cache_dir=args.cache_dir,
                  **config_values(args.worker))
    cfg = make_config(values)
    data = load_data(cfg)
    model = build_run_model(cfg, data, torch.device("cpu"))
    optimizer = build_optimizer(model, cfg)
    batches = first_batches(cfg, data, args.steps + 1)
    encoder = model.item_tower.encoder_parameters()
    ready = rss_mib("VmRSS")
    reset = reset_peak_rss()
    model.train()
    times = timed_steps(model, optimizer, batches)
    seqs = batches[0]["seqs"]
    return {"name": args.worker, "seconds_per_step": median_after_warmup(times),
            "peak_rss_mib": process_peak_rss_mib(),
            "ready_rss_mib": ready, "train_peak_rss_mib": rss_mib("VmHWM") if reset else float("nan"),
            "trainable_encoder": sum(p.numel() for p in encoder if p.requires_grad),
            "encoder": sum(p.numel() for p in encoder),
            "trainable_all": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "distinct_items": len(torch.unique(seqs[seqs != 0])), "batch_shape": list(seqs.shape),
            "threads": torch.get_num_threads()}


def prepare_on_cpu(args) -> None:
    """bench_iisan.prepare (the feature caches of the two-stage configurations) on the CPU."""
    from bench_iisan import prepare
    args.device = "cpu"
    prepare(args)


def run_worker(name: str, args) -> dict | None:
    """`name` (or "prepare") in a fresh interpreter; None when this tree lacks its fields."""
    if name != "prepare" and not has_fields(config_values(name)):
        return None
    return run_worker_process(worker_command(__file__, name, args, "--cache_dir", args.cache_dir), name, args.threads)


def ratio(value: float, base: float) -> str:
    """'0.90x'; a third decimal below 0.1x (a cached head's step is a hundredth of full fine-tuning's)."""
    if not base:
        return "n/a"
    return f"{value / base:.2f}x" if value / base >= 0.1 else f"{value / base:.3f}x"


def speedup_line(results: dict[str, dict | None]) -> str:
    """IISAN's step speed-up and training-peak ratio against full fine-tuning and LoRA (those run)."""
    iisan = results.get("iisan")
    bases = [(CONFIGS[n][0], results[n]) for n in ("full", "lora") if results.get(n)]
    if not iisan or not bases:
        return ""
    return "IISAN (cached): " + "; ".join(
        f"{base['seconds_per_step'] / iisan['seconds_per_step']:.0f}x faster per step than {label}, "
        f"{iisan['train_peak_rss_mib'] / base['train_peak_rss_mib']:.2f}x its training peak RSS" for label, base in bases)


def table(results: dict[str, dict | None]) -> str:
    """Markdown table; ratios to full fine-tuning and to LoRA r=8 (each when it was run)."""
    base, lora = results.get("full") or {}, results.get("lora") or {}
    vs_lora = bool(lora) and len(results) > 1
    lora_head, lora_cell = (" vs LoRA |", "---:|") if vs_lora else ("", "")
    lines = [f"| configuration | trainable encoder params | trainable params (all) | s / step | vs full |{lora_head} "
             f"peak RSS (MiB) | vs full | RSS, model built (MiB) | training peak RSS (MiB) | vs full |{lora_head}",
             f"|---|---:|---:|---:|---:|{lora_cell}---:|---:|---:|---:|---:|{lora_cell}"]
    for name, row in results.items():
        label = CONFIGS[name][0]
        if row is None:
            lines.append(f"| {label} |" + " n/a |" * (11 if vs_lora else 9))
            continue
        seconds, train_peak = row["seconds_per_step"], row["train_peak_rss_mib"]
        lines.append(
            f"| {label} | {row['trainable_encoder']:,} of {row['encoder']:,} | {row['trainable_all']:,} | "
            f"{seconds:.3g} | {ratio(seconds, base.get('seconds_per_step', 0))} |"
            + (f" {ratio(seconds, lora['seconds_per_step'])} |" if vs_lora else "")
            + f" {row['peak_rss_mib']:.0f} | {ratio(row['peak_rss_mib'], base.get('peak_rss_mib', 0))} | "
            f"{row['ready_rss_mib']:.0f} | {train_peak:.0f} | {ratio(train_peak, base.get('train_peak_rss_mib', 0))} |"
            + (f" {ratio(train_peak, lora['train_peak_rss_mib'])} |" if vs_lora else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_options(parser)
    parser.add_argument("--only", default="", help="comma-separated, from " + ",".join(CONFIGS) +
                        " (default: " + ",".join(DEFAULT) + ")")
    add_worker_options(parser)
    args = parser.parse_args()
    from morec.errors import InputError
    try:
        if answer_as_worker(args, prepare_on_cpu, worker):
            return
        names = chosen_configs(args.only, CONFIGS, DEFAULT)
        results = run_configurations(args, names, run_worker, prepare_first=any(
            config_values(n).get("two_stage") and has_fields(config_values(n)) for n in names))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    first = next((r for r in results.values() if r), None)
    if first:
        print(f"encoder {args.encoder}, batch {tuple(first['batch_shape'])} (B, L+1), "
              f"{first['distinct_items']} distinct items in the first batch, {first['threads']} thread(s), "
              f"median of {args.steps} steps after 1 warm-up; one fresh process per configuration\n")
    print(table(results))
    if speedup_line(results):
        print("\n" + speedup_line(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    missing = [CONFIGS[n][0] for n, r in results.items() if r is None]
    if missing:
        print(f"\nn/a: {', '.join(missing)} (this tree's Config lacks the fields)")


if __name__ == "__main__":
    main()
