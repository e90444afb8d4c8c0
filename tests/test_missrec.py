"""MISSRec (--model missrec, morec/models/missrec.py): the interest clustering on inputs whose
clusters are known, causality, shapes and scores of every tower, the ID table, bad values, and
a real ml-100k run on two-stage features of a tiny random BERT."""
from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import REPO
from test_text_scripts import run_in_process
from text_helpers import TINY, tiny_encoders
from morec.config import Config, make_config, run_label
from morec.errors import InputError
from morec.models.build import build_model
from morec.models.missrec import MissRecRecommender, dpc_knn_assign, prefix_interests
from morec.resolve import model_spec

N, DIM, L = 30, 8, 6
FEATURES = {"text": 12, "vision": 10}


def build(item_tower: str = "text", ids: bool = False, **values) -> MissRecRecommender:
    cfg = Config(model="missrec", item_tower=item_tower, two_stage=True, missrec_ids=ids, embedding_dim=DIM,
                 max_seq_len=L, drop_rate=0.0, missrec_interests=3, **values)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    text, vision = (torch.randn(N + 1, FEATURES[m], generator=generator) for m in ("text", "vision"))
    inputs = {"text": {"features": text}, "vision": {"features": vision},
              "text+vision": {"features": text, "vision_features": vision}}[item_tower]
    return build_model(model_spec(cfg), N, 3, torch.full((N + 1,), 1.0 / N), inputs)


def windows() -> torch.Tensor:
    """(3, L) left-padded windows: 2 padded slots, 1, none (a repeat in the last)."""
    return torch.tensor([[0, 0, 3, 7, 1, 9], [0, 12, 5, 5, 30, 2], [4, 8, 15, 16, 23, 4]])


# ----------------------------------------------------------------------------- clustering

def test_two_separated_groups_form_two_interests():
    """Three tokens near +5 and three near -5 (interleaved), K = 2: each group is one cluster,
    its interest token the group's mean."""
    torch.manual_seed(0)
    near = 0.1 * torch.randn(6, 4)
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    tokens = (5 * signs[:, None] + near)[None]                                      # (1, 6, 4)
    weights, ok = dpc_knn_assign(tokens, torch.ones(1, 1, 6, dtype=torch.bool), 2)
    assert ok.all() and weights.shape == (1, 1, 2, 6)
    members = {tuple(row.nonzero().flatten().tolist()) for row in weights[0, 0]}
    assert members == {(0, 2, 5), (1, 3, 4)}
    centroids = torch.einsum("kt,td->kd", weights[0, 0], tokens[0])
    means = torch.stack([tokens[0, [0, 2, 5]].mean(0), tokens[0, [1, 3, 4]].mean(0)])
    assert torch.allclose(centroids.sort(0).values, means.sort(0).values, atol=1e-6)


def test_clusters_do_not_depend_on_the_order_of_the_tokens():
    """A permutation of the tokens permutes the members; the interest tokens stay the same set."""
    torch.manual_seed(1)
    tokens = torch.randn(1, 9, 5)
    order = torch.randperm(9)
    everything = torch.ones(1, 1, 9, dtype=torch.bool)
    weights, _ = dpc_knn_assign(tokens, everything, 4)
    permuted, _ = dpc_knn_assign(tokens[:, order], everything, 4)
    centroids = torch.einsum("kt,td->kd", weights[0, 0], tokens[0])
    centroids_permuted = torch.einsum("kt,td->kd", permuted[0, 0], tokens[0, order])
    key = lambda c: c[torch.argsort(c[:, 0])]                                       # noqa: E731
    assert torch.allclose(key(centroids), key(centroids_permuted), atol=1e-6)
    # every token belongs to exactly one cluster; 9 distinct tokens give 4 non-empty clusters
    assert torch.equal((weights[0, 0] > 0).sum(0), torch.ones(9, dtype=torch.long))


def test_a_prefix_has_at_most_its_tokens_as_interests_and_never_later_ones():
    """Prefix t holds the tokens at positions <= t: prefix 0 of a row one token, so one
    interest (that token), and no interest of prefix t moves when a later token changes."""
    torch.manual_seed(2)
    tokens = torch.randn(2, 5, 3)
    positions, real = torch.arange(5), torch.tensor([[True] * 5, [False, False, True, True, True]])
    interests, ok = prefix_interests(tokens, positions, real, 3)                      # (2, 5, 3, 3), (2, 5, 3)
    assert ok[0].sum(-1).tolist() == [1, 2, 3, 3, 3] and ok[1].sum(-1).tolist() == [0, 0, 1, 2, 3]
    assert torch.allclose(interests[0, 0][ok[0, 0]], tokens[0, :1])
    changed = tokens.clone()
    changed[:, 3:] = torch.randn(2, 2, 3)
    later, _ = prefix_interests(changed, positions, real, 3)
    assert torch.equal(later[:, :3], interests[:, :3])
    assert not torch.allclose(later[:, 4], interests[:, 4])


# ----------------------------------------------------------------------------- the model

