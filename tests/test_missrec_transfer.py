"""MISSRec as the source and the target of --init_from (morec/transfer.py, docs/missrec.md):
pre-trained on ml-100k's source genres, fine-tuned on the target genres, on the cached features
of a tiny random BERT, one epoch each. What is loaded equals the source's tensors, the ID table
and the fusion of another part count stay fresh and are listed, an incompatible source (a SASRec
run, another interest count) is one InputError naming the folder and the fix, before anything
is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO
from morec.config import make_config
from morec.errors import InputError
from morec.resolve import transfer_spec
from text_helpers import TINY, tiny_encoders


def values(tmp: Path, **more) -> dict:
    return dict(dict(model="missrec", item_tower="text", two_stage=True, dnn_layers=1,
                     pretrained_dir=str(tiny_encoders()), bert_model_load=TINY["bert"], root_data_dir=str(tmp / "data"),
                     max_seq_len=10, num_words_title=12, embedding_dim=16, batch_size=256, epoch=1, device="cpu",
                     cache_dir=str(tmp / "cache"), progress=False, seed=3), **more)


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> tuple[Path, dict]:
    """ml-100k split into its source and target genres (morec.tools.domains), and a MISSRec run
    (1 epoch) and a two-stage SASRec run on the source domain."""
    from morec.tools.domains import make_domains
    from morec.train import train
    tmp = tmp_path_factory.mktemp("missrec_transfer")
    folders = make_domains(REPO / "dataset" / "ml-100k", tmp / "data", poster_size=32)
    source = values(tmp, dataset=folders["source"].name)
    train(make_config(source), tmp / "runs" / "missrec_source")
    train(make_config({**source, "model": "sasrec"}), tmp / "runs" / "sasrec_source")
    return tmp, folders


def built(run_values: dict):
    from morec.parts import build_run_model, load_data
    cfg = make_config(dict(run_values))
    return cfg, build_run_model(cfg, load_data(cfg), torch.device("cpu"))


@pytest.mark.parametrize("ids, fresh", [
    (False, []),
    (True, ["item_tower.id_table.embedding.weight", "part_logits.bias", "part_logits.weight"]),
])
def test_the_target_gets_the_sources_encoder_heads_and_fusion_never_the_ids(domains, ids, fresh, tmp_path):
    """Without IDs every tensor carries over; with IDs on the target (their fine-tuning) the ID
    table and the fusion over three parts (the source had one) are fresh; the loaded values equal
    the source's best checkpoint, the fresh ones keep their initialisation."""
    from morec.transfer import check_source, init_from_source
    tmp, folders = domains
    source_dir = tmp / "runs" / "missrec_source"
    cfg, model = built(values(tmp, dataset=folders["target"].name, missrec_ids=ids, init_from=str(source_dir)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = init_from_source(model, transfer_spec(cfg), check_source(transfer_spec(cfg)))
    source = torch.load(source_dir / "checkpoint_best.pt", weights_only=True)["model"]
    now = model.state_dict()
    assert result["fresh"] == fresh
    assert set(result["loaded"]) == set(now) - set(fresh)
    for prefix in ("encoder.interest_blocks.", "encoder.decoder_blocks.", "encoder.position.",
                   "item_tower.modalities.text."):
        assert any(name.startswith(prefix) for name in result["loaded"]), prefix
    for name in result["loaded"]:
        torch.testing.assert_close(now[name], source[name], rtol=0, atol=0)
    assert not torch.equal(now["encoder.position.weight"], before["encoder.position.weight"])   # not a no-op
    for name in fresh:
        torch.testing.assert_close(now[name], before[name], rtol=0, atol=0)
    assert "item_tower.modalities.text.features" not in source      # the target reads its own items' features


def test_a_pretrained_missrec_run_fine_tunes_and_records_its_source(domains, tmp_path):
    from morec.train import test, train
    tmp, folders = domains
    run = tmp_path / "runs" / "target"
    target = values(tmp, dataset=folders["target"].name, init_from=str(tmp / "runs" / "missrec_source"))
    train(make_config(target), run)
    test(make_config(target), run)
    saved = json.loads((run / "config.json").read_text())
    assert saved["init_source"]["label"] == "missrec_source"
    assert "--init_from" in (run / "train.log").read_text()
    assert json.loads((run / "test_metrics.json").read_text())["num_users"] > 0


@pytest.mark.parametrize("source, change, message", [
    ("sasrec_source", {}, "model 'sasrec' there, 'missrec' here"),
    ("missrec_source", {"missrec_interests": 3}, "missrec_interests 4 there, 3 here"),
])
def test_an_incompatible_source_is_one_error_naming_the_folder_and_the_fix(domains, source, change, message,
                                                                           tmp_path):
    from morec.train import train
    tmp, folders = domains
    folder = tmp / "runs" / source
    cfg = make_config(values(tmp, dataset=folders["target"].name, init_from=str(folder), **change))
    with pytest.raises(InputError) as caught:
        train(cfg, tmp_path / "runs" / "target")
    text = str(caught.value)
    assert message in text and str(folder) in text
    assert "start from a run with the same model" in text and "missrec_interests" in text
    assert not (tmp_path / "runs").exists()


def test_q6_missrec_arms_pretrain_on_the_source_genres_and_fine_tune_on_the_target(domains, tmp_path, monkeypatch):
    """scripts/study_q6_transfer.py --arms missrec_scratch,missrec_transfer: a MISSRec source run
    per seed on <domains>-source, the target runs (one from scratch, one --init_from that source
    run), then the table with the transfer-vs-scratch row; --table_only trains nothing."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_q6_transfer
    tmp, _ = domains
    out = tmp_path / "out"
    argv = ["--arms", "missrec_scratch,missrec_transfer", "--target_users", "100", "--seed", "1,2", "--epoch", "1",
            "--out", str(out), "--root_data_dir", str(tmp / "data"), "--pretrained_dir", str(tiny_encoders()),
            "--bert_model_load", TINY["bert"], "--num_words_title", "12", "--embedding_dim", "16",
            "--batch_size", "256", "--cache_dir", str(tmp / "cache"), "--device", "cpu", "--ts_dnn", "1"]
    study_q6_transfer.main(argv)
    configs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/config.json"))]
    sources = [c for c in configs if c["dataset"] == "ml-100k-source"]
    targets = [c for c in configs if c["dataset"] == "ml-100k-target"]
    assert len(sources) == 2 and len(targets) == 4
    assert all(c["model"] == "missrec" and c["two_stage"] and c["dnn_layers"] == 1 for c in configs)
    pretrained = [c for c in targets if c.get("init_from")]
    assert sorted(c["init_source"]["values_sha1"] == pretrained[0]["init_source"]["values_sha1"]
                  for c in pretrained) == [True, True]                        # sources differ in the seed only
    for c in pretrained:
        source = json.loads((Path(c["init_from"]) / "config.json").read_text())
        assert source["seed"] == c["seed"] and source["dataset"] == "ml-100k-source"
    versus = (out / "q6_transfer_vs_scratch.md").read_text()
    assert "| 100% | missrec_transfer | 2 |" in versus
    with pytest.raises(InputError, match="choose from .*missrec_scratch, missrec_transfer"):
        study_q6_transfer.main(["--arms", "missrec", "--out", str(out), "--table_only"])
