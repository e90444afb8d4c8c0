"""Any HF encoder / decoder as text item tower (tiny Llama and Qwen2),
last-token pooling, decoder freezing, and parameter-efficient fine-tuning (--peft) with its
checkpoints -- on tiny random models and ml-100k, offline, on CPU."""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import REPO, run_in_process
from morec.checkpoint import load_checkpoint
from morec.config import make_config
from morec.errors import InputError
from morec.models.adapters import reloaded_keys, trained_state
from morec.models.text import (encode_pooled, freeze_encoder, load_text_encoder, load_tokenizer,
                               pool_hidden, transformer_blocks)
from morec import train as training
from morec.parts import build_optimizer, build_run_model, make_batches
from morec.run_state import load_model_weights
from morec.train import evaluate, train
from test_text_tower import build
from text_helpers import TINY, TINY_DECODERS, ml100k, tiny_decoders

CPU = torch.device("cpu")
ALL = {**TINY, **TINY_DECODERS}


def config(tmp_path: Path, family: str = "llama", **values):
    base = dict(item_tower="text", bert_model_load=ALL[family], pretrained_dir=str(tiny_decoders()),
                cache_dir=str(tmp_path / "cache"), embedding_dim=16, num_words_title=12, device="cpu",
                progress=False)
    return make_config({**base, **values})


def trainable(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.requires_grad]


def first_batch(cfg):
    return next(iter(make_batches(cfg, ml100k()).epoch(seed=cfg.seed)))


# ----------------------------------------------------------------------------- loading and pooling

@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_tiny_decoders_load_and_pool_the_last_real_token(family, tmp_path):
    """Right padding leaves a causal model's real positions unchanged, so each pooled vector must
    equal the one of its text encoded alone, without padding, at its last token."""
    tok = load_tokenizer(tiny_decoders() / ALL[family])
    assert tok.pad_token == ("</s>" if family == "llama" else "<|endoftext|>")   # Llama has none: set to EOS
    assert tok.padding_side == "right" and tok.unk_token_id not in tok("toy story")["input_ids"]
    tower = build(config(tmp_path, family)).item_tower.eval()
    assert tower.pooling == "last" and type(tower.encoder).__name__.lower().startswith(family)
    ids = torch.tensor([3, 1, 7, 250])
    with torch.no_grad():
        got = tower(ids)
        expected = []
        for item in ids:
            mask = tower.attention_mask_0[item]
            tokens = tower.input_ids_0[item][mask.bool()][None]                # (1, n) no padding
            hidden = tower.encoder(input_ids=tokens).last_hidden_state[0, -1]
            expected.append(F.gelu(tower.fc(hidden)))
    assert len(set(tower.attention_mask_0[ids].sum(1).tolist())) > 1          # the batch holds padding
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=1e-4)


def test_last_pooling_picks_the_right_token_under_right_and_left_padding():
    hidden = torch.arange(2 * 4, dtype=torch.float).view(2, 4, 1).expand(2, 4, 3)   # (K, W, H): value = 4k + w
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]])
    assert pool_hidden(hidden, right, "last")[:, 0].tolist() == [2.0, 4.0]
    assert pool_hidden(hidden, left, "last")[:, 0].tolist() == [3.0, 7.0]
    assert pool_hidden(hidden, left, "cls")[:, 0].tolist() == [0.0, 4.0]
    assert pool_hidden(hidden, left, "mean")[:, 0].tolist() == [2.0, 7.0]

    class Stub(nn.Module):                     # encode_pooled reads last_hidden_state of the encoder
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"last_hidden_state": hidden})()
    assert encode_pooled(Stub(), "last", right, right)[:, 0].tolist() == [2.0, 4.0]


def test_empty_text_gets_one_real_token(tmp_path):
    """Qwen2's tokenizer adds no special token: the empty padding text would be fully masked."""
    tower = build(config(tmp_path, "qwen2")).item_tower
    assert tower.attention_mask_0[0].tolist()[:2] == [1, 0]
    assert tower.input_ids_0[0, 0] == load_tokenizer(tiny_decoders() / ALL["qwen2"]).pad_token_id
    assert (tower.attention_mask_0.sum(1) >= 1).all()


def test_pooling_choice_and_explicit_pooling(tmp_path):
    assert build(config(tmp_path, "bert")).item_tower.pooling == "cls"            # today's choices kept
    assert build(config(tmp_path, "opt")).item_tower.pooling == "mean"
    assert build(config(tmp_path, "llama", pooling="mean")).item_tower.pooling == "mean"
    with pytest.raises(InputError, match="--pooling 'first' must be one of auto, cls, mean, last"):
        config(tmp_path, pooling="first")


