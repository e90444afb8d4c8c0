"""Every text experiment script: train_*.py for one epoch on ml-100k with a tiny random encoder,
then its test_*.py; and scripts/extract_features.py. Run in this process (importing transformers
once) with the command-line overrides a user would type."""
from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import sys
from pathlib import Path

import pytest

from conftest import REPO
from script_modules import import_script
from text_helpers import TINY, tiny_encoders

SCRIPTS = {
    "bce_text/main-end2end": ["bert_base", "roberta_base", "opt_125m", "bert_tiny", "bert_small"],
    "bce_text/main-end2end-dssm": ["bert_base", "roberta_base"],
    "bce_text/main-2stage": ["bert_base_dnn0", "bert_base_dnn8"],
    "bce_text/id_plus_mo-end2end": ["bert_add", "bert_cat"],
    "bce_text/id_plus_mo-2stage": ["bert_add", "bert_cat"],
    "inbatch_sasrec_e2e_text": ["bert_base", "bert_small", "roberta_base", "minilm", "minilm_2stage", "iisan", "missrec"],
}
CASES = [(folder, name) for folder, names in SCRIPTS.items() for name in names]
LAST_LINE = re.compile(r"^test HR@10 \d+\.\d\d NDCG@10 \d+\.\d\d$")


def family(name: str) -> str:
    return "roberta" if "roberta" in name else "opt" if "opt" in name else "bert"


def run_in_process(script: Path, argv: list[str]) -> str:
    """Run `python script argv...` here; returns stdout. The script's folder comes first on
    sys.path (as for `python script`) and its train_* module is imported afresh."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    train_module = "train_" + script.stem.split("_", 1)[1]
    sys.modules.pop(train_module, None)
    sys.argv, sys.path[0:0] = [str(script), *argv], [str(script.parent)]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit:
        pytest.fail(f"{script} exited with {exit.code}")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.modules.pop(train_module, None)
    return out.getvalue()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One token / feature cache for all scripts, as in a real checkout."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("folder, name", CASES, ids=[f"{f}/{n}" for f, n in CASES])
def test_train_then_test_one_epoch_with_a_tiny_encoder(folder, name, tmp_path, shared_cache):
    common = ["--runs_dir", str(tmp_path / "runs"), "--label", "smoke", "--device", "cpu",
              "--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY[family(name)],
              "--cache_dir", str(shared_cache)]
    params = runpy.run_path(str(REPO / folder / f"train_{name}.py"), run_name="params_only")["params"]
    if isinstance(params.get("dnn_layers"), list):                          # a grid (script or common.py)
        common += ["--dnn_layers", "2"]                                        # one grid point
    speed = ["--epoch", "1", "--num_words_title", "12", "--embedding_dim", "32",
             "--batch_size", "512" if "dssm" in folder else "128"]
    saved, log = train_then_test(REPO / folder, name, common + speed, common, tmp_path / "runs" / "smoke")
    assert saved["item_tower"] == "text" and saved["bert_model_load"] == TINY[family(name)]
    if not saved["two_stage"]:
        assert re.search(r"trainable encoder tensors: \d+ of \d+", log)


def train_then_test(folder: Path, name: str, train_args: list[str], test_args: list[str],
                    run: Path) -> tuple[dict, str]:
    """Run train_NAME.py then test_NAME.py of `folder` (one epoch expected) and check what the
    test printed and wrote; returns the run's saved config and its train.log."""
    run_in_process(folder / f"train_{name}.py", train_args)
    stdout = run_in_process(folder / f"test_{name}.py", test_args)
    assert LAST_LINE.match(stdout.strip().splitlines()[-1]), stdout
    result = json.loads((run / "test_metrics.json").read_text())
    assert result["best_epoch"] == 1 and result["num_users"] == 943
    log = (run / "train.log").read_text()
    assert "trainable recommender tensors" in log
    return json.loads((run / "config.json").read_text()), log


def test_trainable_layers_are_logged(tmp_path, shared_cache):
    run_in_process(REPO / "inbatch_sasrec_e2e_text" / "train_minilm.py", [
        "--runs_dir", str(tmp_path / "runs"), "--label", "frozen", "--device", "cpu", "--epoch", "1",
        "--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY["bert"], "--cache_dir",
        str(shared_cache), "--trainable_layers", "1", "--num_words_title", "12", "--batch_size", "256"])
    log = (tmp_path / "runs" / "frozen" / "train.log").read_text()
    assert "trainable encoder tensors: 16 of 39" in log                       # the top block only


def test_extract_features_script(tmp_path, capsys):
    extract_features = import_script("extract_features")
    args = ["--pretrained_dir", str(tiny_encoders()), "--bert_model_load", TINY["opt"],
            "--cache_dir", str(tmp_path), "--device", "cpu", "--news_attributes", "title,abstract"]
    assert extract_features.main(args) == 0
    line = capsys.readouterr().out.strip()
    assert re.match(rf"^{re.escape(str(tmp_path))}/features/ml-100k-{TINY['opt']}-title30\+abstract50-\w+\.npy 1410x32 ", line)
    assert extract_features.main(args) == 0                                    # cached: read again
    assert extract_features.main(["--bert_model_load", "no_such_encoder", "--cache_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: encoder folder") and "no_such_encoder not found" in err and "Traceback" not in err
