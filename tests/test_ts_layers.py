"""Layer-cached two-stage (--ts_layers all): every layer's pooled vector cached once,
a learned scalar mix (ELMo eq. 1) + today's head; on a tiny random BERT and ml-100k, CPU, fp32."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from morec.config import make_config
from morec.errors import InputError
from morec.features import ensure_features, text_features
from morec.models.text import TextTower
from morec.models.towers import FeatureTower, LayerMixFeatureTower
from morec.resolve import item_input_spec
from morec.parts import make_batches
from test_text_tower import CPU, build, config
from text_helpers import TINY, forbid_text_feature_extraction, ml100k, one_second_newer, tiny_bert_copy, tiny_encoders


def test_all_layer_features_hold_every_layer_and_the_last_equals_the_last_layer_cache(tmp_path):
    data = ml100k()
    cfg = config(tmp_path, two_stage=True, ts_layers="all")
    layers, path = text_features(item_input_spec(cfg), data, CPU)
    last, last_path = text_features(item_input_spec(make_config({**cfg.to_dict(), "ts_layers": "last"})), data, CPU)
    assert not isinstance(layers, np.memmap) and layers.shape == (data.num_items + 1, 3, 32)    # embeddings + 2 blocks
    assert path != last_path and path.name.endswith("-layers.npy")
    np.testing.assert_allclose(layers[:, -1], last, atol=1e-5)
    assert (layers[0] == 0).all()
    tower = build(make_config({**cfg.to_dict(), "two_stage": False, "ts_layers": "last"})).item_tower.eval()
    ids = torch.tensor([1, 77, 1409])
    with torch.no_grad():
        out = tower.encoder(input_ids=tower.input_ids_0[ids], attention_mask=tower.attention_mask_0[ids],
                            output_hidden_states=True)
    for j, hidden in enumerate(out.hidden_states):                        # the CLS of every layer
        np.testing.assert_allclose(layers[ids.numpy(), j], hidden[:, 0].numpy(), atol=1e-5)


def test_last_layer_mix_gives_the_frozen_end_to_end_loss(tmp_path):
    """Mix weights fixed to the last layer (gamma 1): the layer-cached TS model's loss equals the
    end-to-end model's with the encoder frozen, on the same batch (same head and SASRec weights);
    the uniform mix (the initial weights) gives other item vectors."""
    e2e = build(config(tmp_path, trainable_layers=0, drop_rate=0.0)).eval()
    assert isinstance(e2e.item_tower, TextTower)
    assert not any(p.requires_grad for p in e2e.item_tower.encoder.parameters())
    ts = build(config(tmp_path, two_stage=True, ts_layers="all", drop_rate=0.0)).eval()
    tower = ts.item_tower
    assert isinstance(tower, LayerMixFeatureTower) and not hasattr(tower, "encoder")
    shared = {k: v for k, v in e2e.state_dict().items() if k in ts.state_dict() and "layer_scalars" not in k}
    assert {"item_tower.fc.weight", "item_tower.fc.bias"} <= set(shared)
    missing = ts.load_state_dict(shared, strict=False).missing_keys
    assert sorted(missing) == ["item_tower.gamma", "item_tower.layer_scalars"]
    batch = next(make_batches(config(tmp_path), ml100k()).epoch(seed=3))
    with torch.no_grad():
        tower.layer_scalars.copy_(torch.tensor([-1e4, -1e4, 0.0]))       # softmax: exactly (0, 0, 1)
        tower.gamma.fill_(1.0)
        expected, got = e2e.calculate_loss(batch), ts.calculate_loss(batch)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        seqs = batch["seqs"]                                              # (B, L+1)
        e2e_vecs = e2e.encode(seqs, batch)                                # (B, L+1, d)
        torch.testing.assert_close(ts.encode(seqs, batch)[seqs != 0], e2e_vecs[seqs != 0], atol=1e-5, rtol=1e-4)
        tower.layer_scalars.zero_()                                       # every layer 1/3
        assert (ts.encode(seqs, batch) - e2e_vecs)[seqs != 0].abs().max() > 1e-3           # 100x the tolerance above


def test_the_mix_trains_and_the_padding_row_stays_zero():
    torch.manual_seed(0)
    features = torch.randn(6, 3, 8)
    features[0] = 0
    tower = LayerMixFeatureTower(features, 4)
    weights = tower.layer_weights()
    torch.testing.assert_close(weights, torch.full((3,), 1 / 3))
    torch.testing.assert_close(tower.item_features(torch.tensor([2, 0])),
                               torch.stack([features[2].mean(0), torch.zeros(8)]))
    tower(torch.tensor([[1, 2], [3, 5]])).pow(2).sum().backward()
    assert tower.layer_scalars.grad.abs().sum() > 0 and tower.gamma.grad.abs() > 0
    with pytest.raises(ValueError, match="needs \\(N\\+1, layers, F\\) features"):
        LayerMixFeatureTower(torch.zeros(6, 8), 4)


def test_layer_cache_is_reused_and_rebuilt_when_the_encoder_changes(tmp_path, monkeypatch, caplog):
    enc_root = tiny_bert_copy(tmp_path)
    cfg = config(tmp_path, bert_model_load="tiny", pretrained_dir=str(enc_root), two_stage=True, ts_layers="all")
    data = ml100k()
    features, path = text_features(item_input_spec(cfg), data, CPU)
    forbid_text_feature_extraction(monkeypatch)
    assert ensure_features(item_input_spec(cfg), data, CPU) == path              # fresh: read, not rebuilt
    model = build(cfg)
    assert model.item_tower.features.shape == features.shape
    monkeypatch.undo()
    one_second_newer(enc_root / "tiny" / "model.safetensors")              # a new version of the encoder
    with caplog.at_level(logging.WARNING, logger="morec"):
        again, again_path = text_features(item_input_spec(cfg), data, CPU)
    assert again_path == path and "built from another encoder" in caplog.text
    np.testing.assert_array_equal(again, features)                         # same weights: same numbers


@pytest.mark.parametrize("values, fragment", [
    (dict(item_tower="text", ts_layers="all"), "--ts_layers all .* add --two_stage true"),
    (dict(item_tower="vision", two_stage=True, ts_layers="all"), "--ts_layers all is for text encoders"),
    (dict(item_tower="text", two_stage=True, ts_layers="every"), "--ts_layers 'every' must be one of last, all"),
])
def test_bad_ts_layers_values_are_input_errors(values, fragment):
    with pytest.raises(InputError, match=fragment):
        make_config(values)


def test_default_ts_layers_keeps_labels_and_the_plain_head(tmp_path):
    from morec.config import Config, run_label
    assert run_label(Config(item_tower="text", two_stage=True)) == run_label(Config(item_tower="text", two_stage=True, ts_layers="last"))
    assert run_label(Config(item_tower="text", two_stage=True)) != run_label(Config(item_tower="text", two_stage=True, ts_layers="all"))
    assert type(build(config(tmp_path, two_stage=True)).item_tower) is FeatureTower


def test_extract_features_script_caches_every_layer(tmp_path, capsys):
    """scripts/extract_features.py --ts_layers all with the tiny OPT (masked-mean pooling of each
    layer); a vision encoder with --ts_layers all is refused (exit 2, nothing written)."""
    import re
    from script_modules import import_script
    extract_features = import_script("extract_features")
    args = ["--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY["opt"], "--ts_layers", "all",
            "--cache_dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert extract_features.main(args) == 0
    line = capsys.readouterr().out.strip()
    assert re.match(rf"^.*/features/ml-100k-{TINY['opt']}-title30-\w+-layers\.npy 1410x3x32 \(0\.5 MiB, ", line), line
    layers = np.load(line.split()[0], mmap_mode="r")
    last, _ = text_features(item_input_spec(make_config({"item_tower": "text", "two_stage": True,
                                                         "bert_model_load": TINY["opt"],
                                                         "pretrained_dir": str(tiny_encoders()),
                                                         "cache_dir": str(tmp_path / "cache")})),
                            ml100k(), CPU)
    np.testing.assert_allclose(layers[:, -1], last, atol=1e-5)
    bad = ["--item_tower", "vision", "--ts_layers", "all", "--cache_dir", str(tmp_path / "vision")]
    assert extract_features.main(bad) == 2
    assert capsys.readouterr().err.startswith("error: --ts_layers all is for text encoders")
    assert not (tmp_path / "vision").exists()


@pytest.mark.parametrize("fusion", ["add", "cat"])
def test_layer_mix_head_under_id_fusion_trains(fusion, tmp_path):
    """ID + modality fusion over the layer-cached head: the mix's scalars get gradients, the
    catalogue vectors equal the per-id forward pass."""
    from morec.models.towers import FusionTower
    model = build(config(tmp_path, two_stage=True, ts_layers="all", fusion=fusion, drop_rate=0.0))
    tower = model.item_tower
    assert isinstance(tower, FusionTower) and isinstance(tower.modality, LayerMixFeatureTower)
    batch = next(make_batches(config(tmp_path), ml100k()).epoch(seed=4))
    model.calculate_loss(batch).backward()
    assert tower.modality.layer_scalars.grad.abs().sum() > 0 and tower.id_tower.embedding.weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.all_item_vectors()[:50], tower(torch.arange(50)))


def test_study_ts_layers_at_toy_size(tmp_path, capsys):
    """scripts/study_ts_layers.py with a tiny random BERT, one epoch: one row per --ts_layers, a
    cost column and the pareto figure; --ts_layers given to the study is refused."""
    import csv
    from script_modules import import_script
    from test_results_table import assert_png
    study_ts_layers = import_script("study_ts_layers")
    argv = ["--out", str(tmp_path / "out"), "--dnn", "0", "--seed", "1", "--epoch", "1", "--max_seq_len", "3",
            "--embedding_dim", "16", "--batch_size", "512", "--pretrained_dir", str(tiny_encoders()),
            "--bert_model_load", TINY["bert"], "--cache_dir", str(tmp_path / "cache"), "--progress", "false"]
    study_ts_layers.main(argv)
    assert capsys.readouterr().out.count("\ntest HR@10 ") == 2
    rows = list(csv.DictReader(open(tmp_path / "out" / "ts_layers.csv", newline="")))
    assert [r["mode"] for r in rows] == ["TS dnn=0", "TS layers=all dnn=0"]
    assert all(float(r["train_seconds_to_best"]) > 0 and float(r["peak_memory_mb"]) > 0 for r in rows)
    assert all(float(r["train_cpu_seconds_to_best"]) > 0 for r in rows)              # real runs record it
    assert "(CPU " in (tmp_path / "out" / "ts_layers.md").read_text()
    assert_png(tmp_path / "out" / "ts_layers_pareto.png")
    with pytest.raises(InputError, match="give the depths with --dnn"):
        study_ts_layers.main(argv + ["--ts_layers", "all"])


def test_the_scalar_mix_has_its_own_optimizer_group(tmp_path):
    """--ts_mix_lr: s and gamma train in their own AdamW group (no weight decay); the head and
    SASRec keep lr / l2_weight; a last-layer run has the one group it always had."""
    from morec.parts import build_optimizer
    cfg = config(tmp_path, two_stage=True, ts_layers="all", ts_mix_lr=0.2)
    model = build(cfg)
    groups = build_optimizer(model, cfg).param_groups
    assert len(groups) == 2
    assert groups[1]["params"] == [model.item_tower.layer_scalars, model.item_tower.gamma]
    assert groups[1]["lr"] == 0.2 and groups[1]["weight_decay"] == 0.0
    assert groups[0]["lr"] == cfg.lr and groups[0]["weight_decay"] == cfg.l2_weight
    assert len(groups[0]["params"]) + 2 == len(list(model.parameters()))
    last = config(tmp_path, two_stage=True)
    assert len(build_optimizer(build(last), last).param_groups) == 1
    with pytest.raises(InputError, match="--ts_mix_lr 0.0 must be a finite number > 0"):
        config(tmp_path, two_stage=True, ts_layers="all", ts_mix_lr=0.0)
