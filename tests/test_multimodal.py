"""The text+vision item tower, transfer with --init_from / --freeze_user_encoder, the
training-set-size setting and the ml-100k domain split; every script of
inbatch_sasrec_e2e_multimodal/ trains one epoch and tests (tiny encoders, 32 x 32 posters)."""
from __future__ import annotations

import functools
import json
import runpy
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from morec.config import Config, make_config, run_label
from morec.errors import InputError
from morec.resolve import item_input_spec, transfer_spec
from study_helpers import assert_study_refuses
from test_text_scripts import train_then_test
from text_helpers import TINY, ml100k, tiny_encoders
from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root, tiny_vision_encoders

FOLDER = REPO / "inbatch_sasrec_e2e_multimodal"
SCRIPTS = ["id", "text", "vision", "text_vision", "text_vision_2stage", "text_vision_missrec"]


@functools.lru_cache(maxsize=None)
def tiny_pretrained() -> Path:
    """One pretrained_dir with the tiny text and the tiny vision encoders (links to both)."""
    root = Path(tempfile.mkdtemp(prefix="morec-tiny-mm-"))
    for encoder in TINY.values():
        (root / encoder).symlink_to(tiny_encoders() / encoder)
    for encoder in TINY_VISION.values():                  # built for IMAGE_SIZE-pixel images
        (root / encoder).symlink_to(tiny_vision_encoders() / encoder)
    return root


def tiny_values(tmp_path: Path, **values) -> dict:
    """A small text+vision run on ml-100k's 32 x 32 posters."""
    return dict(dict(item_tower="text+vision", root_data_dir=str(poster_root()), image_lmdb="posters.lmdb",
                     pretrained_dir=str(tiny_pretrained()), bert_model_load=TINY["bert"],
                     cv_model_load=TINY_VISION["swin"], image_size=IMAGE_SIZE, max_seq_len=10,
                     num_words_title=12, embedding_dim=32, batch_size=256, epoch=1, device="cpu",
                     cache_dir=str(tmp_path / "cache"), progress=False), **values)


def built(values: dict):
    """(cfg, data, model) of a run's values, as train.py builds them."""
    from morec.parts import build_run_model, load_data
    cfg = make_config(dict(values))
    data = load_data(cfg)
    return cfg, data, build_run_model(cfg, data, torch.device("cpu"))


# ----------------------------------------------------------------------------- the fused tower

@pytest.mark.parametrize("mode", ["sum", "concat", "gate"])
def test_the_fused_tower_gives_both_encoders_gradients(mode, tmp_path):
    _, _, model = built(tiny_values(tmp_path, mm_fusion=mode))
    tower = model.item_tower.train()
    ids = torch.tensor([[3, 1, 0], [7, 3, 2]])                                 # padding and a repeat
    distinct = torch.tensor([1, 2, 3, 7])
    pixels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    vecs = tower.encode_items(ids, (distinct, pixels))                          # (2, 3, 32)
    assert vecs.shape == (2, 3, 32) and bool((vecs[0, 2] == 0).all())
    vecs.square().sum().backward()
    for branch in (tower.text, tower.vision):
        grads = [p.grad for p in branch.encoder_parameters() if p.requires_grad]
        assert grads and sum(float(g.abs().sum()) for g in grads if g is not None) > 0, type(branch).__name__


def test_gradient_caching_of_the_fused_tower_equals_the_plain_step(tmp_path):
    """--inbatch_chunk goes through the same encode_chunk: loss and gradients of both encoders
    agree with the plain step (dropout off, fp32)."""
    from morec.data.images import BatchesWithImages
    from morec.features import run_item_images
    from morec.parts import make_batches
    from test_grad_cache import loss_and_grads, max_grad_difference
    from test_text_tower import no_dropout
    cfg, data, model = built(tiny_values(tmp_path, mm_fusion="gate", batch_size=6))
    model = no_dropout(model).train()
    batch = BatchesWithImages([next(iter(make_batches(cfg, data).epoch(cfg.seed)))],
                              run_item_images(item_input_spec(cfg), data))[0]
    assert len(batch["image_ids"]) > 3 * 4                                     # several chunks of 4
    plain_loss, plain = loss_and_grads(model, batch, 0)
    cached_loss, cached = loss_and_grads(model, batch, 4)
    assert cached_loss == pytest.approx(plain_loss, abs=1e-6)
    assert max_grad_difference(plain, cached) <= 1e-5
    assert any(n.startswith("item_tower.text.encoder.") for n in cached)
    assert any(n.startswith("item_tower.vision.encoder.") for n in cached)


