"""Benchmark text MoRec on ml-100k: (1) seconds per training step of in-batch SASRec with a real
pretrained encoder, each distinct item of the batch encoded once (deduplication on) against
every slot encoded (off); (2) the tokenisation cache: first run against the cached run.

    python scripts/bench_text.py [--encoder all_minilm_l6_v2] [--batch 64] [--seq_len 20]
                                 [--steps 3] [--threads 1] [--trainable_layers -1]
                                 [--synthetic_items 80000] [--floor_only]

(1) One model, reset to the same weights for each mode; 1 warm-up step then `--steps` timed
steps (forward, backward, AdamW) on the same batches; the loss of the first batch in eval mode
(no dropout) must be the same either way. The deduplicated step is also set against its FLOP floor
(EncoderFloor: encoder FLOP/s of the step over a bare fp32 matmul's, in the same run, by wall and
by CPU time). (2) item_tokens() into an empty cache, then again;
with --synthetic_items the ml-100k titles are repeated (numbered) to a MIND-sized catalogue.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import copy
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from morec.config import make_config
from morec.data.text import item_tokens
from morec.features import encoder_folder
from morec.flops import encoder_step_flops, matmul_flops
from morec.models.text import load_tokenizer
from morec.resolve import encoder_spec
from morec.parts import build_optimizer, build_run_model, load_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import eval_loss, first_batches, median_after_warmup, timed_steps  # noqa: E402


def step_times(model, batches: list[dict], cfg, steps: int, device: torch.device = torch.device("cpu"),
               amp: bool = False, after_step=None) -> tuple[float, float]:
    """Median seconds per training step (after one warm-up step) and the first batch's eval loss.
    amp: bf16 autocast (CUDA); on CUDA each step is timed to the end of its kernels.
    after_step(seconds): called after each step (warm-up included), outside the timing."""
    first_loss = eval_loss(model, batches[0])
    optimizer = build_optimizer(model, cfg)
    times = timed_steps(model, optimizer, batches[:steps + 1], device, amp, after_step)
    return median_after_warmup(times), first_loss


class EncoderFloor:
    """The text step against its FLOP floor: each step's encoder FLOPs (morec.flops, from the
    (sequences, tokens) shape of every encoder call, padding included, forward + backward) per
    second over a bare square fp32 torch.matmul's FLOPs per second, 3 matmuls timed right after
    each step (interleaved). Seconds are both wall and this process's CPU time (on a loaded
    machine the CPU-time ratio is the steadier one: one thread). Medians over the timed steps."""

    def __init__(self, encoder, trainable_layers: int):
        config = encoder.config
        self.shape = (config.hidden_size, config.intermediate_size, config.num_hidden_layers)
        self.trainable_layers, self.calls, self.steps, self.matmuls = trainable_layers, [], [], []
        size = config.intermediate_size                     # the encoder's largest matmul dimension
        self.a, self.b = torch.randn(size, size), torch.randn(size, size)
        self.cpu_mark = time.process_time()
        encoder.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(tuple(input_ids.shape))

    def after_step(self, seconds: float) -> None:
        cpu_seconds = time.process_time() - self.cpu_mark
        flops = sum(encoder_step_flops(n, t, *self.shape, self.trainable_layers) for n, t in self.calls)
        self.steps.append((flops, seconds, cpu_seconds, sum(n * t for n, t in self.calls)))
        self.calls = []
        torch.matmul(self.a, self.b)                       # warm
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            torch.matmul(self.a, self.b)
            self.matmuls.append((time.perf_counter() - wall, time.process_time() - cpu))
        self.cpu_mark = time.process_time()

    def report(self) -> None:
        flops, _, _, tokens = self.steps[1]
        matmul = matmul_flops(len(self.a), len(self.a), len(self.a))
        print(f"encoder: {tokens} tokens encoded per step (padding included), {flops / 1e9:.1f} GFLOP "
              f"forward + backward")
        for clock, name in ((1, "wall"), (2, "CPU")):
            step_rate = statistics.median(step[0] / step[clock] for step in self.steps[1:])
            matmul_rate = statistics.median(matmul / m[clock - 1] for m in self.matmuls[3:])
            print(f"{name} time: step {step_rate / 1e9:.1f} GFLOP/s, bare fp32 matmul {len(self.a)}^3 "
                  f"{matmul_rate / 1e9:.1f} GFLOP/s; step encoder FLOP/s / matmul floor: {step_rate / matmul_rate:.2f}")


def bench_steps(args) -> None:
    cfg = make_config(dict(item_tower="text", loss="inbatch", bert_model_load=args.encoder,
                           batch_size=args.batch, max_seq_len=args.seq_len, embedding_dim=64,
                           trainable_layers=args.trainable_layers, device="cpu",
                           cache_dir=args.cache_dir or str(Path(tempfile.mkdtemp()))))
    data = load_data(cfg)
    model = build_run_model(cfg, data, torch.device("cpu"))
    initial = copy.deepcopy(model.state_dict())
    batches = first_batches(cfg, data, args.steps + 1)
    seqs = batches[0]["seqs"]
    print(f"encoder {args.encoder}, batch {tuple(seqs.shape)} (B, L+1), {data.num_items} items, "
          f"{torch.get_num_threads()} threads, trainable_layers {args.trainable_layers}")
    print(f"first batch: {seqs.numel()} slots, {int((seqs == 0).sum())} padding, "
          f"{len(torch.unique(seqs[seqs != 0]))} distinct items")
    results = {}
    floor = EncoderFloor(model.item_tower.encoder, args.trainable_layers)
    for dedup in (True, False) if not args.floor_only else (True,):
        model.load_state_dict(initial)
        model.item_tower.deduplicate = dedup
        torch.manual_seed(0)
        results[dedup] = step_times(model, batches, cfg, args.steps, after_step=floor.after_step if dedup else None)
        print(f"dedup {'on ' if dedup else 'off'}: {results[dedup][0]:.2f} s/step, "
              f"eval loss of batch 1 = {results[dedup][1]:.6f}")
        if dedup:
            floor.report()
    if args.floor_only:
        return
    (on, loss_on), (off, loss_off) = results[True], results[False]
    print(f"speedup {off / on:.2f}x, |loss difference| {abs(loss_on - loss_off):.2e}")


def bench_cache(args) -> None:
    cfg = make_config(dict(item_tower="text", bert_model_load=args.encoder))
    items = load_data(cfg).items
    if args.synthetic_items:
        base = items[1:]
        items = [None] + [replace(base[i % len(base)], name=f"s{i}", title=f"{base[i % len(base)].title} {i}")
                          for i in range(args.synthetic_items)]
    tokenizer = load_tokenizer(encoder_folder(encoder_spec(cfg, "text")))
    with tempfile.TemporaryDirectory() as cache:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            item_tokens(items, tokenizer, [("title", cfg.num_words_title)], Path(cache), "bench")
            times.append(time.perf_counter() - start)
    print(f"token cache, {len(items) - 1} items x {cfg.num_words_title} tokens: first run "
          f"{times[0]:.3f}s (tokenise + write), cached run {times[1]:.3f}s (read), "
          f"{times[0] / times[1]:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="all_minilm_l6_v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1 is steadier on a shared machine")
    parser.add_argument("--trainable_layers", type=int, default=-1, help="-1: fine-tune every block")
    parser.add_argument("--synthetic_items", type=int, default=0, help="also time the cache at this size")
    parser.add_argument("--cache_dir", default="", help="token cache of the step benchmark (default: temporary)")
    parser.add_argument("--skip_steps", action="store_true")
    parser.add_argument("--floor_only", action="store_true", help="the deduplicated step and its FLOP floor only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from morec.errors import InputError
    try:
        if not args.skip_steps:
            bench_steps(args)
        if args.floor_only:
            return
        bench_cache(args)
        if args.synthetic_items:
            bench_cache(argparse.Namespace(**{**vars(args), "synthetic_items": 0}))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
