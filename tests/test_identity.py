"""A run is tied to its data: config.json records digests of the users and items
files, of the item-id mapping (and of the image LMDB's key set); test and --resume refuse data
that changed since training, saying what changed. Real ml-100k runs, one epoch of a tiny model."""
import contextlib
import json
import logging
import shutil

import pytest

from conftest import REPO, run_in_process

FOLDER = "inbatch_sasrec_e2e_text"
TINY = ["--epoch", "1", "--batch_size", "256", "--embedding_dim", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch ID run on a copy of ml-100k: (root_data_dir, runs_dir)."""
    root = tmp_path_factory.mktemp("identity")
    data = root / "data" / "ml-100k"
    data.mkdir(parents=True)
    for name in ("users.tsv", "items.tsv"):
        shutil.copy(REPO / "dataset" / "ml-100k" / name, data / name)
    code, _, _ = run_in_process(FOLDER, "train", "--root_data_dir", str(root / "data"), *TINY,
                                "--runs_dir", str(root / "runs"), "--label", "r")
    assert code == 0
    return root / "data" / "ml-100k", root / "runs"


@contextlib.contextmanager
def edited(path, text: str):
    """`path` holds `text` inside the block, its own bytes again after it."""
    original = path.read_bytes()
    path.write_text(text)
    try:
        yield
    finally:
        path.write_bytes(original)


def run_test(runs, capsys):
    return run_in_process(FOLDER, "test", "--runs_dir", str(runs), "--label", "r", capsys=capsys)


def resume(data, runs, capsys):
    return run_in_process(FOLDER, "train", "--root_data_dir", str(data.parent), *TINY[2:], "--epoch", "2",
                          "--runs_dir", str(runs), "--label", "r", "--resume", capsys=capsys)


def test_config_records_the_data(trained):
    data, runs = trained
    identity = json.loads((runs / "r" / "config.json").read_text())["data_identity"]
    assert set(identity) == {"users", "items", "item_ids", "inputs"}        # an ID run: no LMDB,
    assert identity["inputs"] == {}                                         # no encoder or cache
    assert identity["items"]["file"] == str(data / "items.tsv") and identity["item_ids"]["count"] == 1409


def test_reordered_items_are_refused_by_test_and_resume(trained, capsys):
    data, runs = trained
    lines = (data / "items.tsv").read_text().splitlines()
    with edited(data / "items.tsv", "\n".join(lines[::-1]) + "\n"):
        for action, (code, _, err) in [("test", run_test(runs, capsys)), ("resume", resume(data, runs, capsys))]:
            assert code == 2, err
            assert f"error: cannot {action} {runs / 'r'}: the items file {data / 'items.tsv'} changed" in err
            assert "the item ids now belong to other items" in err
    assert json.loads((runs / "r" / "metrics.jsonl").read_text())["epoch"] == 1   # nothing resumed


def test_items_gained_after_training_named_not_a_size_mismatch(trained, capsys):
    data, runs = trained
    items, users = (data / "items.tsv").read_text(), (data / "users.tsv").read_text()
    with edited(data / "items.tsv", items + "new\tA new movie\n"), \
            edited(data / "users.tsv", users + "new_user\t1 2 3 4 new\n"):
        code, _, err = run_test(runs, capsys)
    assert code == 2 and "the data now has 1410 items, the run was trained on 1409" in err


def test_changed_users_file_is_named(trained, capsys):
    data, runs = trained
    users = (data / "users.tsv").read_text().splitlines()
    with edited(data / "users.tsv", "\n".join(users[:-1]) + "\n"):         # one user fewer
        code, _, err = run_test(runs, capsys)
    assert code == 2 and f"the users file {data / 'users.tsv'} changed since training" in err
    assert "items file" not in err


def test_unchanged_data_tests_and_old_runs_warn(trained, capsys, caplog):
    data, runs = trained
    code, out, _ = run_test(runs, capsys)
    assert code == 0 and "test HR@10" in out
    config = runs / "r" / "config.json"
    values = json.loads(config.read_text())
    del values["data_identity"]                                               # a run made before the record
    with edited(config, json.dumps(values)), caplog.at_level(logging.WARNING, logger="morec"):
        code, out, _ = run_test(runs, capsys)
    assert code == 0 and "test HR@10" in out
    assert any("records no data identity" in r.getMessage() for r in caplog.records)


def test_image_lmdb_key_set_is_part_of_a_vision_runs_identity(tmp_path):
    from PIL import Image

    from conftest import write_dataset
    from morec.config import Config
    from morec.data import load_sequence_data
    from morec.data.identity import data_identity, identity_changes
    from morec.resolve import data_spec
    from morec.tools.lmdb_builder import build_lmdb
    folder = write_dataset(tmp_path / "d", ["a", "b", "c"], ["u\ta b c a b", "v\tc b a c b"])
    images = tmp_path / "images"
    images.mkdir()
    for name in "abcd":
        Image.new("RGB", (8, 8), (10, 20, 30)).save(images / f"{name}.png")
    build_lmdb(images, folder / "images.lmdb", ["a", "b", "c"])
    cfg = Config(root_data_dir=str(tmp_path), dataset="d", item_tower="vision", max_seq_len=2)
    data = load_sequence_data(folder, "users.tsv", "items.tsv", 2, 5)
    before = data_identity(data_spec(cfg), data)
    assert before["image_keys"]["count"] == 3
    build_lmdb(images, folder / "images.lmdb", ["a", "b", "c", "d"])              # rebuilt with one more image
    assert identity_changes(before, data_identity(data_spec(cfg), data)) == [
        f"the image LMDB {folder / 'images.lmdb'} holds another set of items (4 keys now, 3 at training)"]
