"""GPU check and benchmark: training steps per second and peak GPU memory of text MoRec (tiny
BERT), vision MoRec (ResNet18) and LLM item towers (`--towers llm_tiny,llm_0.5b`: a tiny random
Llama, and a random decoder of Qwen2-0.5B's size, both with LoRA and gradient checkpointing), in
fp32, bf16 and fp16 autocast, and with torch.compile, through the real training loop
(morec.train.train) on ml-100k, in-batch SASRec. For the 0.5B decoder use `--variants bf16`.

    python scripts/bench_gpu.py [--device cuda] [--towers text,vision] [--image_size 224]
                                [--batch_size 64] [--out DIR (default: a folder in the temp dir)]

Encoders: random_tiny_bert and random_tiny_resnet18 from pretrained_models/make_tiny.py (built
under --out if absent; the cost of a step does not depend on the weights). Each variant trains 2
epochs; steps/s is the second epoch's (after cuDNN autotuning and compilation), peak memory is
the most either epoch held (metrics.jsonl "peak_gpu_mib"). On a CPU (--device cpu) AMP is off and
this is only a smoke test of the script. DDP over NCCL needs 2 GPUs: run a train script with
--nproc_per_node 2 (README "Running on a cluster").

Checks of the CUDA-only training paths, for a lent GPU (each prints a table row; exit 1 if any fails):

    python scripts/bench_gpu.py --checks all [--device cuda]

    fp16_scaler   --amp_dtype fp16: the GradScaler is on, its state is in checkpoint_last.pt, and a
                  run stopped after epoch 1 and resumed ends with the scaler state of the
                  uninterrupted run (weights: the largest difference is printed; GPU atomics may
                  make it non-zero)
    deterministic --deterministic: two runs of a vision tower (tiny ResNet-18, cuDNN convolutions and
                  BatchNorm) end with bit-identical weights (the difference without it is printed)
    sync_bn       --sync_bn under DDP (2 GPUs, NCCL; skipped on fewer): a ResNet-18 run trains an
                  epoch with its BatchNorm layers synchronised
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import torch

from morec.config import make_config
from morec.tools.posters import ml100k_posters
from morec.train import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("fp32", dict(amp=False), False), ("bf16", dict(amp=True, amp_dtype="bf16"), False),
            ("fp16", dict(amp=True, amp_dtype="fp16"), False), ("bf16+compile", dict(amp=True, amp_dtype="bf16"), True)]
TOWERS = {
    "text": dict(item_tower="text", bert_model_load="random_tiny_bert", max_seq_len=20),
    # LLM item towers: decoders with LoRA and gradient checkpointing, last-token pooling
    "llm_tiny": dict(item_tower="text", bert_model_load="random_tiny_llama", max_seq_len=20, peft="lora",
                     gradient_checkpointing=True),
    "llm_0.5b": dict(item_tower="text", bert_model_load="random_qwen2_0.5b", max_seq_len=20, peft="lora",
                     gradient_checkpointing=True),
    "vision": dict(item_tower="vision", cv_model_load="random_tiny_resnet18", max_seq_len=10,
                   image_lmdb="posters.lmdb", fine_tune_lr=1e-3),
}


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(out: Path, image_size: int, towers: list[str]) -> Path:
    """Tiny encoders under out/encoders (the decoders and the 0.5B one only when asked for) and the
    ml-100k posters (rendered if absent)."""
    encoders = out / "encoders"
    make_tiny = load_module("make_tiny", ROOT / "pretrained_models" / "make_tiny.py")
    if not (encoders / "random_tiny_resnet18").exists():
        make_tiny.make_all(encoders, image_size=image_size)
    if "llm_tiny" in towers and not (encoders / "random_tiny_llama").exists():
        make_tiny.make_decoders(encoders)
    if "llm_0.5b" in towers and not (encoders / "random_qwen2_0.5b").exists():
        make_tiny.make_qwen2_half_billion(encoders / "random_qwen2_0.5b")
    ml100k_posters()
    return encoders


# ----------------------------------------------------------------------------- checks of the CUDA-only paths

def train_check_run(out: Path, label: str, **values) -> Path:
    """Train one small ID run (ml-100k, in-batch SASRec) under out/checks/LABEL; its folder."""
    cfg = make_config(dict(dict(item_tower="id", loss="inbatch", batch_size=64, patience=5, progress=False,
                                runs_dir=str(out / "checks"), label=label), **values))
    train(cfg, out / "checks" / label)
    return out / "checks" / label


def largest_weight_difference(first: dict, second: dict) -> float:
    return max((first[name].float() - second[name].float()).abs().max().item() for name in first)


def check_fp16_scaler(out: Path, device: str) -> tuple[bool, str]:
    """--amp_dtype fp16: the scaler runs, is checkpointed, and a resumed run continues it."""
    from morec.checkpoint import load_checkpoint
    values = dict(device=device, amp=True, amp_dtype="fp16", overwrite=True)
    full = load_checkpoint(train_check_run(out, "fp16-full", epoch=2, **values) / "checkpoint_last.pt")
    train_check_run(out, "fp16-cut", epoch=1, **values)
    values.update(overwrite=False, resume=True)
    cut = load_checkpoint(train_check_run(out, "fp16-cut", epoch=2, **values) / "checkpoint_last.pt")
    scaler = full.get("scaler") or {}
    passed = bool(scaler) and scaler == cut.get("scaler")
    return passed, (f"scaler {scaler or 'off'}; resumed {cut.get('scaler') or 'off'}; largest weight difference "
                    f"{largest_weight_difference(full['model'], cut['model']):.3g}")


def check_deterministic(out: Path, device: str) -> tuple[bool, str]:
    """--deterministic: two vision runs end with equal weights (and without it: how far apart)."""
    from morec.checkpoint import load_checkpoint
    values = dict(TOWERS["vision"], pretrained_dir=str(prepare(out, 64, ["vision"])), image_size=64, epoch=1,
                  device=device, overwrite=True, num_workers=2)
    weights = {label: load_checkpoint(train_check_run(out, label, deterministic=label.startswith("det"), **values)
                                      / "checkpoint_last.pt")["model"]
               for label in ("det-1", "det-2", "plain-1", "plain-2")}
    difference = largest_weight_difference(weights["det-1"], weights["det-2"])
    return difference == 0.0, (f"largest weight difference with --deterministic {difference:.3g}, without "
                               f"{largest_weight_difference(weights['plain-1'], weights['plain-2']):.3g}")


def check_sync_bn(out: Path, device: str) -> tuple[bool | None, str]:
    """--sync_bn: a 2-GPU DDP ResNet-18 run trains an epoch with synchronised BatchNorm."""
    import subprocess
    if not device.startswith("cuda") or torch.cuda.device_count() < 2:
        return None, f"skipped: needs 2 GPUs ({torch.cuda.device_count()} here)"
    encoders = prepare(out, 64, ["vision"])
    command = [sys.executable, str(ROOT / "bce_vision" / "main-end2end" / "train_resnet18.py"), "--nproc_per_node", "2",
               "--sync_bn", "--epoch", "1", "--device", "cuda", "--pretrained_dir", str(encoders),
               "--cv_model_load", "random_tiny_resnet18", "--image_lmdb", "posters.lmdb", "--image_size", "64",
               "--runs_dir", str(out / "checks"), "--label", "sync-bn", "--overwrite", "--progress", "false"]
    done = subprocess.run(command, capture_output=True, text=True)
    log_file = out / "checks" / "sync-bn" / "train.log"
    synced = "synchronised across 2 ranks" in (log_file.read_text() if log_file.exists() else done.stderr)
    return done.returncode == 0 and synced, f"exit {done.returncode}; {'synchronised' if synced else done.stderr[-300:]}"


CHECKS = {"fp16_scaler": check_fp16_scaler, "deterministic": check_deterministic, "sync_bn": check_sync_bn}


def run_checks(names: str, out: Path, device: str) -> bool:
    """Run the named checks (`all`: every one); print one row each; True if all passed."""
    chosen = list(CHECKS) if names == "all" else names.split(",")
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        raise SystemExit(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    if not device.startswith("cuda"):
        print(f"note: --device {device}: the CUDA-only paths are off, so the checks only exercise the script")
    print("| check | passed | observed |\n|---|---|---|")
    results = []
    for name in chosen:
        passed, observed = CHECKS[name](out, device)             # passed None: skipped
        results.append(passed is not False)
        print(f"| {name} | {'skipped' if passed is None else 'yes' if passed else 'NO'} | {observed} |", flush=True)
    return all(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--towers", default="text,vision", help=f"any of {','.join(TOWERS)}")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_workers", type=int, default=4)
    parser.add_argument("--variants", default=",".join(name for name, _, _ in VARIANTS))
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "morec-bench-gpu")
    parser.add_argument("--checks", default="", help=f"all or any of {','.join(CHECKS)}: check, do not benchmark")
    args = parser.parse_args()
    if args.checks:
        sys.exit(0 if run_checks(args.checks, args.out, args.device) else 1)
    encoders = prepare(args.out, args.image_size, args.towers.split(","))
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; ml-100k, in-batch SASRec, batch_size {args.batch_size}")
    print("| tower | precision | steps/s | peak GPU MiB | train loss (epoch 2) | valid HR@10 |")
    print("|---|---|---|---|---|---|")
    chosen = args.variants.split(",")
    for tower in args.towers.split(","):
        for variant, precision, compiled in VARIANTS:
            if variant not in chosen:
                continue
            cfg = make_config(dict(TOWERS[tower], loss="inbatch", batch_size=args.batch_size, epoch=2, patience=5,
                                   image_size=args.image_size, pretrained_dir=str(encoders), device=args.device,
                                   compile_model=compiled, num_workers=args.num_workers, progress=False,
                                   cache_dir=str(args.out / "cache"), label=f"{tower}-{variant}", overwrite=True,
                                   runs_dir=str(args.out / "runs"), **precision))
            run_dir = args.out / "runs" / cfg.label
            train(cfg, run_dir)
            epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            last = epochs[-1]
            peak = max(e.get("peak_gpu_mib", 0.0) for e in epochs)
            print(f"| {tower} | {variant} | {last['steps'] / last['train_seconds']:.2f} | {peak:.0f} | "
                  f"{last['train_loss']:.4f} | {100 * last['valid']['HR@10']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
