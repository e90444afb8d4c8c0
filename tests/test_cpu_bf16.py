"""bf16 on the CPU (docs/parameters.md `cpu_amp`): an explicit opt-in trains under
torch.autocast("cpu", torch.bfloat16) and is recorded as the run's precision; the default CPU
run stays fp32 with its label unchanged; a CPU without bf16 instructions is refused; a run of
one precision does not resume in the other."""
import json

import pytest
import torch

import morec.parts
import morec.train
from conftest import run_in_process
from morec.config import Config, make_config, run_label, run_setting
from morec.errors import InputError

SMALL = ("--epoch", "1", "--max_seq_len", "10", "--device", "cpu")


def train_once(tmp_path, capsys, *extra):
    """One epoch of IDRec SASRec (in-batch) on ml-100k, in runs/<label>."""
    return run_in_process("inbatch_sasrec_e2e_text", "train", *SMALL, "--runs_dir", str(tmp_path), *extra,
                          capsys=capsys)


def record_linear_dtypes(monkeypatch) -> set:
    """Make the run's model note (training?, output dtype) of every nn.Linear it calls."""
    seen = set()
    build = morec.train.build_run_model

    def build_and_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(lambda mod, inputs, out: seen.add((mod.training, out.dtype)))
        return model
    monkeypatch.setattr(morec.train, "build_run_model", build_and_hook)
    return seen


def only_run(runs_dir):
    [folder] = [path for path in runs_dir.iterdir() if path.is_dir()]
    return folder


def test_opt_in_trains_under_bf16_and_the_label_says_so(tmp_path, capsys, monkeypatch):
    if not morec.parts.cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions (the refusal is tested below)")
    seen = record_linear_dtypes(monkeypatch)
    code, _, err = train_once(tmp_path / "bf16", capsys, "--cpu_amp", "true")
    assert code == 0, err
    assert (True, torch.bfloat16) in seen and (True, torch.float32) not in seen     # training matmuls: bf16
    assert (False, torch.float32) in seen and (False, torch.bfloat16) not in seen   # evaluation stays fp32
    bf16 = only_run(tmp_path / "bf16")
    assert json.loads((bf16 / "config.json").read_text())["setting"] == {"world_size": 1, "precision": "bf16"}

    seen.clear()
    code, _, err = train_once(tmp_path / "fp32", capsys)                              # the default CPU run
    assert code == 0, err
    assert seen == {(True, torch.float32), (False, torch.float32)}
    fp32 = only_run(tmp_path / "fp32")
    assert json.loads((fp32 / "config.json").read_text())["setting"] == {"world_size": 1, "precision": "fp32"}
    assert "-w1-" not in fp32.name and bf16.name != fp32.name
    assert bf16.name.replace("-w1-bf16", "") == fp32.name          # the same values, another precision
    losses = [[json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
              for run in (bf16, fp32)]
    assert losses[0] != losses[1] and all(abs(a - b) < 0.05 * abs(b) for a, b in zip(*losses))


def test_default_cpu_setting_and_label_are_unchanged():
    cfg = Config(device="cpu")
    assert run_setting(cfg) == {"world_size": 1, "precision": "fp32"}
    assert run_label(cfg) == "ml-100k-sasrec-id-inbatch-d64-bs64-lr0.001-l20.1-dr0.1-L20-s12345-bf21a9e8"
    opted = Config(device="cpu", cpu_amp=True)
    assert run_setting(opted)["precision"] == "bf16"
    assert run_label(opted) == "ml-100k-sasrec-id-inbatch-d64-bs64-lr0.001-l20.1-dr0.1-L20-s12345-w1-bf16-bf21a9e8"
    for values, on in ((cfg, False), (opted, True)):
        with morec.parts.autocast(values, torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu") is on
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if on else torch.float32)


@pytest.mark.parametrize("values, wanted", [
    ({"cpu_amp": True, "amp": False}, "--cpu_amp true trains under bf16 autocast on the CPU, but --amp is False"),
    ({"cpu_amp": True, "amp_dtype": "fp16"}, "--amp_dtype fp16: use --amp true --amp_dtype bf16"),
])
def test_opt_in_needs_bf16_amp(values, wanted):
    from morec.config_checks import validate
    with pytest.raises(InputError, match=wanted):
        validate(make_config(values))


def test_a_cpu_without_bf16_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(morec.parts, "cpu_supports_bf16", lambda: False)
    code, _, err = train_once(tmp_path, capsys, "--cpu_amp", "true", "--label", "run")
    assert code == 2 and "this CPU has no bf16 instructions" in err and "drop --cpu_amp" in err
    assert not (tmp_path / "run").exists()
    morec.parts.check_cpu_bf16(Config(device="cpu"), torch.device("cpu"))          # fp32: nothing to refuse


@pytest.mark.parametrize("lines, supported", [
    (["processor\t: 0", "flags\t\t: fpu sse avx512f avx512_bf16 amx_tile"], True),   # x86 with AVX512-BF16
    (["flags\t\t: fpu sse avx2 amx_bf16"], True),                                     # x86 with AMX
    (["Features\t: fp asimd sve bf16 i8mm"], True),                                   # ARM (e.g. Graviton3)
    (["flags\t\t: fpu sse avx2 avx512f avx512_vnni", "bugs\t\t: bf16"], False),       # no bf16 instructions
])
def test_bf16_support_is_read_from_cpuinfo(lines, supported, tmp_path, monkeypatch):
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):           # as on a CPU torch finds none
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    (tmp_path / "cpuinfo").write_text("\n".join(lines) + "\n")
    assert morec.parts.cpu_supports_bf16(tmp_path / "cpuinfo") is supported
    assert morec.parts.cpu_supports_bf16(tmp_path / "missing") is False