def test_the_gate_mixes_the_two_vectors_per_dimension(tmp_path):
    """e = g * e_text + (1 - g) * e_image with g = sigmoid(W [e_text; e_image] + b)."""
    _, _, model = built(tiny_values(tmp_path, mm_fusion="gate"))
    tower = model.item_tower.eval()
    ids, pixels = torch.tensor([2, 5, 9]), torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        e_text, e_image = tower.text.encode_chunk(ids), tower.vision.encode_chunk(ids, pixels)
        tower.gate.weight.zero_()
        tower.gate.bias.copy_(torch.linspace(-3, 3, 32))                   # g differs per dimension
        g = torch.sigmoid(torch.linspace(-3, 3, 32))
        torch.testing.assert_close(tower.encode_items(ids, (ids, pixels)), g * e_text + (1 - g) * e_image)
        tower.gate.bias.zero_()                                             # g = 1/2: the mean
        torch.testing.assert_close(tower.encode_chunk(ids, pixels), (e_text + e_image) / 2)


def test_the_vision_encoder_trains_with_its_own_learning_rate(tmp_path):
    from morec.parts import build_optimizer
    cfg, _, model = built(tiny_values(tmp_path, fine_tune_lr=1e-4, cv_fine_tune_lr=3e-3, trainable_layers=1,
                                      fusion="cat"))                          # ID + (text + image)
    groups = build_optimizer(model, cfg).param_groups
    assert [g["lr"] for g in groups] == [cfg.lr, 1e-4, 3e-3]
    ids = [{id(p) for p in g["params"]} for g in groups]
    tower = model.item_tower.modality
    assert ids[1] == {id(p) for p in tower.text.encoder_parameters() if p.requires_grad}
    assert ids[2] == {id(p) for p in tower.vision.encoder_parameters() if p.requires_grad}
    assert set.union(*ids) == {id(p) for p in model.parameters() if p.requires_grad}
    cfg, _, model = built(tiny_values(tmp_path, cv_fine_tune_lr=-1.0))         # -1: fine_tune_lr
    assert [g["lr"] for g in build_optimizer(model, cfg).param_groups] == [cfg.lr, cfg.fine_tune_lr, cfg.fine_tune_lr]


@pytest.mark.parametrize("mode", ["sum", "concat", "gate"])
def test_two_stage_text_vision_fuses_a_head_over_each_branchs_cached_features(mode, tmp_path):
    """--two_stage with text+vision: the text head reads the cached text features, the image head
    the cached vision features; no encoder is in the model and no pixels are read in training."""
    from morec.features import run_item_images, text_features, vision_features
    from morec.models.towers import FeatureTower
    from morec.parts import make_batches
    cfg, data, model = built(tiny_values(tmp_path, mm_fusion=mode, two_stage=True, dnn_layers=1))
    tower = model.item_tower
    cpu = torch.device("cpu")
    assert isinstance(tower.text, FeatureTower) and isinstance(tower.vision, FeatureTower)
    assert (not tower.reads_pixels and run_item_images(item_input_spec(cfg), data) is None
            and not tower.encoder_parameters())
    text, image = (torch.from_numpy(f(item_input_spec(cfg), data, cpu)[0]) for f in (text_features, vision_features))
    assert text.shape == (data.num_items + 1, 32) and image.shape[0] == data.num_items + 1
    torch.testing.assert_close(tower.text.features, text)
    torch.testing.assert_close(tower.vision.features, image)
    ids = torch.tensor([[3, 1, 0], [7, 3, 2]])
    with torch.no_grad():
        vecs = tower.eval().encode_items(ids)                                  # (2, 3, 32)
        flat = ids.flatten()
        expected = tower.fuse(tower.text.mlp(torch.nn.functional.gelu(tower.text.fc(text[flat]))),
                              tower.vision.mlp(torch.nn.functional.gelu(tower.vision.fc(image[flat]))))
        expected = expected.view(2, 3, -1) * (ids != 0).unsqueeze(-1)
    torch.testing.assert_close(vecs, expected)
    batch = next(iter(make_batches(cfg, data).epoch(cfg.seed)))
    model.train().calculate_loss(batch).backward()
    for head in (tower.text, tower.vision):
        assert float(head.fc.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("cached", ["text", "vision"])
def test_one_cached_branch_reads_features_while_the_other_trains_end_to_end(cached, tmp_path):
    """--mm_cached_branch: that branch is a head over its cached features (equal to the
    two-stage features), the other branch's encoder trains; pixels are read only for a vision
    encoder; one epoch trains and tests."""
    from morec.features import run_item_images, text_features, vision_features
    from morec.models.towers import FeatureTower
    from morec.train import test, train
    values = tiny_values(tmp_path, mm_fusion="gate", mm_cached_branch=cached, dnn_layers=1)
    cfg, data, model = built(values)
    tower, cpu = model.item_tower, torch.device("cpu")
    head, encoded = (tower.text, tower.vision) if cached == "text" else (tower.vision, tower.text)
    features = (text_features if cached == "text" else vision_features)(item_input_spec(cfg), data, cpu)[0]
    assert isinstance(head, FeatureTower) and not isinstance(encoded, FeatureTower)
    torch.testing.assert_close(head.features, torch.from_numpy(features))
    assert tower.deduplicate and tower.encoder_parameters() == encoded.encoder_parameters()
    assert tower.reads_pixels == (cached == "text") == (run_item_images(item_input_spec(cfg), data) is not None)
    ids = torch.tensor([[3, 1, 0], [7, 3, 2]])
    distinct = torch.tensor([1, 2, 3, 7])
    pixels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE) if tower.reads_pixels else None
    tower.train().encode_items(ids, (distinct, pixels) if pixels is not None else None).square().sum().backward()
    assert float(head.fc.weight.grad.abs().sum()) > 0
    assert sum(float(p.grad.abs().sum()) for p in encoded.encoder_parameters() if p.grad is not None) > 0
    run = tmp_path / "runs" / "one"
    train(make_config(values), run)
    test(make_config(values), run)
    assert json.loads((run / "test_metrics.json").read_text())["best_epoch"] == 1
    assert "of these, the vision encoder's" in (run / "train.log").read_text() if cached == "text" else True