@pytest.mark.parametrize("item_tower,ids,parts", [("text", False, 1), ("vision", False, 1), ("text", True, 2),
                                                  ("text+vision", False, 2), ("text+vision", True, 3)])
def test_shapes_and_scores(item_tower, ids, parts):
    """User and item vectors are P*d wide; a score is sum_p a_p cos(h, e^p) / temperature."""
    model = build(item_tower, ids).eval()
    items = model.all_item_vectors()                                                 # (N+1, P*d)
    users = model.user_vectors(windows())                                            # (3, P*d)
    assert items.shape == (N + 1, parts * DIM) and users.shape == (3, parts * DIM)
    assert torch.equal(items[0], torch.zeros(parts * DIM))                           # padding row
    part_norms = items[1:].view(N, parts, DIM).norm(dim=-1)
    assert torch.allclose(part_norms, torch.ones(N, parts), atol=1e-5)
    weights = users.view(3, parts, DIM).norm(dim=-1) * model.temperature             # a_p(h) >= 0
    assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-5)
    scores = users @ items.T
    assert scores.abs().max() <= 1 / model.temperature + 1e-4


def test_user_fusion_starts_as_the_static_fusion_and_then_differs():
    static, user = build("text+vision", True, missrec_fusion="static").eval(), build("text+vision", True).eval()
    assert torch.allclose(static.user_vectors(windows()), user.user_vectors(windows()), atol=1e-6)
    # their static weights: ID 1/3, each modality 1/3 (2/3 shared by two)
    weights = static.user_vectors(windows()).view(3, 3, DIM).norm(dim=-1) * static.temperature
    assert torch.allclose(weights, torch.full((3, 3), 1 / 3), atol=1e-5)
    with torch.no_grad():
        user.part_logits.weight.normal_()
    assert not torch.allclose(static.user_vectors(windows()), user.user_vectors(windows()))


@pytest.mark.parametrize("blocks", [1, 2])
def test_the_state_at_t_does_not_see_later_items(blocks):
    model = build("text+vision", True, transformer_block=blocks).eval()
    seqs = windows()
    changed = seqs.clone()
    changed[:, 4:] = torch.tensor([[11, 13], [17, 19], [21, 29]])
    states, states_changed = model.states(None, seqs), model.states(None, changed)
    assert torch.isfinite(states).all()
    torch.testing.assert_close(states[:, :4], states_changed[:, :4])
    assert not torch.allclose(states[:, 4:], states_changed[:, 4:])


def test_with_and_without_ids_parameter_counts():
    def trainable(model):
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    plain, with_ids = build("text"), build("text", ids=True)
    # the ID table (N+1) x d, and one more part logit: a row of W (d) and a bias
    assert trainable(with_ids) - trainable(plain) == (N + 1) * DIM + DIM + 1
    static, static_ids = build("text", missrec_fusion="static"), build("text", True, missrec_fusion="static")
    assert trainable(static_ids) - trainable(static) == (N + 1) * DIM
    assert trainable(plain) - trainable(static) == DIM + 1                          # the fixed weights do not train
    assert with_ids.item_tower.id_table is not None and plain.item_tower.id_table is None


@pytest.mark.parametrize("loss", ["inbatch", "bce"])
def test_both_losses_train_every_part(loss):
    model = build("text+vision", True, loss=loss).train()
    seqs = torch.cat([windows(), torch.tensor([[1], [2], [3]])], 1)                 # (3, L+1)
    batch = {"seqs": seqs}
    if loss == "bce":
        batch["negatives"] = torch.randint(1, N + 1, (3, L))
    value = model.calculate_loss(batch)
    value.backward()
    assert torch.isfinite(value)
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("values,fragment", [
    (dict(model="missrec", item_tower="text"), "--two_stage true"),
    (dict(model="missrec", item_tower="id"), "--two_stage true"),
    (dict(model="missrec", item_tower="text", two_stage=True, fusion="add"), "--missrec_ids true instead"),
    (dict(model="missrec", item_tower="text", two_stage=True, missrec_interests=21), "exceeds --max_seq_len 20"),
    (dict(model="missrec", item_tower="text", two_stage=True, missrec_interests=0), "must be at least 1"),
    (dict(model="missrec", item_tower="text", two_stage=True, missrec_fusion="dynamic"), "must be one of user"),
    (dict(missrec_ids=True), "only apply with --model missrec"),
])
def test_bad_values_are_one_input_error(values, fragment):
    with pytest.raises(InputError, match=re.escape(fragment)):
        make_config(values)


def test_label_changes_only_with_non_default_missrec_values():
    base = Config(model="missrec", item_tower="text", two_stage=True)
    label = run_label(base)
    assert run_label(Config(**{**base.to_dict(), "missrec_interests": 4, "missrec_ids": False})) == label
    assert run_label(Config(**{**base.to_dict(), "missrec_interests": 3})) != label
    assert run_label(Config(**{**base.to_dict(), "missrec_ids": True})) != label
    assert run_label(Config(**{**base.to_dict(), "mm_fusion": "gate"})) == label     # not read by MISSRec
    assert run_label(Config(**{**base.to_dict(), "model": "sasrec"})) != label


