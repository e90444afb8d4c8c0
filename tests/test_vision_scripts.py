"""Every vision experiment script: train_*.py for one epoch on ml-100k's rendered posters with a
tiny random encoder at 32 x 32 pixels, then its test_*.py (in this process, as test_text_scripts)."""
from __future__ import annotations

import re
import runpy

import pytest

from conftest import REPO
from test_text_scripts import train_then_test
from vision_helpers import IMAGE_SIZE, poster_root, tiny_for, tiny_vision_encoders

SCRIPTS = {
    "bce_vision/main-end2end": ["id", "resnet18", "resnet50", "swin_tiny", "swin_base", "mae_base"],
    "bce_vision/main-end2end-dssm": ["id", "resnet50", "swin_tiny"],
    "bce_vision/main-2stage": ["swin_tiny_dnn8", "resnet50_dnn8"],
    "bce_vision/id_plus_mo-end2end": ["swin_add", "swin_cat"],
    "bce_vision/id_plus_mo-2stage": ["swin_add", "swin_cat"],
    "inbatch_sasrec_e2e_vision": ["id", "resnet50", "swin_tiny", "swin_base"],
}
CASES = [(folder, name) for folder, names in SCRIPTS.items() for name in names]


def test_every_vision_script_is_covered():
    on_disk = {(str(p.parent.relative_to(REPO)), p.stem[len("train_"):])
               for pattern in ("bce_vision/*/train_*.py", "inbatch_sasrec_e2e_vision/train_*.py")
               for p in REPO.glob(pattern)}
    assert on_disk == set(CASES)
    for folder, name in CASES:
        assert (REPO / folder / f"test_{name}.py").exists()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("folder, name", CASES, ids=[f"{f}/{n}" for f, n in CASES])
def test_train_then_test_one_epoch_on_posters(folder, name, tmp_path, shared_cache):
    params = runpy.run_path(str(REPO / folder / f"train_{name}.py"), run_name="params_only")["params"]
    assert params["max_seq_len"] == 10                                          # image data: L = 10
    common = ["--runs_dir", str(tmp_path / "runs"), "--label", "smoke", "--device", "cpu",
              "--root_data_dir", str(poster_root()), "--cache_dir", str(shared_cache)]
    if params["item_tower"] == "vision":
        common += ["--pretrained_dir", str(tiny_vision_encoders()), "--cv_model_load",
                   tiny_for(params["cv_model_load"]), "--image_size", str(IMAGE_SIZE)]
    speed = ["--epoch", "1", "--embedding_dim", "32", "--batch_size", "2048" if "dssm" in folder else "256"]
    saved, log = train_then_test(REPO / folder, name, common + speed, common, tmp_path / "runs" / "smoke")
    assert saved["item_tower"] == params["item_tower"] and saved["max_seq_len"] == 10
    if params["item_tower"] == "vision" and not params.get("two_stage"):
        assert re.search(r"trainable encoder tensors: \d+ of \d+", log)