def test_mm_cached_branch_needs_text_vision_end_to_end():
    for values in (dict(item_tower="text", mm_cached_branch="text"),
                   dict(item_tower="text+vision", two_stage=True, mm_cached_branch="vision")):
        with pytest.raises(InputError, match="--mm_cached_branch .* needs --item_tower text\\+vision and --two_stage false"):
            make_config(values)
    assert run_label(Config(item_tower="text+vision", mm_cached_branch="text")) != run_label(Config(item_tower="text+vision"))
    assert run_label(Config(item_tower="text+vision")) == run_label(Config(item_tower="text+vision", mm_cached_branch="none"))


def test_labels_of_text_vision_runs_read_both_encoders_and_other_labels_stay():
    base = Config(item_tower="text+vision")
    assert run_label(Config(item_tower="text+vision", bert_model_load="x")) != run_label(base)
    assert run_label(Config(item_tower="text+vision", cv_model_load="x")) != run_label(base)
    assert run_label(Config(item_tower="text+vision", mm_fusion="gate")) != run_label(base)
    for tower in ("id", "text", "vision"):
        assert run_label(Config(item_tower=tower, mm_fusion="gate", cv_fine_tune_lr=1.0)) == \
            run_label(Config(item_tower=tower))
    with pytest.raises(InputError, match="--cv_fine_tune_lr -2.0 must be -1"):
        make_config(dict(cv_fine_tune_lr=-2.0))


# ----------------------------------------------------------------------------- transfer

