"""Layer-cached partial fine-tuning (--cache_frozen_layers, morec/layer_cache.py and
morec/models/cached_text.py): on a tiny BERT and a tiny Llama with the encoder's dropout off, a
training step on the cached states equals the uncached step (loss, every gradient) and the catalogue
vectors agree; a stale or damaged cache is refused before anything trains."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from morec.config import Config, make_config, run_label
from morec.errors import InputError
from morec.parts import build_run_model
from test_grad_cache import first_batch, loss_and_grads, max_grad_difference
from test_text_tower import CPU, config
from text_helpers import TINY, TINY_DECODERS, ml100k, tiny_decoders

FOLDERS = {**TINY, **TINY_DECODERS}


def values(family: str, **extra) -> dict:
    """A text tower on the tiny `family` encoder (2 blocks), dropout off, the top block trained."""
    where = {"pretrained_dir": str(tiny_decoders())} if family in TINY_DECODERS else {}
    top = {} if "peft" in extra else {"trainable_layers": 1}
    return {"bert_model_load": FOLDERS[family], "encoder_dropout": 0.0, **where, **top, **extra}


def build_pair(tmp_path: Path, family: str, dtype: str = "float32", **extra):
    """(uncached model, cached model, batch): the same initial weights, in train mode."""
    base = values(family, **extra)
    plain = build_run_model(config(tmp_path, **base), ml100k(), CPU).train()
    cfg = config(tmp_path, cache_frozen_layers=True, layer_cache_dtype=dtype, **base)
    cached = build_run_model(cfg, ml100k(), CPU).train()
    return plain, cached, first_batch(cfg)


def catalogue(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().item_tower.all_item_vectors(ml100k().num_items)


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "layers").glob("*.bin"))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_cached_step_equals_the_uncached_step(family, tmp_path):
    """float32 cache, dropout off: loss and every trainable parameter's gradient equal the uncached
    path's to 1e-5; the gradients reach only the top block, the projection and the user encoder;
    the catalogue vectors (ItemTower.all_item_vectors) agree to 1e-5."""
    plain, cached, batch = build_pair(tmp_path, family)
    assert type(cached.item_tower).__name__ == "CachedTextTower"
    plain_loss, plain_grads = loss_and_grads(plain, batch, 0)
    cached_loss, cached_grads = loss_and_grads(cached, batch, 0)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-5)
    assert max_grad_difference(plain_grads, cached_grads) <= 1e-5
    encoder_grads = {name for name in cached_grads if name.startswith("item_tower.encoder.")}
    blocks = "encoder.layer." if family == "bert" else "layers."
    assert encoder_grads and all(f"{blocks}1." in name or name.endswith("encoder.norm.weight")
                                 for name in encoder_grads)
    assert (catalogue(plain) - catalogue(cached)).abs().max() <= 1e-5
    assert len(cache_files(tmp_path)) == 1


@pytest.mark.parametrize("dtype,tolerance", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_precision_cache_is_close(dtype, tolerance, tmp_path):
    """A float16 cache rounds each state to 11 significant bits (bfloat16: 8): the loss agrees to
    `tolerance` (relative) and the catalogue vectors to `tolerance` of their scale; the file is half
    the float32 one's size."""
    plain, cached, batch = build_pair(tmp_path, "bert", dtype)
    plain_loss, _ = loss_and_grads(plain, batch, 0)
    cached_loss, _ = loss_and_grads(cached, batch, 0)
    assert cached_loss == pytest.approx(plain_loss, rel=tolerance)
    full, half = catalogue(plain), catalogue(cached)
    assert 0 < (full - half).abs().max() <= tolerance * full.abs().max()
    build_pair(tmp_path, "bert", "float32")
    sizes = {path.name.split("-")[-2]: path.stat().st_size for path in cache_files(tmp_path)}
    assert sizes[dtype] * 2 == sizes["float32"]


@pytest.mark.parametrize("extra,needle", [
    (dict(item_tower="text", cache_frozen_layers=True), "--trainable_layers -1 sets no top blocks"),
    (dict(item_tower="text", cache_frozen_layers=True, trainable_layers=0), "--trainable_layers 0 sets no top"),
    (dict(item_tower="text", cache_frozen_layers=True, peft="lora"), "--peft_layers -1 sets no top blocks"),
    (dict(item_tower="text", cache_frozen_layers=True, trainable_layers=1, two_stage=True), "--two_stage false"),
    (dict(item_tower="vision", cache_frozen_layers=True, trainable_layers=1), "needs --item_tower text"),
    (dict(item_tower="id", cache_frozen_layers=True, trainable_layers=1), "needs --item_tower text"),
    (dict(item_tower="text", layer_cache_dtype="bfloat16"), "only applies with --cache_frozen_layers true"),
    (dict(item_tower="text", layer_cache_dtype="int8", cache_frozen_layers=True, trainable_layers=1),
     "must be one of float16, bfloat16, float32"),
    (dict(item_tower="text", peft_layers=2), "--peft is none"),
])
def test_refused_settings(extra, needle):
    with pytest.raises(InputError, match=needle):
        make_config(extra)


def test_the_cache_flags_join_the_label_only_when_set():
    """Default values keep every existing label; the cache (and its dtype) make another run."""
    text = dict(item_tower="text", trainable_layers=2)
    plain = run_label(make_config(dict(text)))
    cached = run_label(make_config(dict(text, cache_frozen_layers=True)))
    bf16 = run_label(make_config(dict(text, cache_frozen_layers=True, layer_cache_dtype="bfloat16")))
    assert len({plain, cached, bf16}) == 3
    assert run_label(make_config(dict(text, cache_frozen_layers=False))) == plain
    assert run_label(Config()) == run_label(make_config(dict(cache_frozen_layers=False)))


def test_trainable_layers_beyond_the_cacheable_are_refused(tmp_path):
    """Every block trained: nothing frozen to cache, refused before any cache is written."""
    with pytest.raises(InputError, match="the top blocks must be 1 .. 1"):
        build_run_model(config(tmp_path, cache_frozen_layers=True, **values("bert", trainable_layers=2)),
                        ml100k(), CPU)
    assert cache_files(tmp_path) == []