def test_unknown_and_encoder_decoder_model_types_are_refused(tmp_path):
    folder = tmp_path / "enc"
    shutil.copytree(tiny_decoders() / ALL["llama"], folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "not_a_model"}))
    with pytest.raises(InputError, match=r"cannot read .*enc/config\.json .*model type `not_a_model`"):
        load_text_encoder(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(InputError, match="encoder-decoder"):
        load_text_encoder(folder)


# ----------------------------------------------------------------------------- freezing

@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_decoder_freezing_of_top_blocks(family):
    model = load_text_encoder(tiny_decoders() / ALL[family])
    names = [name for name, _ in model.named_parameters()]
    assert transformer_blocks(model) == ("layers.", ("norm.weight",))
    top = [n for n in names if n.startswith("layers.1.")]
    freeze_encoder(model, family, trainable_layers=1)
    assert trainable(model) == top + ["norm.weight"]
    freeze_encoder(model, family, trainable_layers=0)
    assert trainable(model) == []
    per_block = len(top)
    freeze_encoder(model, family, freeze_paras_before=1 + per_block)           # embeddings + block 0
    assert trainable(model) == top + ["norm.weight"]
    with pytest.raises(InputError, match="exceeds"):
        freeze_encoder(model, family, trainable_layers=3)


def test_gpt2_blocks_are_found_generically():
    from transformers import GPT2Config, GPT2Model
    model = GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    assert transformer_blocks(model) == ("h.", ("ln_f.weight", "ln_f.bias"))
    freeze_encoder(model, "gpt2", trainable_layers=1)
    assert trainable(model) == [n for n, _ in model.named_parameters() if n.startswith(("h.1.", "ln_f."))]


# ----------------------------------------------------------------------------- PEFT modes

def expected_trainable(family: str, mode: str, names: list[str]) -> list[str]:
    """The encoder parameters each mode must train, from their names alone."""
    if mode == "lora":
        targets = ("query.", "value.") if family == "bert" else ("q_proj.", "v_proj.")
        return [n for n in names if "lora_" in n and any(t in n for t in targets)]
    if mode == "ia3":
        return [n for n in names if ".ia3_l." in n]
    if mode == "bitfit":
        return [n for n in names if n.endswith(".bias") and not n.startswith("pooler.")]
    return [n for n in names if "LayerNorm." in n or "layernorm." in n or n == "norm.weight"]   # ln


@pytest.mark.parametrize("family, mode", [("llama", "lora"), ("bert", "lora"), ("qwen2", "ia3"),
                                          ("bert", "bitfit"), ("qwen2", "bitfit"), ("llama", "ln"),
                                          ("bert", "ln")])
def test_each_peft_mode_trains_exactly_its_parameters(family, mode, tmp_path):
    cfg = config(tmp_path, family, peft=mode, drop_rate=0.0)
    model = build(cfg)
    encoder = model.item_tower.encoder
    names = [n for n, _ in encoder.named_parameters()]
    want = expected_trainable(family, mode, names)
    assert want and trainable(encoder) == want
    if mode == "ia3":
        assert {n.split(".")[-3] for n in want} == {"q_proj", "v_proj", "down_proj"}     # peft's Qwen2 defaults
    optimizer = build_optimizer(model, cfg)
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == \
        {id(p) for n, p in encoder.named_parameters() if n in want}                     # the fine_tune_lr group
    assert optimizer.param_groups[1]["lr"] == cfg.fine_tune_lr
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    batch = first_batch(cfg)
    model.eval()
    with torch.no_grad():
        loss_before = model.calculate_loss(batch).item()
        pooled_before = model.item_tower.pooled(*model.item_tower.tokens(0, torch.arange(1, 9)))
    model.train()
    model.calculate_loss(batch).backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        assert model.calculate_loss(batch).item() != pytest.approx(loss_before, abs=1e-6)
        pooled_after = model.item_tower.pooled(*model.item_tower.tokens(0, torch.arange(1, 9)))
    assert (pooled_after - pooled_before).abs().max() > 1e-7          # the encoder's output moved
    changed = [n for n, p in encoder.named_parameters() if not torch.equal(p, before[n])]
    assert changed and set(changed) <= set(want)                      # frozen weights untouched


def test_lora_targets_are_used_and_checked(tmp_path):
    model = build(config(tmp_path, peft="lora", lora_targets="o_proj,down_proj", lora_r=4))
    lora = trainable(model.item_tower.encoder)
    assert {n.split(".")[-4] for n in lora} == {"o_proj", "down_proj"} and len(lora) == 2 * 2 * 2
    a = model.item_tower.encoder.layers[0].self_attn.o_proj.lora_A["default"].weight
    assert a.shape == (4, 32)
    with pytest.raises(InputError, match=r"--lora_targets typo match no module of LlamaModel; .*q_proj"):
        build(config(tmp_path, peft="lora", lora_targets="q_proj,typo"))


def test_bitfit_on_a_model_without_biases_is_refused(tmp_path):
    with pytest.raises(InputError, match="LlamaModel has no bias parameters"):
        build(config(tmp_path, "llama", peft="bitfit"))


@pytest.mark.parametrize("values, fragment", [
    (dict(item_tower="id", peft="lora"), "--peft lora adapts a text encoder, but --item_tower is id"),
    (dict(item_tower="vision", peft="ia3"), "--peft ia3 adapts a text encoder"),
    (dict(peft="lora", two_stage=True), "--peft lora with --two_stage"),
    (dict(peft="bitfit", trainable_layers=2), "--trainable_layers 2 must be off: override with --trainable_layers -1"),
    (dict(lora_r=16), "--lora_r 16 only apply with --peft lora"),
    (dict(peft="bitfit", lora_targets="q_proj"), "--lora_targets q_proj only applies with --peft lora or ia3"),
    (dict(peft="lora", lora_targets="q_proj, "), "must be module names"),
    (dict(peft="adapter"), "--peft 'adapter' must be one of none, lora, ia3, bitfit, ln"),
])
def test_bad_peft_values_are_refused(values, fragment, tmp_path):
    with pytest.raises(InputError, match=fragment):
        config(tmp_path, **values)


def test_peft_against_the_scripts_own_trainable_layers_names_the_script_and_the_override(tmp_path, capsys):
    """train_minilm.py sets trainable_layers 2 in its block: `--peft lora` is refused naming that
    value, where it comes from and the exact override, not flags the user never typed."""
    import runpy
    from morec.launch import main
    runs, script = tmp_path / "runs", REPO / "inbatch_sasrec_e2e_text" / "train_minilm.py"
    params = runpy.run_path(str(script), run_name="params_only")["params"]
    with pytest.raises(SystemExit) as stop:
        main(params, "train", str(script), ["--peft", "lora", "--runs_dir", str(runs), "--device", "cpu"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("error:") == 1 and not runs.exists()
    assert "--trainable_layers 2 must be off: override with --trainable_layers -1" in err
    assert "not on the command line: --trainable_layers 2 from train_minilm.py" in err
    assert "freeze_paras_before" not in err                  # 0 in the block: not part of the problem


def test_bad_peft_input_exits_2_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    code, _, err = run_in_process("inbatch_sasrec_e2e_text", "train", "--peft", "lora", "--runs_dir",
                                  str(runs), "--device", "cpu", capsys=capsys)
    assert code == 2 and "--peft lora adapts a text encoder" in err and not runs.exists()
    code, _, err = run_in_process(
        "inbatch_sasrec_e2e_text", "train", "--item_tower", "text", "--bert_model_load", ALL["llama"],
        "--pretrained_dir", str(tiny_decoders()), "--cache_dir", str(tmp_path / "cache"), "--peft", "lora",
        "--lora_targets", "nothing_here", "--runs_dir", str(runs), "--device", "cpu", "--epoch", "1",
        capsys=capsys)
    assert code == 2 and err.count("error:") == 1 and "nothing_here match no module" in err
    assert not runs.exists()


def test_decoder_folder_without_tokenizer_is_refused(tmp_path):
    folder = tmp_path / "enc" / "llama_no_tok"
    shutil.copytree(tiny_decoders() / ALL["llama"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(InputError, match=r"llama_no_tok is incomplete: missing tokenizer\.json"):
        build(config(tmp_path, pretrained_dir=str(tmp_path / "enc"), bert_model_load="llama_no_tok"))


# ----------------------------------------------------------------------------- checkpoints and runs

def lora_run(tmp_path: Path, pretrained: Path, **values):
    return config(tmp_path, pretrained_dir=str(pretrained), peft="lora", batch_size=128, **values)


def test_one_epoch_lora_llama_run_checkpoint_and_test(tmp_path, caplog):
    """SASRec in-batch on ml-100k with a tiny Llama + LoRA: the checkpoint holds the adapters and
    the recommender only; rebuilt from the encoder folder + checkpoint, the model reproduces the
    valid metrics exactly; a changed encoder folder is refused at test."""
    pretrained = tmp_path / "enc"
    shutil.copytree(tiny_decoders() / ALL["llama"], pretrained / ALL["llama"])
    cfg = lora_run(tmp_path, pretrained, epoch=1)
    run = tmp_path / "runs" / "lora"
    with caplog.at_level(logging.INFO, logger="morec"):
        best = train(cfg, run)
    assert "trainable encoder tensors: 8 of 28 (2048 of 54688 parameters" in caplog.text
    assert "frozen pretrained encoder tensors (0.20 MiB) are not saved" in caplog.text
    assert "checkpoint_last.pt: 0.1" in caplog.text
    checkpoint = load_checkpoint(run / "checkpoint_best.pt")
    data = ml100k()
    model = build_run_model(cfg, data, CPU)
    full = model.state_dict()
    saved = checkpoint["model"]
    encoder_saved = sorted(k for k in saved if ".encoder." in k)
    assert encoder_saved and all(".lora_A." in k or ".lora_B." in k for k in encoder_saved)
    assert set(saved) == set(full) - reloaded_keys(model) and "item_tower.fc.weight" in saved
    assert any(not k.startswith("item_tower.") for k in saved)                   # the user encoder
    frozen_bytes = sum(full[k].numel() * full[k].element_size() for k in reloaded_keys(model))
    assert (run / "checkpoint_best.pt").stat().st_size < frozen_bytes         # the base weights are not in it
    assert len(checkpoint["reloaded_sha1"]) == 40
    load_model_weights(model, checkpoint, run / "checkpoint_best.pt")
    valid, _ = evaluate(model, data, "valid", cfg, CPU)
    assert valid == best["valid"] == checkpoint["valid"]
    result = training.test(cfg, run)
    assert result["valid"] == best["valid"] and 0 <= result["test"]["HR@10"] <= 1
    sys.path.insert(0, str(REPO / "pretrained_models"))
    from make_tiny import make_tiny_llama
    make_tiny_llama(pretrained / ALL["llama"], seed=1)                   # other frozen weights
    with pytest.raises(InputError, match="random_tiny_llama/model.safetensors changed since training"):
        training.test(cfg, run)


def test_lora_run_resumed_after_one_epoch_equals_the_uninterrupted_run(tmp_path):
    whole = train(lora_run(tmp_path, tiny_decoders(), epoch=2, lora_dropout=0.05), tmp_path / "runs" / "whole")
    train(lora_run(tmp_path, tiny_decoders(), epoch=1, lora_dropout=0.05), tmp_path / "runs" / "cut")
    resumed = train(lora_run(tmp_path, tiny_decoders(), epoch=2, lora_dropout=0.05, resume=True),
                    tmp_path / "runs" / "cut")
    assert resumed == whole
    history = [json.loads(line) for line in (tmp_path / "runs" / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2


def test_full_fine_tuning_checkpoints_are_unchanged(tmp_path):
    model = build(config(tmp_path, "bert"))
    assert reloaded_keys(model) == set() and trained_state(model).keys() == model.state_dict().keys()


def test_lora_inside_a_fusion_tower_leaves_out_the_frozen_encoder(tmp_path):
    model = build(config(tmp_path, peft="lora", fusion="add"))
    skipped = reloaded_keys(model)
    assert skipped and all(k.startswith("item_tower.modality.encoder.") for k in skipped)
    kept = trained_state(model)
    assert "item_tower.id_tower.embedding.weight" in kept
    assert sorted(k for k in kept if ".encoder." in k) == sorted(
        f"item_tower.modality.encoder.{n}" for n in trainable(model.item_tower.modality.encoder))


def test_the_pad_token_set_for_a_decoder_is_part_of_the_token_cache_key(tmp_path):
    from morec.data.text import item_tokens
    items, cache = ml100k().items, tmp_path / "cache"
    tok = load_tokenizer(tiny_decoders() / ALL["llama"])                       # pad = </s> (set)
    eos = item_tokens(items, tok, [("title", 12)], cache, "ml-100k")[0]
    tok.pad_token = "<unk>"
    unk = item_tokens(items, tok, [("title", 12)], cache, "ml-100k")[0]
    assert len(list((cache / "tokens").iterdir())) == 2                     # another key, another file
    padded = eos.attention_mask == 0
    assert padded.any() and (eos.input_ids[padded] == tok.eos_token_id).all()
    assert (unk.input_ids[padded] == tok.unk_token_id).all()
    assert (eos.input_ids[~padded] == unk.input_ids[~padded]).all()
