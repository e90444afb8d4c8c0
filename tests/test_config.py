"""Command-line overrides, grids and run labels."""
import pytest

from morec.config import Config, make_config, parse_overrides, run_label
from morec.errors import InputError
from morec.launch import expand_grid
from study_helpers import assert_study_refuses


def test_overrides_are_typed_like_the_defaults():
    got = parse_overrides(["--epoch", "3", "--lr=5e-4", "--resume", "--amp", "false",
                           "--dataset", "a,b", "--embedding_dim", "32,64"])
    assert got == {"epoch": 3, "lr": 5e-4, "resume": True, "amp": False, "dataset": "a,b",
                   "embedding_dim": [32, 64]}


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "3"], "unknown parameter --epochs"),
    (["--epoch", "three"], "--epoch expects a int"),
    (["--amp", "maybe"], "--amp expects true/false"),
    (["epoch"], "unexpected argument"),
    (["--lr"], "--lr needs a value"),
])
def test_bad_overrides(argv, message):
    with pytest.raises(InputError, match=message):
        parse_overrides(argv)


def test_make_config_checks_types():
    assert make_config({"lr": 1}).lr == 1.0
    with pytest.raises(InputError, match="embedding_dim = 'big' should be a int"):
        make_config({"embedding_dim": "big"})


def test_grid_expansion():
    grid = expand_grid({"lr": [1e-3, 1e-4], "embedding_dim": [32, 64], "seed": 1})
    assert len(grid) == 4 and {"lr": 1e-4, "embedding_dim": 64, "seed": 1} in grid


def test_label_depends_on_defining_values_only():
    base = run_label(Config(device="cpu"))              # one fp32 process on any machine (run_setting)
    assert run_label(Config(epoch=3, device="cpu", resume=True, patience=2)) == base
    assert run_label(Config(lr=5e-4, device="cpu")) != base
    assert run_label(Config(neg_num=3, device="cpu")) != base          # not in the readable prefix, but hashed
    assert base.startswith("ml-100k-sasrec-id-inbatch-d64-bs64-lr0.001")


def test_label_ignores_the_values_an_item_tower_does_not_read():
    base = run_label(Config())                                      # an ID run
    assert run_label(Config(bert_model_load="bert_base_uncased", trainable_layers=2, fine_tune_lr=5e-5,
                            cv_model_load="swin_base", image_size=64)) == base
    text = run_label(Config(item_tower="text"))
    assert run_label(Config(item_tower="text", cv_model_load="swin_base")) == text
    assert run_label(Config(item_tower="text", bert_model_load="bert_base_uncased")) != text
    assert run_label(Config(item_tower="text", trainable_layers=2)) != text
    vision = run_label(Config(item_tower="vision"))
    assert run_label(Config(item_tower="vision", bert_model_load="bert_base_uncased")) == vision
    assert run_label(Config(item_tower="vision", image_size=64)) != vision


def test_every_config_field_has_a_validation_rule():
    from dataclasses import fields

    from morec.config_checks import RULES
    assert {f.name for f in fields(Config)} <= RULES.keys()


def test_every_shipped_experiment_script_is_valid():
    import runpy

    from conftest import REPO
    scripts = sorted(REPO.glob("*/*/train_*.py")) + sorted(REPO.glob("inbatch_*/train_*.py"))
    assert len(scripts) > 20
    for script in scripts:
        params = runpy.run_path(str(script), run_name="params_only")["params"]
        for point in expand_grid(params):
            make_config(point)                           # raises InputError naming the value


@pytest.mark.parametrize("values, message", [
    ({"lr": -1.0}, "--lr -1.0 must be a finite number > 0"),
    ({"lr": float("nan")}, "--lr nan must be a finite number > 0"),
    ({"l2_weight": -1.0}, "--l2_weight -1.0 must be a finite number >= 0"),
    ({"fine_tune_lr": float("inf")}, "--fine_tune_lr inf"),
    ({"drop_rate": 1.0}, r"--drop_rate 1.0 must be in \[0, 1\)"),
    ({"eval_batch_size": 0}, "--eval_batch_size 0 must be at least 1"),
    ({"eval_chunk_elems": 0}, "--eval_chunk_elems 0"),
    ({"patience": 0}, "--patience 0 must be at least 1"),
    ({"trainable_layers": -2}, "--trainable_layers -2 must be at least -1"),
    ({"loss": "mse"}, "--loss 'mse' must be one of inbatch, bce"),
    ({"device": "tpu"}, "--device 'tpu' must be auto, cpu, cuda or cuda:N"),
    ({"device": "cuda:x"}, "--device 'cuda:x'"),
    ({"model": "gru"}, "--model 'gru' must be one of sasrec, gru4rec, nextitnet, dssm"),
    ({"item_tower": "audio"}, "--item_tower 'audio'"),
    ({"fusion": "mul"}, "--fusion 'mul'"),
    ({"image_norm": "none"}, "--image_norm 'none'"),
    ({"news_attributes": "title,title"}, "--news_attributes 'title,title'"),
    ({"bert_model_load": "../bert"}, "--bert_model_load '../bert' must be a plain folder name"),
    ({"rdzv_endpoint": "host"}, "--rdzv_endpoint 'host' must be HOST:PORT"),
    ({"label": "a/b"}, "--label 'a/b' must be a plain folder name"),
    ({"dataset": "data/x"}, "pass --root_data_dir data --dataset x"),
    ({"dataset": "ml-100k/"}, r"drop the trailing slash \(--dataset ml-100k\)"),   # tab completion's slash
    ({"min_seq_len": 2}, "--min_seq_len 2 must be at least 3"),
    ({"embedding_dim": 63}, "--embedding_dim 63 must be divisible by --num_attention_heads 2"),
    ({"two_stage": True}, "need a modality item tower"),
    ({"resume": True, "overwrite": True}, "contradict each other"),
    ({"nnodes": 2}, "--nnodes > 1 needs --rdzv_endpoint"),
])
def test_nonsense_values_are_refused(values, message):
    with pytest.raises(InputError, match=message):
        make_config(values)


