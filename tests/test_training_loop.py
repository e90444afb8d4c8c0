"""The training loop's arithmetic and randomness (SPEC "Training"): gradient accumulation is a
bigger batch, each random stream has its own seed, and a run preempted mid-epoch (SIGTERM)
resumes to the same metrics and weights as an uninterrupted run, for ID, text and vision towers."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

import morec.run_state
import morec.train
from morec.config import Config
from morec.distributed import World
from morec.parts import build_optimizer, build_run_model, make_batches
from morec.runs import RunFiles
from morec.train import Run, train_step
from text_helpers import ml100k

CPU = torch.device("cpu")


def one_process_run(cfg: Config, tmp_path) -> Run:
    data = ml100k()
    model = build_run_model(cfg, data, CPU)                 # seeded: equal configs give equal weights
    return Run(cfg, data, RunFiles(tmp_path), CPU, World(), model, model, build_optimizer(model, cfg),
               torch.amp.GradScaler("cpu", enabled=False), make_batches(cfg, data), {"signal": None})


def merged(micro_batches: list[dict]) -> dict:
    """The micro-batches' rows (and their negatives) as one batch."""
    return {key: torch.cat([batch[key] for batch in micro_batches]) for key in micro_batches[0]}


@pytest.mark.parametrize("model", ["sasrec", "dssm"])
def test_accumulated_bce_gradient_equals_one_big_batch(model, tmp_path):
    """accumulation_steps=3 x batch 32 gives the gradient of one batch of the same 96 rows (fp32,
    dropout 0). SASRec micro-batches differ in their non-padded positions; for DSSM the steps are
    the epoch's last three batches, the last of them short."""
    cfg = Config(model=model, loss="bce", batch_size=32, drop_rate=0.0, accumulation_steps=3)
    batches = list(make_batches(cfg, ml100k()).epoch(seed=7))
    micro = batches[:3] if model == "sasrec" else batches[-3:]
    assert len({len(b["negatives"]) for b in micro}) == (1 if model == "sasrec" else 2)
    accumulated, big = one_process_run(cfg, tmp_path), one_process_run(cfg, tmp_path)
    loss_acc, _, _ = train_step(accumulated, micro)
    loss_big, _, _ = train_step(big, [merged(micro)])
    torch.testing.assert_close(loss_acc, loss_big, rtol=1e-6, atol=1e-6)
    grads_acc = dict(accumulated.model.named_parameters())
    for name, param in big.model.named_parameters():
        assert param.grad is not None, name
        scale = param.grad.abs().max().item()
        difference = (grads_acc[name].grad - param.grad).abs().max().item()
        assert difference <= 1e-5 * max(scale, 1e-3), (name, difference, scale)


def test_random_streams_differ_by_purpose_epoch_and_rank():
    """Each (seed, epoch, rank, purpose) has its own seed; the old scheme reused one integer
    (dropout of epoch e = batch order of epoch e, negatives of epoch e = order of epoch e + 1)."""
    from morec.streams import DROPOUT, NEGATIVES, ORDER, WORKERS, stream_seed
    seeds = [stream_seed(12345, epoch, rank, purpose) for epoch in range(1, 6) for rank in range(4)
             for purpose in (ORDER, NEGATIVES, DROPOUT, WORKERS)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2 ** 63 for s in seeds)
    assert stream_seed(12345, 1, 0, ORDER) == stream_seed(12345, 1, 0, ORDER)        # a function of its inputs


def test_dropout_does_not_replay_the_batch_order(tmp_path):
    """After an epoch starts, the global RNG (dropout) does not draw the permutation that ordered
    the epoch's batches (the old seeds made them one stream)."""
    cfg = Config(loss="bce", batch_size=32)
    run = one_process_run(cfg, tmp_path)
    state = {"epoch": 0, "best": None, "bad_evals": 0, "history": [], "partial": None}
    for epoch in (1, 2):
        first = next(iter(morec.train.optimizer_steps(run, epoch, morec.train.EpochProgress())))[0]
        morec.train.epoch_start(run, state, epoch)
        dropout_order = torch.randperm(len(run.data.train))[:32]            # what dropout would draw
        assert not torch.equal(torch.from_numpy(run.data.train)[dropout_order], first["seqs"])