@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A text MoRec run (tiny BERT, 1 epoch) on ml-100k: the source of the transfer tests."""
    from morec.train import train
    tmp = tmp_path_factory.mktemp("source")
    run = tmp / "runs" / "source"
    train(make_config(text_values(tmp, seed=7)), run)
    return run


def text_values(tmp_path: Path, **values) -> dict:
    return dict(dict(item_tower="text", pretrained_dir=str(tiny_encoders()), bert_model_load=TINY["bert"],
                     max_seq_len=10, num_words_title=12, embedding_dim=32, batch_size=256, epoch=1,
                     device="cpu", cache_dir=str(tmp_path / "cache"), progress=False), **values)


def test_init_from_loads_every_tensor_but_the_id_table(source_run, tmp_path):
    from morec.transfer import check_source, init_from_source
    values = text_values(tmp_path, fusion="add", init_from=str(source_run))      # target: ID + text
    cfg, _, model = built(values)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    result = init_from_source(model, transfer_spec(cfg), check_source(transfer_spec(cfg)))
    source = torch.load(source_run / "checkpoint_best.pt", weights_only=True)["model"]
    now = model.state_dict()
    assert result["fresh"] == ["item_tower.id_tower.embedding.weight"]
    assert set(result["loaded"]) == set(now) - {"item_tower.id_tower.embedding.weight"}
    for name in result["loaded"]:                         # the source's modality tower, under FusionTower
        torch.testing.assert_close(now[name], source[name.replace("item_tower.modality.", "item_tower.")],
                                   rtol=0, atol=0)
    torch.testing.assert_close(now["item_tower.id_tower.embedding.weight"],
                               fresh["item_tower.id_tower.embedding.weight"], rtol=0, atol=0)


def test_two_stage_transfer_loads_the_head_and_user_encoder_not_the_features(tmp_path):
    """A two-stage source: the target gets its user encoder and head; the cached features are the
    target's own (they are not in a checkpoint), here those of other items (the target domain)."""
    from morec.tools.domains import make_domains
    from morec.train import train
    from morec.transfer import check_source, init_from_source
    folders = make_domains(REPO / "dataset" / "ml-100k", tmp_path / "data")
    values = text_values(tmp_path, two_stage=True, dnn_layers=1, root_data_dir=str(tmp_path / "data"))
    source = tmp_path / "runs" / "source"
    train(make_config({**values, "dataset": folders["source"].name}), source)
    cfg, data, model = built({**values, "dataset": folders["target"].name, "init_from": str(source)})
    own_features = model.item_tower.features.clone()
    result = init_from_source(model, transfer_spec(cfg), check_source(transfer_spec(cfg)))
    saved = torch.load(source / "checkpoint_best.pt", weights_only=True)["model"]
    assert result["fresh"] == [] and set(result["loaded"]) == set(model.state_dict()) == set(saved)
    assert any(n.startswith("item_tower.fc.") for n in result["loaded"])
    assert any(n.startswith("encoder.") for n in result["loaded"])
    assert "item_tower.features" not in saved
    torch.testing.assert_close(model.item_tower.features, own_features, rtol=0, atol=0)
    assert own_features.shape[0] == data.num_items + 1


@pytest.mark.parametrize("change, message", [
    ({"bert_model_load": TINY["roberta"]}, "bert_model_load 'random_tiny_bert' there, 'random_tiny_roberta' here"),
    ({"embedding_dim": 16}, "embedding_dim 32 there, 16 here"),
    ({"item_tower": "id"}, "item_tower 'text' there, 'id' here"),
    ({"two_stage": True}, "two_stage False there, True here"),
])
def test_init_from_refuses_other_encoders_before_writing(source_run, tmp_path, change, message):
    from morec.train import train
    cfg = make_config(text_values(tmp_path, init_from=str(source_run), **change))
    with pytest.raises(InputError, match=message):
        train(cfg, tmp_path / "runs" / "target")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(InputError, match="checkpoint_best.pt not found"):
        train(make_config(text_values(tmp_path, init_from=str(tmp_path))), tmp_path / "runs" / "target")


def test_transfer_run_records_its_source_freezes_the_user_encoder_and_resumes_its_own(source_run, tmp_path):
    from morec.checkpoint import load_checkpoint
    from morec.train import train
    values = text_values(tmp_path, init_from=str(source_run), freeze_user_encoder=True)
    run = tmp_path / "runs" / "target"
    train(make_config(values), run)
    saved = json.loads((run / "config.json").read_text())
    source_config = json.loads((source_run / "config.json").read_text())
    assert saved["init_source"]["label"] == "source"
    assert saved["init_source"]["data_identity"] == source_config["data_identity"]
    source = load_checkpoint(source_run / "checkpoint_best.pt")["model"]
    after = load_checkpoint(run / "checkpoint_last.pt")["model"]
    user = [k for k in after if k.startswith("encoder.")]
    assert user and all(torch.equal(after[k], source[k]) for k in user)       # frozen: still the source's
    assert not torch.equal(after["item_tower.fc.weight"], source["item_tower.fc.weight"])   # the tower trained
    train(make_config({**values, "epoch": 2, "resume": True}), run)
    log = (run / "train.log").read_text()
    assert log.count("--init_from") == 1 and "resumed target after epoch 1" in log
    assert all(torch.equal(load_checkpoint(run / "checkpoint_last.pt")["model"][k], source[k]) for k in user)
    with pytest.raises(InputError, match="--freeze_user_encoder needs a sequential model"):
        make_config(dict(model="dssm", freeze_user_encoder=True))
    for model in ("gru4rec", "nextitnet"):                   # every next-item user encoder may be frozen
        make_config(dict(model=model, freeze_user_encoder=True, train_user_fraction=0.5))