def test_all_bad_values_reported_in_one_line():
    with pytest.raises(InputError) as err:
        make_config({"lr": -1.0, "patience": 0, "loss": "mse"})
    assert str(err.value).count(";") == 2 and "\n" not in str(err.value)


def test_fields_of_other_branches_have_rules():
    from morec.config_checks import RULES
    assert RULES["ties"]("random") and RULES["ties"]("expected") is None


def test_an_empty_grid_or_a_repeated_run_is_refused(tmp_path):
    from morec.launch import run_dirs
    with pytest.raises(InputError, match="the grid of lr is an empty list"):
        run_dirs({"lr": []}, str(tmp_path / "train_x.py"), [])
    with pytest.raises(InputError, match="grid points 1 and 3 are the same run"):
        run_dirs({"seed": [1, 2, 1]}, str(tmp_path / "train_x.py"), [])
    assert len(run_dirs({"seed": [1, 2]}, str(tmp_path / "train_x.py"), [])) == 2


# SPEC "Training": the original's effective number of non-improving evaluations before stopping,
# shared by the ID and the modality scripts of each experiment folder.
FOLDER_PATIENCE = {
    "bce_text/main-end2end": 7, "bce_text/id_plus_mo-end2end": 7, "bce_text/id_plus_mo-2stage": 7,
    "bce_text/main-2stage": 11, "bce_text/main-end2end-dssm": 11,
    "bce_vision/main-end2end": 7, "bce_vision/id_plus_mo-end2end": 7, "bce_vision/id_plus_mo-2stage": 7,
    "bce_vision/main-2stage": 11, "bce_vision/main-end2end-dssm": 6,
    "inbatch_sasrec_e2e_text": 11, "inbatch_sasrec_e2e_vision": 7, "inbatch_sasrec_e2e_multimodal": 7,
}


def script_params(path) -> dict:
    """The `params` block of an experiment script (the script is imported, not run)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.params


@pytest.mark.parametrize("folder", sorted(FOLDER_PATIENCE))
def test_every_train_script_of_a_folder_has_the_original_patience(folder):
    from morec.config import REPO_ROOT
    scripts = sorted((REPO_ROOT / folder).glob("train_*.py"))
    assert len(scripts) >= 2, folder
    patience = {path.name: script_params(path)["patience"] for path in scripts}
    assert set(patience.values()) == {FOLDER_PATIENCE[folder]}, patience


def test_every_experiment_folder_is_in_the_patience_table():
    from morec.config import REPO_ROOT
    folders = {str(p.parent.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("*/**/train_*.py")
               if p.parent.name != "scripts" and "tests" not in p.parts}
    assert folders == set(FOLDER_PATIENCE)


@pytest.mark.parametrize("argv, message", [
    (["--id.patience", "3"], "--id.patience: a study gives all its runs one patience"),
    (["--mo.patience", "3"], "--mo.patience: a study gives all its runs one patience"),
    (["--patience", "3,5"], "--patience takes one value in a study"),
])
def test_a_study_refuses_unequal_patience(tmp_path, argv, message, monkeypatch):
    from morec.config import REPO_ROOT
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    import study_q1_morec_vs_idrec
    assert_study_refuses(study_q1_morec_vs_idrec.main, argv, message, tmp_path)


def test_bce_scripts_that_fine_tune_an_encoder_say_how_their_weight_decay_differs():
    """The original BCE code decayed the encoder with l2_weight; ours with fine_tune_l2_weight. The
    note stands once per folder, in the docstring of the shared block (common.py) the scripts use."""
    from morec.config import REPO_ROOT
    checked = 0
    for path in sorted(REPO_ROOT.glob("bce_*/*/train_*.py")):
        params = script_params(path)
        if params["item_tower"] == "id" or params.get("two_stage"):
            continue
        doc = " ".join((path.parent / "common.py").read_text().split('"""')[1].split())
        assert "decayed the encoder with `l2_weight`" in doc and "`fine_tune_l2_weight`" in doc, path
        checked += 1
    assert checked == 18
