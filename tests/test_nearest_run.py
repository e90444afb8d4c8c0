"""A test command whose values name a folder without a checkpoint names the values that differ
from the nearest trained run beside it (a --ties on a run trained without it changes the label)."""
import dataclasses
import json

import pytest

from morec.config import Config, run_label
from morec.errors import InputError
from morec.runs import RunFiles, saved_config


def trained_folder(runs, cfg):
    folder = runs / run_label(cfg)
    folder.mkdir(parents=True)
    (folder / "checkpoint_best.pt").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    return folder


def refusal(runs, cfg):
    with pytest.raises(InputError) as error:
        saved_config(RunFiles(runs / run_label(cfg)), cfg)
    return str(error.value)


def test_a_test_with_another_tie_rule_names_the_value_and_the_trained_run(tmp_path):
    trained = trained_folder(tmp_path, Config())
    message = refusal(tmp_path, dataclasses.replace(Config(), ties="optimistic", eval_batch_size=7))
    assert f"differ from the trained run {trained.name} in --ties optimistic (that run: expected);" in message
    assert "eval_batch_size" not in message                      # run control does not change the label
    message = refusal(tmp_path, Config(lr=0.5, embedding_dim=32))
    assert "--embedding_dim 32 (that run: 64), --lr 0.5 (that run: 0.001)" in message


def test_without_a_near_trained_run_the_message_says_train_it_first(tmp_path):
    trained_folder(tmp_path, Config(model="gru4rec", embedding_dim=32, lr=0.1, batch_size=8, seed=3))
    (tmp_path / "untrained").mkdir()                                # no checkpoint: not a candidate
    (tmp_path / "untrained" / "config.json").write_text(json.dumps(Config(ties="optimistic").to_dict()))
    message = refusal(tmp_path, Config(ties="optimistic"))
    assert message.startswith("no checkpoint in ") and "train this run first" in message
    assert "differ" not in message
