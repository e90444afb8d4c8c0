"""Benchmark gradient caching (--inbatch_chunk): peak memory and seconds of one
in-batch SASRec training step with a real pretrained text encoder on an ml-100k batch, the plain
step (every distinct item of the batch encoded at once, activations kept) against the cached one
(chunks of `--chunk` items, activations of one chunk at a time), and the largest difference
between their losses and gradients.

    python scripts/bench_grad_cache.py [--encoder all_minilm_l6_v2] [--batch 256] [--chunk 32]
                                       [--seq_len 20] [--trainable_layers -1] [--threads 1]

Each step runs in a fresh process (peak RSS, `ru_maxrss`, is per process) from the same seed and
weights, dropout off (so both draw nothing random); each writes its gradients, which this process
compares (`torch.load(weights_only=True)`). The simple reference is the plain step in the same run.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import torch


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2 ** 20


def one_step(args, chunk: int, grads_file: Path) -> dict:
    """Build the model, take the first ml-100k batch of `args.batch` users, run forward + backward."""
    from morec.config import make_config
    from morec.parts import build_run_model, load_data, make_batches
    torch.set_num_threads(args.threads)
    cfg = make_config(dict(item_tower="text", loss="inbatch", bert_model_load=args.encoder, device="cpu",
                           batch_size=args.batch, max_seq_len=args.seq_len, drop_rate=0.0,
                           trainable_layers=args.trainable_layers, inbatch_chunk=chunk))
    data = load_data(cfg)
    model = build_run_model(cfg, data, torch.device("cpu")).train()
    for module in model.modules():                        # dropout off: nothing random in the step
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = next(iter(make_batches(cfg, data).epoch(cfg.seed)))
    items = int((torch.unique(batch["seqs"]) != 0).sum())
    before = current_rss_mb()
    start = time.perf_counter()
    loss = model(batch)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save({name: p.grad for name, p in model.named_parameters() if p.grad is not None}, grads_file)
    return dict(chunk=chunk, items=items, loss=loss.item(), seconds=seconds, rss_before_mb=before, peak_mb=peak)


def run_child(args, chunk: int, grads_file: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(chunk), "--grads", str(grads_file),
               "--encoder", args.encoder, "--batch", str(args.batch), "--seq_len", str(args.seq_len),
               "--trainable_layers", str(args.trainable_layers), "--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="all_minilm_l6_v2")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--trainable_layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--grads", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one_step(args, args.child, Path(args.grads))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_child(args, 0, Path(tmp) / "plain.pt")
        cached = run_child(args, args.chunk, Path(tmp) / "cached.pt")
        plain_grads = torch.load(Path(tmp) / "plain.pt", weights_only=True)
        cached_grads = torch.load(Path(tmp) / "cached.pt", weights_only=True)
    assert plain_grads.keys() == cached_grads.keys()
    max_diff = max(float((plain_grads[k] - cached_grads[k]).abs().max()) for k in plain_grads)
    print(f"{args.encoder}, batch {args.batch} users x L {args.seq_len} ({plain['items']} distinct items), "
          f"trainable_layers {args.trainable_layers}, {args.threads} thread(s), CPU, one step (forward + backward)\n")
    print("| step | peak RSS MB | RSS growth in the step MB | seconds | loss |")
    print("|---|---|---|---|---|")
    for name, row in (("plain", plain), (f"gradient caching, chunks of {args.chunk}", cached)):
        print(f"| {name} | {row['peak_mb']:.0f} | {row['peak_mb'] - row['rss_before_mb']:.0f} | "
              f"{row['seconds']:.1f} | {row['loss']:.6f} |")
    growth = (cached["peak_mb"] - cached["rss_before_mb"]) / (plain["peak_mb"] - plain["rss_before_mb"])
    print(f"\npeak RSS ratio cached / plain: {cached['peak_mb'] / plain['peak_mb']:.2f}; "
          f"step growth ratio: {growth:.2f}; time ratio: {cached['seconds'] / plain['seconds']:.2f}")
    print(f"loss difference: {abs(cached['loss'] - plain['loss']):.2e}; "
          f"max abs gradient difference over {len(plain_grads)} tensors: {max_diff:.2e}")


if __name__ == "__main__":
    main()