# ----------------------------------------------------------------------------- SIGTERM mid-epoch

def train_script(folder: str, name: str, args: list[str]) -> int:
    """`python FOLDER/train_NAME.py ARGS` in this process; returns the exit code."""
    import runpy
    from conftest import REPO
    from morec.launch import main
    script = REPO / folder / f"train_{name}.py"
    params = runpy.run_path(str(script), run_name="params_only")["params"]
    try:
        main(params, "train", str(script), args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def run_outcome(run) -> tuple:
    """Per-epoch losses and valid metrics, the best epoch, and the final weights."""
    from morec.checkpoint import load_checkpoint
    history = [(r["epoch"], r["train_loss"], r["valid"])
               for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    weights = load_checkpoint(run / "checkpoint_last.pt")["model"]
    return history, load_checkpoint(run / "checkpoint_best.pt")["epoch"], weights


def sigterm_at_step(monkeypatch, step: int) -> None:
    """Send this process a real SIGTERM during optimizer step `step` (counted over the run)."""
    real, calls = morec.train.train_step, {"n": 0}

    def step_then_signal(run, micro_batches):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, micro_batches)
    monkeypatch.setattr(morec.train, "train_step", step_then_signal)


def extra_args(tower: str) -> list[str]:
    if tower == "text":
        from text_helpers import TINY, tiny_encoders
        return ["--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY["bert"],
                "--num_words_title", "12", "--embedding_dim", "32", "--batch_size", "128"]
    if tower == "vision":
        from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root, tiny_vision_encoders
        return ["--root_data_dir", str(poster_root()), "--pretrained_dir", str(tiny_vision_encoders()),
                "--cv_model_load", TINY_VISION["mae"], "--image_size", str(IMAGE_SIZE),
                "--embedding_dim", "32", "--batch_size", "256", "--num_workers", "1"]
    return ["--batch_size", "64"]


SCRIPTS = {"id": ("bce_text/main-end2end", "id"), "text": ("bce_text/main-end2end", "bert_tiny"),
           "vision": ("bce_vision/main-end2end", "mae_base")}


@pytest.mark.parametrize("tower", ["id", "text", "vision"])
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(tower, tmp_path, monkeypatch):
    """Preempted in epoch 2 (dropout on, BCE negatives, a vision run's DataLoader worker), then
    --resume: the same losses, valid metrics, best epoch and bit-identical final weights."""
    folder, name = SCRIPTS[tower]
    args = ["--epoch", "2", "--device", "cpu", "--runs_dir", str(tmp_path / "runs"),
            "--cache_dir", str(tmp_path / "cache"), *extra_args(tower)]
    assert train_script(folder, name, [*args, "--label", "full"]) == 0
    steps = json.loads((tmp_path / "runs" / "full" / "metrics.jsonl").read_text().splitlines()[0])["steps"]
    sigterm_at_step(monkeypatch, steps + 2)                                   # epoch 2, step 2
    assert train_script(folder, name, [*args, "--label", "cut"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert train_script(folder, name, [*args, "--label", "cut", "--resume"]) == 0
    (history_full, best_full, weights_full) = run_outcome(tmp_path / "runs" / "full")
    (history_cut, best_cut, weights_cut) = run_outcome(tmp_path / "runs" / "cut")
    assert history_cut == history_full and best_cut == best_full
    for name_, tensor in weights_full.items():
        assert torch.equal(weights_cut[name_], tensor), name_


def test_a_mid_epoch_checkpoint_of_the_old_streams_restarts_its_epoch(tmp_path):
    """A checkpoint taken mid-epoch under the old seeds would replay other batches than it
    trained on: its epoch restarts; one of this scheme continues from its step."""
    from morec.streams import STREAMS
    run = one_process_run(Config(loss="bce", batch_size=32), tmp_path)
    partial = {"progress": {"step": 3}, "rng": [morec.run_state.rng_state(CPU)], "world_size": 1}
    state = {"epoch": 1, "best": None, "bad_evals": 0, "history": [], "partial": partial}
    assert morec.train.epoch_start(run, state, 2).step == 0
    state["partial"] = {**partial, "streams": STREAMS}
    assert morec.train.epoch_start(run, state, 2).step == 3
