"""Gradient caching (--inbatch_chunk) is exact or refused: BatchNorm towers (--freeze_bn_stats)
and encoder dropout (--encoder_dropout), on a small torchvision ResNet-18 at 32 px and a tiny BERT."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from morec.config import make_config, run_label
from morec.errors import InputError
from morec.models.vision import VisionTower
from test_grad_cache import assert_chunked_step_equals_the_plain_step, first_batch, loss_and_grads
from test_text_tower import build, config

SIZE, ITEMS = 32, 8


def resnet_tower(freeze_bn_stats: bool) -> VisionTower:
    """A random torchvision ResNet-18 tower (d = 8) in train mode, running statistics made
    non-trivial so that frozen and batch statistics differ."""
    import torchvision
    torch.manual_seed(0)
    encoder = torchvision.models.resnet18(weights=None)
    encoder.fc = nn.Identity()
    for module in encoder.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    frozen = {"freeze_bn_stats": True} if freeze_bn_stats else {}          # default: batch statistics
    return VisionTower(encoder, "resnet", 8, **frozen).train()


def bn_state(tower: VisionTower) -> dict[str, torch.Tensor]:
    """Every BatchNorm buffer (running mean / var, num_batches_tracked), copied."""
    return {name: value.clone() for name, value in tower.encoder.named_buffers()}


def pixel_step(tower: VisionTower, chunk: int) -> tuple[float, dict[str, torch.Tensor]]:
    """One step of a loss that couples every item (a softmax over all pairs): 8 distinct items in
    a (3, 4) id tensor with repeats and padding, gradient caching in chunks of `chunk` (0: off)."""
    tower.grad_cache_chunk = chunk
    tower.zero_grad()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [1, 3, 0, 2]])                 # (3, 4)
    pixels = torch.randn(ITEMS, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    vecs = tower.encode_items(ids, (torch.arange(1, ITEMS + 1), pixels)).reshape(-1, 8)   # (12, d)
    loss = torch.logsumexp(vecs @ vecs.T, 1).mean()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in tower.named_parameters() if p.grad is not None}


def test_frozen_bn_stats_make_gradient_caching_equal_the_full_batch():
    """--freeze_bn_stats: BatchNorm normalises with its running statistics in train mode, so the
    cached step (chunks of 4) equals the full-batch step (loss to 1e-6, every gradient to 1e-5 of
    its scale), a train-mode vector equals the eval-mode one, and the statistics never change."""
    tower = resnet_tower(freeze_bn_stats=True)
    before = bn_state(tower)
    full_loss, full = pixel_step(tower, 0)
    cached_loss, cached = pixel_step(tower, 4)
    assert cached_loss == pytest.approx(full_loss, abs=1e-6)
    for name in full:
        assert float((full[name] - cached[name]).abs().max()) <= 1e-5 * float(full[name].abs().max()) + 1e-8, name
    assert any(name.startswith("encoder.") for name in cached)
    assert all(torch.equal(before[name], value) for name, value in bn_state(tower).items())
    pixels = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_pixels(pixels), tower.eval().encode_pixels(pixels))
    assert tower.train().training and not tower.encoder.bn1.training and tower.encoder.conv1.training


def test_gradient_caching_refuses_batchnorm_in_train_mode():
    """Without frozen statistics the chunks would normalise by their own batch statistics and
    update the running ones twice per chunk: refused before any pass, naming the alternative."""
    tower = resnet_tower(freeze_bn_stats=False)
    before = bn_state(tower)
    with pytest.raises(InputError, match="--freeze_bn_stats true.*--inbatch_chunk 0"):
        pixel_step(tower, 4)
    assert all(torch.equal(before[name], value) for name, value in bn_state(tower).items())
    full_loss, _ = pixel_step(tower, 0)                       # the plain step still trains BatchNorm
    assert int(tower.encoder.bn1.num_batches_tracked) == 1


def test_the_factory_refuses_gradient_caching_for_a_resnet_unless_frozen(tmp_path):
    """The run fails when the model is built (before training), not in its first step."""
    import sys
    from conftest import REPO
    from morec.models.build import build_model
    from morec.resolve import model_spec
    sys.path.insert(0, str(REPO / "pretrained_models"))
    from make_tiny import make_tiny_resnet
    make_tiny_resnet(tmp_path / "tiny_resnet18")
    values = dict(item_tower="vision", cv_model_load="tiny_resnet18", pretrained_dir=str(tmp_path),
                  embedding_dim=8, inbatch_chunk=4, device="cpu")
    with pytest.raises(InputError, match="--freeze_bn_stats"):
        build_model(model_spec(make_config(values)), 10, 5, torch.ones(11))
    model = build_model(model_spec(make_config({**values, "freeze_bn_stats": True})), 10, 5, torch.ones(11))
    assert not model.train().item_tower.encoder.bn1.training


# ----------------------------------------------------------------------------- encoder dropout

def encoder_dropouts(model) -> set[float]:
    """The probabilities of every dropout module of the text encoder."""
    return {m.p for m in model.item_tower.encoder.modules() if isinstance(m, nn.Dropout)}


def test_encoder_dropout_sets_the_loaded_encoders_dropout(tmp_path):
    """--encoder_dropout P sets every dropout of the encoder (hidden, attention) to P; -1 keeps the
    config's (the tiny BERT's 0.1)."""
    assert encoder_dropouts(build(config(tmp_path))) == {0.1}
    for p in (0.0, 0.3):
        model = build(config(tmp_path, encoder_dropout=p))
        assert encoder_dropouts(model) == {p}
        encoder_config = model.item_tower.encoder.config
        assert encoder_config.hidden_dropout_prob == encoder_config.attention_probs_dropout_prob == p


def test_gradient_caching_with_encoder_dropout_off_equals_the_plain_step(tmp_path):
    """--encoder_dropout 0 (the user encoder's dropout stays on): the cached step (chunks of 2)
    equals the plain step, loss to 1e-6; gradients to 1e-6 against the plain step in the same
    chunks and to 1e-3 of their scale against one chunk (sums in another order). With dropout on,
    each chunk draws its own masks: the same distribution, another loss."""
    cfg = config(tmp_path, encoder_dropout=0.0)
    model = build(cfg).train()
    batch = first_batch(cfg)
    assert_chunked_step_equals_the_plain_step(model, batch)
    model = build(config(tmp_path, encoder_dropout=0.1)).train()
    plain_loss, _ = loss_and_grads(model, batch, 0)
    cached_loss, _ = loss_and_grads(model, batch, 2)
    assert abs(cached_loss - plain_loss) > 1e-4


def test_new_values_stay_out_of_labels_until_set():
    """--encoder_dropout and --freeze_bn_stats at their defaults leave labels as they were; set, they
    change the label of the tower that reads them only."""
    text, vision, ids = (make_config(dict(item_tower=t)) for t in ("text", "vision", "id"))
    assert run_label(make_config(dict(item_tower="text", encoder_dropout=0.0))) != run_label(text)
    assert run_label(make_config(dict(item_tower="vision", freeze_bn_stats=True))) != run_label(vision)
    assert run_label(make_config(dict(item_tower="vision", encoder_dropout=0.0))) == run_label(vision)
    assert run_label(make_config(dict(item_tower="id", freeze_bn_stats=True, encoder_dropout=0.2))) == run_label(ids)
    with pytest.raises(InputError, match="--encoder_dropout 1.5"):
        make_config(dict(encoder_dropout=1.5))
    with pytest.raises(InputError, match="--freeze_bn_stats True .*--two_stage"):
        make_config(dict(item_tower="vision", two_stage=True, freeze_bn_stats=True))


def test_the_log_says_what_the_run_computes(caplog):
    """--freeze_bn_stats, --encoder_dropout and --inbatch_chunk are each stated in the run's log."""
    import logging
    from morec.parts import log_encoder_semantics
    with caplog.at_level(logging.INFO, logger="morec"):
        log_encoder_semantics(make_config(dict(item_tower="vision", freeze_bn_stats=True, inbatch_chunk=4)))
        log_encoder_semantics(make_config(dict(item_tower="text", encoder_dropout=0.0)))
    text = caplog.text
    assert "running statistics" in text and "never update" in text
    assert "--encoder_dropout 0" in text and "--inbatch_chunk 4 (gradient caching)" in text
