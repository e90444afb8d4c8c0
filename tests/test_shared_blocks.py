"""Each experiment folder holds one shared block (common.py) that all its train_*.py scripts start
from, so the two sides of a comparison run with the same data, L, sizes, learning rates, patience,
epochs and seed: a script adds only what defines its item tower.

The check is on the resolved Config of every grid point of every script (what a run really uses),
not on the source: two scripts of a folder may differ only in TOWER_VALUES or in a value that
ALLOWANCES names for that folder, with the reason.
"""
from __future__ import annotations

import runpy
import sys

import pytest

from conftest import REPO
from morec.launch import run_dirs, shared_block

# What defines the item tower under comparison: the only values two scripts of a folder may differ in.
TOWER_VALUES = {
    "item_tower",                                             # id | text | vision | text+vision
    "bert_model_load", "cv_model_load", "pooling",            # which encoder, and how a text one pools
    "two_stage", "fusion", "mo_dnn_layers",                   # end to end or cached features; ID + modality fusion
    "mm_fusion", "mm_cached_branch", "ts_layers", "ts_mix_lr",  # text+vision fusion; two-stage feature layers
    "freeze_paras_before", "trainable_layers", "gradient_checkpointing",   # what of the encoder trains, and how
    "peft", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
    "side_network", "san_layers", "san_dim", "san_gate_init",   # IISAN's side network over the cached layers
    "fine_tune_lr", "fine_tune_l2_weight", "cv_fine_tune_lr",  # the encoder's own optimiser group
}

# A value outside TOWER_VALUES that the scripts of one folder may set differently: (folder, value) -> why.
ALLOWANCES = {
    ("bce_text/main-2stage", "dnn_layers"):
        "the value this folder compares: the depth of the MLP over the frozen BERT-base features (0 vs 8)",
    ("inbatch_sasrec_e2e_text", "dnn_layers"):
        "train_minilm_2stage.py's MLP over the frozen MiniLM features (a grid over 0 and 4); "
        "the end-to-end and ID towers have no such MLP",
    ("inbatch_sasrec_e2e_multimodal", "dnn_layers"):
        "train_text_vision_2stage.py's head over each branch's cached features; the end-to-end and ID towers have none",
    ("inbatch_sasrec_e2e_text", "model"):
        "train_missrec.py: MISSRec is a whole system (its own user encoder over interest tokens), compared as such",
    ("inbatch_sasrec_e2e_multimodal", "model"):
        "train_text_vision_missrec.py: MISSRec is a whole system (its own user encoder over interest tokens)",
}


def folders() -> list[str]:
    found = {str(p.parent.relative_to(REPO)) for p in REPO.glob("**/train_*.py")
             if p.relative_to(REPO).parts[0] not in ("scripts", "tests") and "runs" not in p.parts}
    return sorted(found)


FOLDERS = folders()


def train_scripts(folder: str) -> list:
    return sorted((REPO / folder).glob("train_*.py"))


def script_params(script) -> dict:
    return runpy.run_path(str(script), run_name="params_only")["params"]


def test_the_experiment_folders_are_the_papers():
    assert FOLDERS == sorted([f"{top}/{sub}" for top in ("bce_text", "bce_vision")
                              for sub in ("main-end2end", "main-end2end-dssm", "main-2stage",
                                          "id_plus_mo-end2end", "id_plus_mo-2stage")]
                             + ["inbatch_sasrec_e2e_multimodal", "inbatch_sasrec_e2e_text", "inbatch_sasrec_e2e_vision"])


def test_allowances_name_real_folders_and_no_tower_value():
    for folder, key in ALLOWANCES:
        assert folder in FOLDERS and key not in TOWER_VALUES, (folder, key)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_script_of_a_folder_starts_from_its_shared_block_unchanged(folder):
    shared = shared_block(str(REPO / folder / "train_x.py"))
    assert shared, f"{folder}/common.py holds no values"
    for script in train_scripts(folder):
        assert "shared_block(__file__)" in script.read_text(), f"{script.name} does not start from common.py"
        params = script_params(script)
        changed = {key for key, value in shared.items() if params.get(key) != value} - \
            {key for f, key in ALLOWANCES if f == folder}
        assert not changed, f"{folder}/{script.name} overrides shared values {sorted(changed)}: " \
                            "edit them in common.py (or give the script its own value and not common.py)"


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_scripts_of_a_folder_differ_only_in_their_item_tower(folder):
    """Every resolved value outside TOWER_VALUES and the folder's ALLOWANCES is equal in all grid
    points of all train scripts of the folder."""
    scripts = train_scripts(folder)
    assert len(scripts) >= 2, folder
    allowed = TOWER_VALUES | {key for f, key in ALLOWANCES if f == folder}
    seen: dict[str, dict] = {}                     # value name -> {value: first script that has it}
    for script in scripts:
        for cfg, _ in run_dirs(script_params(script), str(script), []):
            for key, value in cfg.to_dict().items():
                if key not in allowed:
                    seen.setdefault(key, {}).setdefault(value, script.name)
    differing = {key: values for key, values in seen.items() if len(values) > 1}
    assert not differing, f"{folder}: scripts differ in values a comparison needs equal: {differing}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_test_script_is_its_train_scripts_params(folder):
    for script in train_scripts(folder):
        name = script.name[len("train_"):-len(".py")]
        test_script = script.with_name(f"test_{name}.py")
        assert f"from train_{name} import params" in test_script.read_text(), test_script


def test_each_folder_reads_its_own_block_when_several_load_in_one_process():
    """Scripts of several folders run in one process (tests, scripts/submit_grid.py): each gets the
    common.py next to it, and no module named `common` is left behind to be picked up by another."""
    text = script_params(REPO / "bce_text" / "main-end2end" / "train_id.py")
    vision = script_params(REPO / "bce_vision" / "main-end2end" / "train_id.py")
    dssm = script_params(REPO / "bce_vision" / "main-end2end-dssm" / "train_id.py")
    assert (text["max_seq_len"], vision["max_seq_len"], dssm["max_seq_len"]) == (20, 10, 10)
    assert (text["model"], vision["model"], dssm["model"]) == ("sasrec", "sasrec", "dssm")
    assert "common" not in sys.modules


def test_a_script_editing_its_params_does_not_change_the_shared_block():
    first = script_params(REPO / "bce_text" / "main-end2end" / "train_id.py")
    first["lr"] = 123.0
    assert shared_block(str(REPO / "bce_text" / "main-end2end" / "train_id.py"))["lr"] == 1e-3


def test_a_folder_without_its_shared_block_is_one_clear_error(tmp_path):
    from morec.errors import InputError
    with pytest.raises(InputError, match="common.py not found"):
        shared_block(str(tmp_path / "train_x.py"))
    (tmp_path / "common.py").write_text("values = dict(lr=1e-3)\n")
    with pytest.raises(InputError, match="defines no `common = dict"):
        shared_block(str(tmp_path / "train_x.py"))
