"""scripts/study_q7_efficient_multimodal.py: its arms resolve to valid run configs (the default
set without LoRA; missrec_pre starts from the MISSRec run of its own seed on Q6's source
genres), bad arms and overrides are refused, and at toy size (tiny random encoders, one epoch,
one seed) every default arm trains and tests, and --table_only tabulates them with the cost
columns (trainable parameters, TPME) and the per-arm tables against IDRec and against MISSRec
from scratch, without training again."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import REPO
from morec.errors import InputError


@pytest.fixture()
def q7(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_q7_efficient_multimodal
    return study_q7_efficient_multimodal


def data_root(tmp_path: Path) -> Path:
    """A root_data_dir with ml-100k (the real tsv files, small posters); Q6's domains are made in it."""
    from vision_helpers import poster_root
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    for name in ("users.tsv", "items.tsv", "posters.lmdb"):
        (folder / name).symlink_to(poster_root() / "ml-100k" / name)
    return tmp_path / "data"


def test_the_arms_resolve_to_valid_run_configs(q7, tmp_path, monkeypatch):
    from study_common import study_runs
    seen = {}
    monkeypatch.setattr(q7, "run_study", lambda name, title, parts, args, overrides, *_: seen.update(
        parts=parts, overrides=overrides))
    root = data_root(tmp_path)
    q7.main(["--out", str(tmp_path / "out"), "--table_only", "--root_data_dir", str(root)])
    runs = study_runs(seen["parts"], seen["overrides"], tmp_path / "runs")        # make_config checks each
    arms = {}
    for cfg, _ in runs:
        arms.setdefault(q7.arm_of(vars(cfg)), []).append(cfg)
    assert sorted(arms) == sorted(["id", "ts_all", "iisan_text", "iisan_mm", "missrec", "missrec_mm", "missrec_pre"])
    assert all(len(cfgs) == 5 for cfgs in arms.values())                           # every default arm is cheap
    assert all(c.ts_layers == "all" and c.dnn_layers == 2 for k in ("ts_all", "iisan_text", "iisan_mm")
               for c in arms[k])
    assert all(c.image_lmdb == "posters.lmdb" and c.cv_model_load == "random_tiny_vit_mae"
               for k in ("iisan_mm", "missrec_mm") for c in arms[k])
    assert all(c.model == "missrec" and c.item_tower == "text+vision" and c.two_stage for c in arms["missrec_mm"])
    for cfg in arms["missrec_pre"]:
        assert not (Path(cfg.init_from) / "config.json").exists()                   # --table_only trains nothing
        assert Path(cfg.init_from).parent == tmp_path / "out" / "runs"
        assert Path(cfg.init_from).name.startswith("ml-100k-source-missrec-") and f"-s{cfg.seed}-" in cfg.init_from
    seen.clear()
    q7.main(["--out", str(tmp_path / "out"), "--table_only", "--root_data_dir", str(root), "--arms", "id,lora",
             "--seed", "1"])
    (lora,) = [c for c, _ in study_runs(seen["parts"], seen["overrides"], tmp_path / "runs") if c.item_tower == "text"]
    assert lora.peft == "lora" and lora.trainable_layers == -1 and not lora.two_stage
    seen.clear()
    q7.main(["--out", str(tmp_path / "out"), "--table_only", "--root_data_dir", str(root), "--arms",
             "lora,lora_top2_cached", "--seed", "1"])
    configs = [c for c, _ in study_runs(seen["parts"], seen["overrides"], tmp_path / "runs")]
    assert [q7.arm_of(vars(c)) for c in configs] == ["lora", "lora_top2_cached"]
    cached = configs[1]
    assert cached.peft == "lora" and cached.peft_layers == 2 and cached.cache_frozen_layers and not cached.two_stage


@pytest.mark.parametrize("argv, message", [
    (["--arms", "id,mamba"], "choose from id, ts_all, iisan_text, iisan_mm, missrec, missrec_mm, missrec_pre, lora, lora_top2_cached"),
    (["--arms", "ts_all", "--ts_layers", "last"], "contradicts the arm ts_all"),
    (["--init_from", "x"], "--init_from is set by the study"),
    (["--arms", "missrec_pre", "--dataset", "amazon-scientific"], "missrec_pre is pre-trained on ml-100k"),
])
def test_bad_arms_and_overrides_are_refused(q7, argv, message, tmp_path):
    with pytest.raises(InputError, match=message):
        q7.main(["--out", str(tmp_path / "out"), "--table_only"] + argv)


def test_toy_study_trains_every_default_arm_then_table_only_tabulates(q7, tmp_path, capsys):
    from test_multimodal import tiny_pretrained
    from text_helpers import TINY
    from vision_helpers import IMAGE_SIZE, TINY_VISION
    out = tmp_path / "out"
    argv = ["--out", str(out), "--root_data_dir", str(data_root(tmp_path)), "--seed", "1", "--epoch", "1",
            "--pretrained_dir", str(tiny_pretrained()), "--bert_model_load", TINY["bert"],
            "--cv_model_load", TINY_VISION["mae"], "--image_size", str(IMAGE_SIZE), "--num_words_title", "12",
            "--embedding_dim", "16", "--batch_size", "512", "--cache_dir", str(tmp_path / "cache"),
            "--progress", "false", "--device", "cpu"]
    q7.main(argv)
    printed = capsys.readouterr().out
    assert printed.count(": training") == 8 and printed.count("\ntest HR@10 ") == 8   # 7 arms + 1 source run
    (out / "q7_efficient_multimodal.csv").unlink()
    q7.main(argv + ["--table_only"])
    printed = capsys.readouterr().out
    assert ": training" not in printed
    rows = list(csv.DictReader(open(out / "q7_efficient_multimodal.csv", newline="")))
    assert len(rows) == 7
    assert all(float(r["trainable_parameters"]) > 0 and r["tpme"] not in ("", "nan") for r in rows), rows
    missrec = sorted(r["other"] for r in rows if r["model"] == "missrec" and r["item_tower"].startswith("text:"))
    assert len(missrec) == 2 and "init_from=ml-100k-source run" in missrec[1] and "init_from= " in missrec[0]
    assert sum(r["model"] == "missrec" and r["item_tower"].startswith("text+vision") for r in rows) == 1
    versus_idrec = (out / "q7_efficient_multimodal_vs_idrec.md").read_text()      # MISSRec rows against IDRec too
    assert all(f"| {arm} | 1 |" in versus_idrec for arm in ("ts_all", "iisan_text", "iisan_mm", "missrec", "missrec_mm", "missrec_pre"))
    assert "| missrec_pre | 1 |" in (out / "q7_efficient_multimodal_pretraining.md").read_text()
    posters = (out / "q7_efficient_multimodal_posters.md").read_text()
    assert "| iisan_mm | iisan_text | 1 |" in posters and "| missrec_mm | missrec | 1 |" in posters
    page = (out / "README.md").read_text()
    assert "q7_efficient_multimodal_vs_idrec.md" in page and q7.READING.splitlines()[0] in page
