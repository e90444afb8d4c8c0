"""The training options of SPEC "Training" beyond the paper's defaults: the lr schedule (warm-up,
cosine) with clipping, and the fp16 loss scaler; each is checkpointed, so a resumed run
continues exactly. The defaults change neither a label nor a number."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch

from morec.checkpoint import load_checkpoint
from morec.config import Config, run_label
from morec.errors import InputError
from morec.config import make_config
from morec.parts import lr_factor
from morec.train import train_step
from test_training_loop import run_outcome, sigterm_at_step, train_script

SCRIPT = ("bce_text/main-end2end", "id")


# ----------------------------------------------------------------------------- lr schedule

def test_lr_factor_warms_up_linearly_then_follows_the_cosine():
    assert [lr_factor(step, "none", 0, 10) for step in (0, 5, 10, 50)] == [1.0] * 4      # the default
    assert [lr_factor(step, "none", 4, 10) for step in (0, 1, 4, 9)] == [0.0, 0.25, 1.0, 1.0]
    cosine = [lr_factor(step, "cosine", 2, 10) for step in (0, 1, 2, 6, 10, 12)]
    assert cosine == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    assert lr_factor(4, "cosine", 2, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_schedule_keys_the_label_by_epoch_and_the_defaults_change_no_label():
    """The cosine horizon is `epoch` epochs, so epoch defines such a run (label, resume check);
    without a schedule epoch stays run control, and labels are what they were."""
    assert run_label(Config(epoch=3)) == run_label(Config(epoch=5)) == run_label(Config())
    assert run_label(Config(warmup_steps=10)) != run_label(Config())
    cosine = [run_label(Config(lr_schedule="cosine", epoch=e)) for e in (3, 5)]
    assert cosine[0] != cosine[1] and run_label(Config()) not in cosine
    with pytest.raises(InputError, match="--lr_schedule 'linear' must be one of none, cosine"):
        make_config({"lr_schedule": "linear"})
    with pytest.raises(InputError, match="--warmup_steps -1 must be at least 0"):
        make_config({"warmup_steps": -1})


def test_cosine_schedule_with_clipping_resumes_mid_epoch_exactly(tmp_path, monkeypatch):
    """Warm-up + cosine + clipping, preempted in epoch 2 and resumed: the same losses, metrics and
    bit-identical weights as the uninterrupted run, whose lr ends at 0 (the schedule ran)."""
    args = ["--epoch", "2", "--device", "cpu", "--runs_dir", str(tmp_path / "runs"), "--batch_size", "128",
            "--lr_schedule", "cosine", "--warmup_steps", "3", "--max_grad_norm", "0.5"]
    assert train_script(*SCRIPT, [*args, "--label", "full"]) == 0
    steps = json.loads((tmp_path / "runs" / "full" / "metrics.jsonl").read_text().splitlines()[0])["steps"]
    sigterm_at_step(monkeypatch, steps + 2)                                   # epoch 2, step 2
    assert train_script(*SCRIPT, [*args, "--label", "cut"]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    assert train_script(*SCRIPT, [*args, "--label", "cut", "--resume"]) == 0
    full, cut = run_outcome(tmp_path / "runs" / "full"), run_outcome(tmp_path / "runs" / "cut")
    assert cut[:2] == full[:2]
    for name, tensor in full[2].items():
        assert torch.equal(cut[2][name], tensor), name
    last = load_checkpoint(tmp_path / "runs" / "full" / "checkpoint_last.pt")
    assert last["scheduler"]["last_epoch"] == 2 * steps
    assert all(group["lr"] == 0.0 for group in last["optimizer"]["param_groups"])


# ----------------------------------------------------------------------------- fp16 loss scaler

def test_fp16_scaler_state_is_checkpointed_and_a_resumed_step_equals_the_uninterrupted_one(tmp_path):
    """--amp_dtype fp16 steps through a GradScaler (on CUDA; enabled here on the CPU, which runs the
    same scaling arithmetic): its scale and growth tracker go into checkpoint_last.pt, come back on
    --resume, and the next step equals that of the run that was never stopped. config.json records
    the precision (fp16 on CUDA)."""
    from morec.runs import config_record, fresh_state, resumed_state, save_last
    from test_training_loop import one_process_run
    cfg = Config(loss="bce", batch_size=64, amp_dtype="fp16", device="cpu", drop_rate=0.0)
    assert config_record(Config(amp_dtype="fp16", device="cuda"))["setting"]["precision"] == "fp16"

    def scaled_run(folder):
        run = one_process_run(cfg, folder)
        run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
        return run
    steps = list(morec_steps(cfg, tmp_path))
    full = scaled_run(tmp_path / "full")
    for micro_batches in steps[:3]:
        train_step(full, micro_batches)
    saved = full.scaler.state_dict()
    assert saved["scale"] == 2.0 ** 11 and saved["_growth_tracker"] == 1       # grew once, one step counted
    (tmp_path / "full").mkdir()
    save_last(full, {**fresh_state(), "epoch": 1})
    resumed = scaled_run(tmp_path / "full")
    resumed_state(resumed, load_checkpoint(tmp_path / "full" / "checkpoint_last.pt"))
    assert resumed.scaler.state_dict() == saved
    for run in (full, resumed):
        train_step(run, steps[3])
    assert full.scaler.get_scale() == resumed.scaler.get_scale() == 2.0 ** 12
    resumed_weights = dict(resumed.model.named_parameters())
    for name, param in full.model.named_parameters():
        assert torch.equal(resumed_weights[name], param), name


def morec_steps(cfg: Config, tmp_path) -> list[list[dict]]:
    """The first four optimizer steps (one micro-batch each) of epoch 1."""
    from morec.parts import make_batches
    from text_helpers import ml100k
    batches = make_batches(cfg, ml100k()).epoch(cfg.seed, epoch=1)
    return [[next(batches)] for _ in range(4)]
