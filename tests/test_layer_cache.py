"""Layer-cached partial fine-tuning (--cache_frozen_layers, morec/layer_cache.py and
morec/models/cached_text.py): on a tiny BERT and a tiny Llama with the encoder's dropout off, a
training step on the cached states equals the uncached step (loss, every gradient) and the catalogue
vectors agree; a stale or damaged cache is refused before anything trains."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO
from morec.config import Config, make_config, run_label
from morec.digests import CHUNK_BYTES, chunk_record
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


def assert_same_step(plain, cached, batch: dict, chunk: int = 0) -> dict[str, torch.Tensor]:
    """A training step of `cached` (gradient caching in chunks of `chunk` items; 0: off) equals the
    plain step of the uncached `plain`: the loss and every gradient to 1e-5 (plain stepped first).
    Returns the cached step's gradients, by parameter name."""
    plain_loss, plain_grads = loss_and_grads(plain, batch, 0)
    cached_loss, cached_grads = loss_and_grads(cached, batch, chunk)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-5)
    assert max_grad_difference(plain_grads, cached_grads) <= 1e-5
    return cached_grads


@pytest.mark.parametrize("family", ["bert", "llama", "opt"])
def test_cached_step_equals_the_uncached_step(family, tmp_path):
    """float32 cache, dropout off: loss and every trainable parameter's gradient equal the uncached
    path's to 1e-5; the gradients reach only the top block (and the final norm after it), the
    projection and the user encoder; the catalogue vectors (ItemTower.all_item_vectors) agree to
    1e-5."""
    plain, cached, batch = build_pair(tmp_path, family)
    assert type(cached.item_tower).__name__ == "CachedTextTower"
    cached_grads = assert_same_step(plain, cached, batch)
    encoder_grads = {name for name in cached_grads if name.startswith("item_tower.encoder.")}
    blocks = {"bert": "encoder.layer.", "llama": "layers.", "opt": "decoder.layers."}[family]
    assert encoder_grads and all(f"{blocks}1." in name or name.endswith(("encoder.norm.weight", "final_layer_norm.weight",
                                                                          "final_layer_norm.bias"))
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


# ----------------------------------------------------------------------------- adapters, gradient caching

@pytest.mark.parametrize("family,peft", [("bert", "lora"), ("llama", "lora"), ("bert", "bitfit")])
def test_peft_restricted_to_the_top_block_trains_on_the_cache(family, peft, tmp_path):
    """--peft lora|bitfit --peft_layers 1: adapters (LoRA A / B) or trained biases exist only in the
    top block; the cached step equals the uncached one (loss, every gradient) and the frozen
    pretrained weights get no gradient."""
    plain, cached, batch = build_pair(tmp_path, family, peft=peft, peft_layers=1)
    blocks = "encoder.layer." if family == "bert" else "layers."
    encoder = cached.item_tower.encoder
    trained = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trained and all(name.startswith(f"{blocks}1.") for name in trained)
    if peft == "lora":
        adapted = [name for name, _ in encoder.named_parameters() if "lora_" in name]
        assert adapted == trained and any(name.startswith(f"{blocks}1.") for name in adapted)
    else:
        assert all(name.endswith(".bias") for name in trained)
    cached_grads = assert_same_step(plain, cached, batch)
    assert {n.removeprefix("item_tower.encoder.") for n in cached_grads if n.startswith("item_tower.encoder.")} \
        == set(trained)


def test_gradient_checkpointing_on_the_cache_equals_the_uncached_step(tmp_path):
    """--gradient_checkpointing recomputes the top block in backward, after the frozen blocks are
    swapped back: it must still see the cached states (they are its input, not a hook's)."""
    plain, cached, batch = build_pair(tmp_path, "llama", gradient_checkpointing=True)
    assert_same_step(plain, cached, batch)


def test_gradient_caching_on_the_cache_equals_the_uncached_step(tmp_path):
    """--inbatch_chunk 2 on the cached tower (the top block re-run chunk by chunk in backward)
    equals the uncached plain step: loss and every gradient."""
    plain, cached, batch = build_pair(tmp_path, "bert")
    assert_same_step(plain, cached, batch, chunk=2)


# ----------------------------------------------------------------------------- stale or damaged caches

def cached_config(tmp_path: Path, **extra):
    return config(tmp_path, cache_frozen_layers=True, **values("bert", **extra))


def built_cache(tmp_path: Path) -> Path:
    build_run_model(cached_config(tmp_path), ml100k(), CPU)
    (path,) = cache_files(tmp_path)
    return path


def refusal(tmp_path: Path) -> str:
    with pytest.raises(InputError) as refused:
        build_run_model(cached_config(tmp_path), ml100k(), CPU)
    return str(refused.value)


def test_a_truncated_cache_is_refused_before_mapping(tmp_path):
    path = built_cache(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 64)
    message = refusal(tmp_path)
    assert f"layer cache {path} cannot be read: it holds {size - 64} bytes, but {size} were written" in message
    assert str(path) in message and f"delete {path} and {path.stem}.json" in message


def test_a_cache_truncated_after_it_was_read_leaves_the_run_untouched(tmp_path):
    """Up to 1 GiB the cache is read into memory whole: truncating the file while a run trains
    changes nothing in that run (a memory map would die with SIGBUS on the next read of a lost
    page). Run in a child process, so that a SIGBUS could not take the test session down."""
    path = built_cache(tmp_path)
    key = json.loads(path.with_suffix(".json").read_text())["key"]
    child = (f"import sys, torch; sys.path.insert(0, {str(REPO)!r})\n"
             "from pathlib import Path\nfrom morec.layer_cache import read_cache\n"
             f"path, key = Path({str(path)!r}), {key!r}\n"
             "before = [s.float().sum().item() for s in read_cache(path, key)]\n"
             "states = read_cache(path, key)\nopen(path, 'r+b').truncate(0)\n"
             "after = [s.float().sum().item() for s in states]\nprint(before == after)")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "True", (done.returncode, done.stderr[-500:])


def test_a_changed_byte_is_refused_by_the_chunk_digest(tmp_path):
    path = built_cache(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    message = refusal(tmp_path)
    assert f"layer cache {path} does not hold the bytes it was written with" in message
    assert len(data) < CHUNK_BYTES and f"(bytes 0..{len(data)} differ" in message      # one 16 MiB chunk


@pytest.mark.parametrize("entry,value", [("top_blocks", 2), ("encoder_files", {"config.json": "0" * 64}), ("tokenizer", "x"),
                                         ("texts_sha1", {"title": "y"})])
def test_a_sidecar_for_another_run_is_refused_naming_what_differs(entry, value, tmp_path):
    """A cache file whose sidecar was written for another k, encoder, tokenizer or text (e.g. copied
    over): refused, naming the differing entry, and nothing is built over it."""
    path = built_cache(tmp_path)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["key"][entry] = value
    sidecar.write_text(json.dumps(meta))
    before = path.read_bytes()
    message = refusal(tmp_path)
    assert f"was built for another run ({entry} differ" in message and str(path) in message
    assert "nothing is trained on it" in message and path.read_bytes() == before


def test_a_cache_without_its_sidecar_is_refused_and_a_sidecar_alone_rebuilt(tmp_path):
    path = built_cache(tmp_path)
    sidecar = path.with_suffix(".json")
    meta = sidecar.read_text()
    sidecar.unlink()
    assert "its sidecar" in refusal(tmp_path) and "cannot be read" in refusal(tmp_path)
    sidecar.write_text(meta)
    path.unlink()                                            # the data deleted, the sidecar left
    assert built_cache(tmp_path) == path and json.loads(sidecar.read_text())["key"] == json.loads(meta)["key"]


def test_other_weights_or_another_k_build_their_own_cache(tmp_path):
    """Two 3-block encoders under one folder name but with other weights, and k = 1 or 2: four
    cache files, none read for another; each cached tower's catalogue equals its uncached one."""
    from text_helpers import tiny_encoders
    tiny_encoders()                                          # puts pretrained_models/ on sys.path
    from make_tiny import make_tiny_bert
    for seed in (0, 1):
        make_tiny_bert(tmp_path / f"enc{seed}" / "tiny3", layers=3, seed=seed)
    names = set()
    for seed in (0, 1):
        for top in (1, 2):
            base = dict(bert_model_load="tiny3", pretrained_dir=str(tmp_path / f"enc{seed}"), encoder_dropout=0.0,
                        trainable_layers=top)
            plain = build_run_model(config(tmp_path, **base), ml100k(), CPU)
            cached = build_run_model(config(tmp_path, cache_frozen_layers=True, layer_cache_dtype="float32", **base),
                                     ml100k(), CPU)
            assert (catalogue(plain) - catalogue(cached)).abs().max() <= 1e-5
            names = {path.name for path in cache_files(tmp_path)}
    assert len(names) == 4 and {name.split("-")[-3] for name in names} == {"top1", "top2"}


def test_a_refused_cache_leaves_no_run_folder(tmp_path, capsys):
    """A run on a truncated cache exits 2 with the message, before any run folder is written."""
    from conftest import run_in_process
    from text_helpers import tiny_encoders
    args = ["--item_tower", "text", "--bert_model_load", TINY["bert"], "--pretrained_dir", str(tiny_encoders()),
            "--cache_dir", str(tmp_path / "cache"), "--runs_dir", str(tmp_path / "runs"), "--trainable_layers", "1",
            "--cache_frozen_layers", "true", "--num_words_title", "12", "--embedding_dim", "16"]
    build_run_model(make_config(dict(item_tower="text", bert_model_load=TINY["bert"], pretrained_dir=str(tiny_encoders()),
                                     cache_dir=str(tmp_path / "cache"), trainable_layers=1, cache_frozen_layers=True,
                                     num_words_title=12, embedding_dim=16)), ml100k(), CPU)
    (path,) = cache_files(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(100)
    code, _, err = run_in_process("bce_text/main-end2end", "train", *args, capsys=capsys)
    assert code == 2 and f"layer cache {path} cannot be read: it holds 100 bytes" in err
    assert not (tmp_path / "runs").exists()


def test_a_cached_run_records_the_layer_cache_and_test_refuses_it_changed(tmp_path, capsys):
    """A run with --cache_frozen_layers true records the cache's size and sha256 in config.json;
    its test refuses the cache with a byte changed (same size) and one rebuilt with other bytes
    (its sidecar's record rewritten to match, as a rebuild would), naming the file each time; with
    the original bytes back it tests again."""
    from test_input_digests import assert_refused, run_test, text_run, train
    args = text_run(tmp_path, "--cache_frozen_layers", "true", "--trainable_layers", "1")
    code, err = train(args, capsys)
    assert code == 0, err
    (path,) = cache_files(tmp_path)
    saved = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())["data_identity"]["inputs"]
    content = json.loads(path.with_suffix(".json").read_text())["content"]
    assert saved["layer_cache"] == {"file": str(path), "bytes": path.stat().st_size, "sha256": content["sha256"]}
    assert {"text_encoder", "tokenizer"} <= set(saved)
    whole = path.read_bytes()
    changed = bytearray(whole)
    changed[len(changed) // 2] ^= 0xFF
    path.write_bytes(bytes(changed))
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, f"layer cache {path} does not hold the bytes it was written with", "delete")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["content"] = chunk_record(changed)                      # a cache rebuilt with other bytes
    path.with_suffix(".json").write_text(json.dumps(meta))
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, f"the frozen-layer cache {path} holds other", f"sha256 {content['sha256'][:12]} then")
    path.write_bytes(whole)
    meta["content"] = content
    path.with_suffix(".json").write_text(json.dumps(meta))
    code, err, _ = run_test(args, capsys)
    assert code == 0, err


# ----------------------------------------------------------------------------- the Q4 study's cached arms

def test_q4_cached_arms_run_only_when_named_with_the_end_to_end_seeds(tmp_path, monkeypatch):
    """top1_cached, top2_cached, lora_top2_cached: valid runs with the cache on, E2E seeds (they
    train their top blocks), not in the default --arms (the default study is unchanged)."""
    from conftest import REPO
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_common
    import study_q4_adaptation
    seen = {}
    monkeypatch.setattr(study_q4_adaptation, "run_study",
                        lambda name, title, parts, args, overrides, *rest: seen.update(parts=parts, overrides=overrides))
    study_q4_adaptation.main(["--out", str(tmp_path), "--table_only"])
    assert not any(part.get("cache_frozen_layers") for part in seen["parts"])
    study_q4_adaptation.main(["--arms", "id,top1_cached,top2_cached,lora_top2_cached", "--out", str(tmp_path),
                              "--table_only"])
    runs = study_common.study_runs(seen["parts"], seen["overrides"], tmp_path)
    cached = [cfg for cfg, _ in runs if cfg.cache_frozen_layers]
    assert len(cached) == 3 * len(study_common.E2E_SEEDS)
    assert {(cfg.trainable_layers, cfg.peft, cfg.peft_layers) for cfg in cached} == \
        {(1, "none", -1), (2, "none", -1), (-1, "lora", 2)}
    assert len({run_label(cfg) for cfg in cached}) == len(cached)


@pytest.mark.parametrize("family,blocks,final", [("bert", "encoder.layer.", ()), ("llama", "layers.", ("norm.weight",))])
def test_norm_layers_of_the_top_block_and_the_final_norm_train_with_peft_layers(family, blocks, final, tmp_path):
    """--peft ln --peft_layers 1: the norms of the top block and the final norm after it (Llama's
    `norm`) train, nothing below; the cached step equals the uncached one."""
    plain, cached, batch = build_pair(tmp_path, family, peft="ln", peft_layers=1)
    trained = [name for name, p in cached.item_tower.encoder.named_parameters() if p.requires_grad]
    assert trained and all(name.startswith(f"{blocks}1.") or name in final for name in trained)
    assert set(final) <= set(trained)
    assert_same_step(plain, cached, batch)


def test_two_attributes_are_cached_side_by_side(tmp_path):
    """--news_attributes title,abstract: one file, both attributes' states at their offsets; the
    cached step equals the uncached one."""
    plain, cached, batch = build_pair(tmp_path, "bert", news_attributes="title,abstract", num_words_abstract=10)
    layout = json.loads(cache_files(tmp_path)[0].with_suffix(".json").read_text())["layout"]
    assert [part["attribute"] for part in layout] == ["title", "abstract"] and layout[1]["offset"] > 0
    assert_same_step(plain, cached, batch)


def test_a_build_that_fails_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    """The data goes to a temp file, renamed last: a build stopped after the first attribute leaves
    no cache file, no sidecar and no temp file; the next run builds the cache whole."""
    import morec.layer_cache as layer_cache
    real = layer_cache.write_attribute
    calls = []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(layer_cache, "write_attribute", stop_at_the_second)
    cfg = cached_config(tmp_path, news_attributes="title,abstract", num_words_abstract=10)
    with pytest.raises(KeyboardInterrupt):
        build_run_model(cfg, ml100k(), CPU)
    assert list((tmp_path / "cache" / "layers").iterdir()) == []
    monkeypatch.setattr(layer_cache, "write_attribute", real)
    build_run_model(cfg, ml100k(), CPU)
    assert len(cache_files(tmp_path)) == 1