# ----------------------------------------------------------------------------- ml-100k

def test_two_epochs_on_ml100k_train_and_test(tmp_path):
    """The two-stage text script with --model missrec on a tiny random BERT's cached features:
    the loss falls from epoch 1 to 2, the test script ranks every user."""
    run = tmp_path / "runs" / "missrec"
    common = ["--model", "missrec", "--missrec_ids", "true", "--runs_dir", str(tmp_path / "runs"),
              "--label", "missrec", "--device", "cpu", "--pretrained_dir", str(tiny_encoders()),
              "--bert_model_load", TINY["bert"], "--cache_dir", str(tmp_path / "cache"), "--dnn_layers", "0"]
    script = REPO / "inbatch_sasrec_e2e_text"
    run_in_process(script / "train_minilm_2stage.py", common + ["--epoch", "2", "--num_words_title", "12"])
    run_in_process(script / "test_minilm_2stage.py", common + ["--num_words_title", "12"])
    losses = [float(x) for x in re.findall(r"epoch \d+ loss ([0-9.]+)", (run / "train.log").read_text())]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"] == "missrec" and saved["missrec_ids"] is True
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["num_users"] == 943
    assert metrics["test"]["HR@10"] > 10 / 1682, metrics["test"]                      # above chance


def test_all_layer_text_features_get_the_scalar_mix_head():
    """--ts_layers all: the text part is the layer-mix head over (N+1, J, F) features (its mix
    in the optimizer's own group, morec.parts.build_optimizer finds it in the model)."""
    from morec.models.towers import LayerMixFeatureTower
    cfg = Config(model="missrec", item_tower="text+vision", two_stage=True, ts_layers="all", embedding_dim=DIM,
                 max_seq_len=L, drop_rate=0.0)
    inputs = {"features": torch.randn(N + 1, 3, 12), "vision_features": torch.randn(N + 1, 10)}
    model = build_model(model_spec(cfg), N, 3, torch.full((N + 1,), 1.0 / N), inputs).eval()
    assert type(model.item_tower.modalities["text"]) is LayerMixFeatureTower
    assert type(model.item_tower.modalities["vision"]) is not LayerMixFeatureTower
    assert model.user_vectors(windows()).shape == (3, 2 * DIM)


def test_a_bad_value_stops_the_script_with_exit_code_2(capsys):
    from conftest import run_in_process as run_folder
    code, _, err = run_folder("inbatch_sasrec_e2e_text", "train", "--model", "missrec", "--item_tower", "text",
                              "--two_stage", "true", "--missrec_interests", "21", capsys=capsys)
    assert code == 2 and "--missrec_interests 21 exceeds --max_seq_len 20" in err


def test_text_and_image_script_trains_and_tests_on_ml100k_posters(tmp_path):
    """inbatch_sasrec_e2e_multimodal/train_text_vision_2stage.py with --model missrec: cached
    title and poster features of tiny random encoders (32 x 32 posters), one epoch, then its test."""
    from test_multimodal import FOLDER, tiny_pretrained
    from test_text_scripts import train_then_test
    from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root
    common = ["--model", "missrec", "--runs_dir", str(tmp_path / "runs"), "--label", "mm", "--device", "cpu",
              "--root_data_dir", str(poster_root()), "--cache_dir", str(tmp_path / "cache"),
              "--pretrained_dir", str(tiny_pretrained()), "--bert_model_load", TINY["bert"],
              "--cv_model_load", TINY_VISION["swin"], "--image_size", str(IMAGE_SIZE)]
    speed = ["--epoch", "1", "--embedding_dim", "32", "--batch_size", "256", "--num_words_title", "12"]
    saved, log = train_then_test(FOLDER, "text_vision_2stage", common + speed, common, tmp_path / "runs" / "mm")
    assert saved["model"] == "missrec" and saved["item_tower"] == "text+vision" and saved["two_stage"]
    assert "trainable encoder tensors" not in log                                   # no encoder trains


def test_gradient_caching_of_the_candidates_gives_the_plain_step(monkeypatch):
    """--inbatch_chunk: the candidate vectors go through gradient caching (chunks of 4 items),
    the user side through plain autograd; loss and gradients equal the plain step's (no dropout)."""
    from morec.models.towers import GradCachedEncoding
    calls, encode = [], GradCachedEncoding.encode
    monkeypatch.setattr(GradCachedEncoding, "encode", staticmethod(lambda *a: calls.append(a[3]) or encode(*a)))
    def step(chunk):
        model = build("text+vision", True).train()
        model.item_tower.grad_cache_chunk = chunk
        seqs = torch.cat([windows(), torch.tensor([[1], [2], [3]])], 1)
        loss = model.calculate_loss({"seqs": seqs})
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    plain_loss, plain = step(0)
    assert calls == []
    cached_loss, cached = step(4)
    assert calls == [4]                                                             # one cached encoding
    torch.testing.assert_close(cached_loss, plain_loss)
    assert plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