# ----------------------------------------------------------------------------- training-set size

def test_train_user_fraction_keeps_nested_subsets_and_every_evaluated_user():
    from morec.data.sequences import with_train_users
    data = ml100k()
    small, larger = with_train_users(data, 0.1), with_train_users(data, 0.3)
    assert len(small.train) == int(np.ceil(0.1 * data.num_users)) and len(larger.train) == int(np.ceil(0.3 * data.num_users))
    assert set(small.train_users) <= set(larger.train_users)
    np.testing.assert_array_equal(small.train, data.full[small.train_users, :-2])
    for split in ("valid", "test"):
        np.testing.assert_array_equal(small.split_target(split), data.split_target(split))
        np.testing.assert_array_equal(small.split_input(split), data.split_input(split))
    counts = np.bincount(data.full[small.train_users, :-2].ravel(), minlength=data.num_items + 1)
    np.testing.assert_array_equal(small.train_counts()[1:], counts[1:])        # popularity of the trained part


# ----------------------------------------------------------------------------- domains

def test_the_domain_split_has_no_shared_item_and_each_domain_loads(tmp_path):
    from morec.tools.domains import TARGET_GENRES, make_domains
    from morec.data.files import read_items, read_users
    from morec.data.images import ImageStore
    from morec.data.sequences import load_sequence_data
    folders = make_domains(REPO / "dataset" / "ml-100k", tmp_path, poster_size=16)
    all_items = read_items(REPO / "dataset" / "ml-100k" / "items.tsv")
    items = {d: read_items(f / "items.tsv") for d, f in folders.items()}
    names = {d: {row.name for row in rows} for d, rows in items.items()}
    assert not names["source"] & names["target"]
    assert names["source"] | names["target"] == {row.name for row in all_items}
    assert all(set(row.abstract.split()) & set(TARGET_GENRES) for row in items["target"])
    assert not any(set(row.abstract.split()) & set(TARGET_GENRES) for row in items["source"])
    full = {u.name: u.items for u in read_users(REPO / "dataset" / "ml-100k" / "users.tsv")}
    for domain, folder in folders.items():
        for user in read_users(folder / "users.tsv"):                        # the domain's items, in order
            assert user.items == [i for i in full[user.name] if i in names[domain]]
        data = load_sequence_data(folder, "users.tsv", "items.tsv", 10, 5)
        assert data.num_users > 800 and (data.full[:, -3:] > 0).all()        # the SPEC split holds
        assert set(ImageStore(folder / "posters.lmdb").names()) == names[domain]
    assert (len(names["source"]), len(names["target"])) == (1321, 361)


# ----------------------------------------------------------------------------- scripts

@pytest.mark.parametrize("name", SCRIPTS)
def test_train_then_test_one_epoch(name, tmp_path):
    params = runpy.run_path(str(FOLDER / f"train_{name}.py"), run_name="params_only")["params"]
    assert params["max_seq_len"] == 10 and params["patience"] == 7
    common = ["--runs_dir", str(tmp_path / "runs"), "--label", "smoke", "--device", "cpu",
              "--root_data_dir", str(poster_root()), "--cache_dir", str(tmp_path / "cache"),
              "--pretrained_dir", str(tiny_pretrained()), "--bert_model_load", TINY["bert"],
              "--cv_model_load", TINY_VISION["swin"], "--image_size", str(IMAGE_SIZE)]
    speed = ["--epoch", "1", "--embedding_dim", "32", "--batch_size", "256", "--num_words_title", "12"]
    saved, log = train_then_test(FOLDER, name, common + speed, common, tmp_path / "runs" / "smoke")
    assert saved["item_tower"] == params["item_tower"]
    if params["item_tower"] == "text+vision" and not params.get("two_stage"):
        assert "of these, the vision encoder's" in log


def test_every_multimodal_script_is_covered():
    assert {p.stem[len("train_"):] for p in FOLDER.glob("train_*.py")} == set(SCRIPTS)
    assert all((FOLDER / f"test_{name}.py").is_file() for name in SCRIPTS)


