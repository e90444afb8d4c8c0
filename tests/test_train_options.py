"""The training options of SPEC "Training" beyond the paper's defaults: the lr schedule (warm-up,
cosine) with clipping and the fp16 loss scaler, each checkpointed so that a resumed run continues
exactly; --deterministic and --sync_bn (their GPU parts: scripts/bench_gpu.py --checks). The
defaults change neither a label nor a number."""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from morec.checkpoint import load_checkpoint
from morec.config import Config, make_config, run_label
from morec.errors import InputError
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
    from morec.run_state import fresh_state, resumed_state, save_last
    from morec.runs import config_record
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


# ----------------------------------------------------------------------------- --deterministic, --sync_bn

@pytest.fixture
def restore_determinism(monkeypatch):
    """--deterministic sets process-wide flags: put them back after the test."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled())
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2])


def test_deterministic_sets_the_flags_and_a_cpu_run_is_bit_identical_with_it(tmp_path, restore_determinism):
    """--deterministic turns on deterministic algorithms, cuDNN deterministic and cuDNN benchmark
    off; it is run control (no label change). On the CPU the run is bit-identical with and
    without it (its kernels are deterministic already)."""
    from morec.parts import set_determinism
    assert run_label(Config(deterministic=True)) == run_label(Config())
    set_determinism(False)
    assert not torch.are_deterministic_algorithms_enabled()
    args = ["--epoch", "1", "--device", "cpu", "--runs_dir", str(tmp_path / "runs"), "--batch_size", "128"]
    assert train_script(*SCRIPT, [*args, "--label", "plain"]) == 0
    assert train_script(*SCRIPT, [*args, "--label", "deterministic", "--deterministic"]) == 0
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    plain, deterministic = (run_outcome(tmp_path / "runs" / name) for name in ("plain", "deterministic"))
    assert plain[:2] == deterministic[:2]
    for name, tensor in plain[2].items():
        assert torch.equal(deterministic[2][name], tensor), name


def test_sync_bn_converts_the_batchnorm_layers_under_ddp_only():
    """--sync_bn: under DDP on CUDA each BatchNorm becomes a SyncBatchNorm holding the same
    parameters and running statistics (the optimizer's tensors stay the model's); one process is
    left as it is; DDP on the CPU is refused (SyncBatchNorm needs GPUs)."""
    from morec.distributed import World
    from morec.parts import sync_batch_norm

    def model():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                  torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
        net[1].running_mean.fill_(0.5)
        return net
    single = model()
    assert sync_batch_norm(single, World(), torch.device("cpu")) == 0
    assert isinstance(single[1], torch.nn.BatchNorm2d)
    with pytest.raises(InputError, match="--sync_bn needs CUDA under DDP"):
        sync_batch_norm(model(), World(0, 2), torch.device("cpu"))
    ddp = model()
    weight = ddp[1].weight
    assert sync_batch_norm(ddp, World(0, 2), torch.device("cuda", 0)) == 2
    assert isinstance(ddp[1], torch.nn.SyncBatchNorm) and isinstance(ddp[2][1], torch.nn.SyncBatchNorm)
    assert ddp[1].weight is weight and (ddp[1].running_mean == 0.5).all()


@pytest.mark.parametrize("values", [dict(item_tower="id"), dict(item_tower="text"),
                                    dict(item_tower="vision", two_stage=True)])
def test_sync_bn_needs_a_vision_encoder_trained_end_to_end(values):
    with pytest.raises(InputError, match="--sync_bn synchronises the BatchNorm of a vision encoder"):
        make_config({**values, "sync_bn": True})
    vision = make_config({"item_tower": "vision", "sync_bn": True})
    assert run_label(vision) != run_label(Config(item_tower="vision"))