def test_resume_in_another_precision_is_refused(tmp_path, capsys):
    code, _, err = train_once(tmp_path, capsys, "--label", "run")                    # fp32
    assert code == 0, err
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    code, _, err = train_once(tmp_path, capsys, "--label", "run", "--epoch", "2", "--resume", "--cpu_amp", "true")
    assert code == 2 and "error: --resume of" in err and "--cpu_amp" in err
    assert "with setting {'world_size': 1, 'precision': 'bf16'}" in err and "'precision': 'fp32'" in err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before                # nothing trained


def test_quality_pairs_runs_of_one_system_across_precisions():
    """bench_cpu_bf16 --quality compares bf16 with fp32 within each system (everything but seed and
    precision equal), never an ID run with a text run; a folder without both precisions is refused."""
    from types import SimpleNamespace
    from script_modules import import_script
    bench = import_script("bench_cpu_bf16")

    def run(tower: str, precision: str, seed: int):
        config = {"item_tower": tower, "seed": seed, "lr": 1e-3, "setting": {"world_size": 1, "precision": precision}}
        if tower == "text":
            config["bert_model_load"] = "all_minilm_l6_v2"
        return SimpleNamespace(config=config)

    runs = [run("id", "fp32", 1), run("id", "bf16", 1), run("text", "fp32", 1), run("text", "fp32", 2),
            run("text", "bf16", 2), run("id", "fp32", 2)]
    pairs = dict(bench.precision_pairs(runs))
    assert sorted(pairs) == ["ID E2E", "text: all_minilm_l6_v2 E2E"]
    assert [r.config["seed"] for r in pairs["ID E2E"]["fp32"]] == [1, 2]
    assert [r.config["seed"] for r in pairs["ID E2E"]["bf16"]] == [1]
    assert all(r.config["item_tower"] == "text" for side in pairs["text: all_minilm_l6_v2 E2E"].values() for r in side)
    assert bench.precision_pairs([run("id", "fp32", 1), run("text", "bf16", 1)]) == []
