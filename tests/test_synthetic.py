"""scripts/make_synthetic.py: deterministic, loadable, the requested sizes, heavy-tailed popularity."""
import importlib.util
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO

from morec.data import load_sequence_data

spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "scripts" / "make_synthetic.py")
make_synthetic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_synthetic)


def make(folder: Path, *args: str) -> dict:
    return make_synthetic.main(["--preset", "small", "--out", str(folder), *args])


def test_small_preset_is_deterministic_loadable_and_heavy_tailed(tmp_path):
    stats = make(tmp_path / "a", "--users", "1500", "--items", "400", "--seed", "7")
    make(tmp_path / "b", "--users", "1500", "--items", "400", "--seed", "7")
    make(tmp_path / "c", "--users", "1500", "--items", "400", "--seed", "8")
    for name in ("users.tsv", "items.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["README.md", "items.tsv", "users.tsv"]

    users = (tmp_path / "a" / "users.tsv").read_text().splitlines()
    items = (tmp_path / "a" / "items.tsv").read_text().splitlines()
    assert len(users) == 1500 and len(items) == 400
    assert all(len(line.split("\t")) == 3 and len(line.split("\t")[1].split()) >= 5 for line in items)  # titles

    data = load_sequence_data(tmp_path / "a", "users.tsv", "items.tsv", max_seq_len=20, min_seq_len=5)
    assert data.num_users == 1500 and data.num_items == 400       # every user and item survives the protocol

    counts = Counter(name for line in users for name in line.split("\t")[1].split())
    assert sum(counts.values()) == stats["interactions"]
    top = sum(c for _, c in counts.most_common(4))                # top 1% of 400 items
    assert top / sum(counts.values()) > 0.10
    lengths = [len(line.split("\t")[1].split()) for line in users]
    assert min(lengths) >= 5 and 15 < sum(lengths) / len(lengths) < 26 and max(lengths) > 60   # a long tail


def test_write_is_atomic(tmp_path):
    target = tmp_path / "users.tsv"
    target.write_text("old\n")

    def lines():
        yield "new\n"
        raise OSError("disk full")

    with pytest.raises(OSError):
        make_synthetic.write_atomic(target, lines())
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["users.tsv"]     # no temporary file left
