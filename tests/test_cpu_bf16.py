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
    assert bench.comparisons(pairs["ID E2E"]) == [("bf16", "fp32")]

    fp32_loss = run("id", "bf16", 3)
    fp32_loss.config["amp_fp32_loss"] = True                   # its own side, of the same system
    pairs = dict(bench.precision_pairs(runs + [fp32_loss]))
    assert [r.config["seed"] for r in pairs["ID E2E"]["bf16 + fp32 loss"]] == [3]
    assert bench.comparisons(pairs["ID E2E"]) == [("bf16", "fp32"), ("bf16 + fp32 loss", "fp32"),
                                                  ("bf16 + fp32 loss", "bf16")]



def small_batch(model_name: str, loss: str) -> dict:
    """A hand-made batch over 12 items (4 users) for build_model's SASRec or DSSM."""
    if model_name == "sasrec":
        batch = {"seqs": torch.tensor([[0, 3, 5, 7, 2, 9, 4], [1, 2, 3, 4, 5, 6, 8]])}       # (B, L+1)
        negatives = torch.tensor([[10, 11, 12, 1, 2, 3], [7, 9, 10, 11, 12, 1]])           # (B, L)
    else:
        batch = {"users": torch.tensor([1, 2, 3]), "items": torch.tensor([4, 5, 6]),
                 "user_items": torch.tensor([[4, 0], [5, 1], [6, 2]])}
        negatives = torch.tensor([[7, 8, 9], [10, 11, 12], [1, 2, 3]])                     # (B, K)
    return {**batch, "negatives": negatives} if loss == "bce" else batch


@pytest.mark.parametrize("model_name, loss, function", [
    ("sasrec", "inbatch", "sasrec_inbatch_loss"), ("sasrec", "bce", "sasrec_bce_loss"),
    ("dssm", "inbatch", "inbatch_debiased_loss"), ("dssm", "bce", "bce_loss")])
def test_fp32_loss_scores_in_fp32_what_the_bf16_encoders_give(model_name, loss, function, monkeypatch):
    """--amp_fp32_loss: under bf16 autocast the loss function gets fp32 inputs and returns, to the
    bit, what it returns outside autocast on them (its scores are fp32); without it the scores
    are bf16 matmuls and differ. BCE (SASRec and DSSM) forms its scores as elementwise products,
    which autocast leaves in fp32: there the option changes nothing, to the bit."""
    import morec.models.recommender as recommender
    from morec.models.build import build_model
    from morec.resolve import model_spec
    torch.manual_seed(0)
    values = {"model": model_name, "loss": loss, "max_seq_len": 6, "drop_rate": 0.0, "neg_num": 3}
    model = build_model(model_spec(make_config(values)), 12, 4, torch.rand(13) + 0.1)
    assert model.fp32_loss is False                                    # the default
    batch, original, calls = small_batch(model_name, loss), getattr(recommender, function), []

    def recording(*args):
        calls.append((args, original(*args)))
        return calls[-1][1]
    monkeypatch.setattr(recommender, function, recording)
    for fp32_loss in (True, False):
        model.fp32_loss = fp32_loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(batch)
    (fp32_args, fp32_rows), (bf16_args, bf16_rows) = calls

    def outside_autocast(args):
        return original(*[a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args])
    assert all(a.dtype != torch.bfloat16 for a in fp32_args if isinstance(a, torch.Tensor))
    assert fp32_rows.dtype == torch.float32 and torch.equal(fp32_rows, outside_autocast(fp32_args))
    if loss == "bce":
        assert torch.equal(fp32_rows, bf16_rows)
    else:
        assert not torch.allclose(bf16_rows.float(), outside_autocast(bf16_args), rtol=0, atol=1e-6)


def test_fp32_loss_is_in_the_label_only_where_it_changes_something():
    bf16 = Config(device="cpu", cpu_amp=True)
    assert run_label(Config(device="cpu", amp_fp32_loss=True)) == run_label(Config(device="cpu"))     # fp32 run
    assert run_label(Config(device="cpu", cpu_amp=True, amp_fp32_loss=True)) != run_label(bf16)
    assert run_label(bf16).endswith("-w1-bf16-bf21a9e8")                              # old bf16 labels hold
    from morec.models.build import build_model
    from morec.resolve import model_spec
    model = build_model(model_spec(make_config({"amp_fp32_loss": True})), 12, 4, torch.ones(13))
    assert model.fp32_loss is True
