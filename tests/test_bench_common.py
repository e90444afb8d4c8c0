"""scripts/bench_common.py, the pieces the training-step benchmarks share, on a real ml-100k ID
SASRec: the first batches are the epoch's first batches, a timed step is a real training step
(the same weights as an untimed one), the eval loss leaves the model training, and --only names
that no configuration has are one InputError."""
from __future__ import annotations

import copy

import pytest
import torch

from morec.config import make_config
from morec.errors import InputError
from morec.parts import build_optimizer, build_run_model, load_data, make_batches
from script_modules import import_script

bench_common = import_script("bench_common")
CPU = torch.device("cpu")


def id_run(batch_size: int = 32):
    """(cfg, data, model) of an in-batch ID SASRec on ml-100k, built from seed 0."""
    cfg = make_config(dict(item_tower="id", loss="inbatch", batch_size=batch_size, max_seq_len=10,
                           embedding_dim=16, device="cpu"))
    data = load_data(cfg)
    torch.manual_seed(0)
    return cfg, data, build_run_model(cfg, data, CPU)


def test_first_batches_are_the_epochs_first_batches():
    cfg, data, _ = id_run()
    whole_epoch = list(make_batches(cfg, data).epoch(seed=cfg.seed))
    first = bench_common.first_batches(cfg, data, 3)
    assert len(first) == 3 < len(whole_epoch)
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(first, whole_epoch))


def test_timed_steps_train_as_the_plain_step_does():
    """timed_steps gives one positive time per batch and leaves the same weights as a plain
    step written out here (loss, zero_grad, backward, AdamW step), batch by batch, on a copy (the
    same dropout stream: seed 1 before each)."""
    cfg, data, model = id_run()
    reference = copy.deepcopy(model)
    batches = bench_common.first_batches(cfg, data, 3)
    before = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, cfg)
    torch.manual_seed(1)
    times = bench_common.timed_steps(model.train(), optimizer, batches)
    assert len(times) == 3 and all(t > 0 for t in times)
    optimizer = build_optimizer(reference, cfg)
    reference.train()
    torch.manual_seed(1)
    for batch in batches:
        loss = reference.calculate_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after, expected = model.state_dict(), reference.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after)               # it trained
    assert all(torch.equal(after[k], expected[k]) for k in after)


def test_eval_loss_is_the_eval_mode_loss_and_leaves_the_model_training():
    cfg, data, model = id_run()
    batch = bench_common.first_batches(cfg, data, 1)[0]
    model.train()
    loss = bench_common.eval_loss(model, batch)
    assert model.training
    with torch.no_grad():
        assert loss == model.eval().calculate_loss(batch).item()


def test_median_after_warmup_leaves_out_the_first_step():
    assert bench_common.median_after_warmup([9.0, 1.0, 3.0, 2.0]) == 2.0
    assert bench_common.median_after_warmup([0.5, 4.0, 1.0]) == 2.5


def test_chosen_configs_default_order_and_unknown_names():
    configs = {"full": 1, "top2": 2, "lora": 3}
    assert bench_common.chosen_configs("", configs, ("full", "lora")) == ["full", "lora"]
    assert bench_common.chosen_configs("lora,,full", configs, ("full",)) == ["lora", "full"]
    with pytest.raises(InputError, match=r"^--only mamba,x: unknown; choose from full, top2, lora$"):
        bench_common.chosen_configs("full,mamba,x", configs, ("full",))