def test_recbole_genres_match_the_items_file_genres(tmp_path):
    from morec.tools.domains import items_file_genres, recbole_genres
    from morec.data.files import read_items
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "267\tunkonwn\tunkonwn\tunknown\n", encoding="utf-8")
    rows = [r for r in read_items(REPO / "dataset" / "ml-100k" / "items.tsv") if r.name in ("1", "2", "267")]
    assert recbole_genres(tmp_path / "ml-100k.item") == items_file_genres(rows) == {
        "1": ["Animation", "Children's", "Comedy"], "2": ["Action", "Adventure", "Thriller"], "267": ["unknown"]}
    with pytest.raises(InputError, match="expected RecBole's ml-100k.item header"):
        (tmp_path / "bad.item").write_text("id\tclass\n1\tAction\n")
        recbole_genres(tmp_path / "bad.item")


@pytest.mark.parametrize("argv, message", [
    (["--init_from", "x"], "--init_from is set by the study"),
    (["--target_users", "0,50"], "give percents in \\(0, 100\\]"),
    (["--arms", "id,pretrained"], "choose from id, scratch, transfer, frozen_user"),
])
def test_the_transfer_study_refuses_what_it_sets_itself(argv, message, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_q6_transfer
    assert_study_refuses(study_q6_transfer.main, argv, message, tmp_path)


@pytest.mark.parametrize("morec, two_stage, dnn_layers", [([], False, 0), (["--morec", "ts", "--ts_dnn", "3"], True, 3)])
def test_q5_and_q6_run_their_morec_arms_end_to_end_or_two_stage(morec, two_stage, dnn_layers, tmp_path, monkeypatch):
    """--morec ts makes every MoRec arm two-stage (a head of --ts_dnn layers); the ID arm stays."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_q5_multimodal
    import study_q6_transfer
    from study_common import SMALL
    seen = {}
    monkeypatch.setattr(study_q5_multimodal, "run_study", lambda name, title, parts, *_: seen.setdefault("q5", parts))
    monkeypatch.setattr(study_q6_transfer, "run_study", lambda name, title, parts, *_: seen.setdefault("q6", parts))
    study_q5_multimodal.main(["--out", str(tmp_path), "--table_only"] + morec)
    root = tmp_path / "data"
    (root / "ml-100k").mkdir(parents=True)
    for name in ("users.tsv", "items.tsv"):
        (root / "ml-100k" / name).symlink_to(REPO / "dataset" / "ml-100k" / name)
    study_q6_transfer.main(["--out", str(tmp_path), "--table_only", "--root_data_dir", str(root)] + morec)
    for study in ("q5", "q6"):
        towers = [part.get("item_tower", "id") for part in seen[study]]
        assert "id" in towers and len(set(towers)) > 1, towers
        for part in seen[study]:
            if part.get("item_tower", "id") == "id":
                assert not part.get("two_stage") and "dnn_layers" not in part
            else:
                assert part["two_stage"] is two_stage and part.get("dnn_layers", SMALL.get("dnn_layers", 0)) == dnn_layers
    assert {p["item_tower"] for p in seen["q5"]} == {"id", "text", "vision", "text+vision"}


def test_q6_pairs_each_transfer_arm_with_morec_from_scratch_at_its_size(tmp_path, monkeypatch):
    """Known per-user ranks: transfer hits every user where scratch misses all (+100 points, the
    interval [100, 100]); frozen_user ranks like scratch (0, p = 1); each size is paired apart."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from study_q6_transfer import versus_scratch
    from morec.report.run_files import load_run
    from test_results_table import fake_ranks, fake_run
    arms = {"scratch": ({}, 20), "transfer": ({"init_from": "src"}, 0),
            "frozen_user": ({"init_from": "src", "freeze_user_encoder": True}, 20), "id": ({}, 5)}
    runs = []
    for size in (0.1, 1.0):
        for seed in (1, 2):
            for arm, (values, rank) in arms.items():
                tower = {"item_tower": "id"} if arm == "id" else {"item_tower": "text", "two_stage": True}
                run = fake_run(tmp_path, f"{arm}-{size}-{seed}", {**tower, **values, "seed": seed,
                                                                    "train_user_fraction": size}, 0.0, 0.0)
                fake_ranks(run, h=[rank] * 8, t=[0] * 8)
                runs.append(load_run(run))
    text = versus_scratch(runs, tmp_path / "vs.md")
    assert (tmp_path / "vs.md").read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| 10%") or line.startswith("| 100%")]
    assert len(rows) == 4
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "2"                                              # seeds
        if cells[1] == "transfer":
            assert cells[3] == "100.00" and cells[4].startswith("+100.00 [+100.00, +100.00]") and cells[4].endswith("*")
        else:
            assert cells[1] == "frozen_user" and cells[3] == "0.00" and cells[4] == "+0.00 [+0.00, +0.00] p=1"


def test_q5_pairs_each_fusion_with_the_text_and_the_vision_arm(tmp_path, monkeypatch):
    """Known ranks: the sum fusion hits every user, text misses all, vision hits half."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from study_q5_multimodal import fused_versus_one_modality
    from morec.report.run_files import load_run
    from test_results_table import fake_ranks, fake_run
    runs = []
    for seed in (1, 2, 3):
        for name, values, ranks in (("sum", {"item_tower": "text+vision", "mm_fusion": "sum"}, [0] * 8),
                                    ("text", {"item_tower": "text"}, [20] * 8),
                                    ("vision", {"item_tower": "vision"}, [0, 20] * 4)):
            run = fake_run(tmp_path, f"{name}-{seed}", {**values, "seed": seed}, 0.0, 0.0)
            fake_ranks(run, h=ranks, t=[0] * 8)
            runs.append(load_run(run))
    rows = [line for line in fused_versus_one_modality(runs, tmp_path / "q5.md").splitlines() if line.startswith("| sum")]
    assert [r.split("|")[2].strip() for r in rows] == ["vs text", "vs vision"]
    assert "| 3 | 100.00 | +100.00 [+100.00, +100.00]" in rows[0]
    assert "| 3 | 100.00 | +50.00 [" in rows[1]


def test_q5_ts_text_caches_the_titles_and_trains_the_images(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_q5_multimodal
    seen = {}
    monkeypatch.setattr(study_q5_multimodal, "run_study", lambda name, title, parts, *_: seen.setdefault("parts", parts))
    study_q5_multimodal.main(["--out", str(tmp_path), "--table_only", "--morec", "ts_text"])
    arms = {part.get("item_tower", "id"): part for part in seen["parts"]}
    assert arms["text"]["two_stage"] and arms["text"]["dnn_layers"] == 2
    assert not arms["vision"]["two_stage"] and "mm_cached_branch" not in arms["vision"]
    fused = arms["text+vision"]
    assert not fused["two_stage"] and fused["mm_cached_branch"] == "text" and fused["dnn_layers"] == 2
    make_config({k: v for k, v in fused.items() if k != "mm_fusion"})                # a valid run


def test_results_table_names_the_mode_of_each_branch(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    from morec.report.grouping import mode_name
    fused = {"item_tower": "text+vision", "dnn_layers": 2}
    assert mode_name({**fused, "mm_cached_branch": "text"}) == "vision E2E, text TS dnn=2"
    assert mode_name({**fused, "mm_cached_branch": "vision"}) == "text E2E, vision TS dnn=2"
    assert mode_name({**fused, "mm_cached_branch": "none"}) == mode_name(fused) == "E2E"
    assert mode_name({**fused, "two_stage": True}) == "TS dnn=2"


def test_a_cached_text_branch_can_mix_every_layer(tmp_path):
    """--mm_cached_branch text with --ts_layers all: the text head is the scalar mix over every
    cached layer (LayerMixFeatureTower, its own lr group); the vision encoder still trains."""
    from morec.features import text_features
    from morec.models.towers import LayerMixFeatureTower
    from morec.parts import build_optimizer
    cfg, data, model = built(tiny_values(tmp_path, mm_cached_branch="text", ts_layers="all"))
    head = model.item_tower.text
    assert isinstance(head, LayerMixFeatureTower) and head.features.ndim == 3
    torch.testing.assert_close(head.features,
                               torch.from_numpy(text_features(item_input_spec(cfg), data, torch.device("cpu"))[0]))
    lrs = [g["lr"] for g in build_optimizer(model, cfg).param_groups]
    assert lrs == [cfg.lr, cfg.fine_tune_lr, cfg.ts_mix_lr]                  # recommender, vision encoder, mix
    with pytest.raises(InputError, match="--ts_layers all .* or --mm_cached_branch text"):
        make_config(tiny_values(tmp_path, mm_cached_branch="vision", ts_layers="all"))
