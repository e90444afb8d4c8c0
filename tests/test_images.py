"""Image LMDB: build / read round trip, errors, tensors, legacy conversion, synthetic posters."""
import io
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import types

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from morec.data.images import NORMS, ImageDataset, ImageStore
from morec.tools.legacy_lmdb import RefusedPickleError, convert_legacy_lmdb, restricted_loads
from morec.tools.lmdb_builder import LmdbWriter, build_lmdb
from morec.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def image_bytes(colour=(255, 0, 128), size=(10, 7), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_dir(tmp_path):
    """Three items: a.png, b.jpg, c.jpeg, plus a file that is no image."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes((255, 0, 128)))
    (folder / "b.jpg").write_bytes(image_bytes((0, 200, 0), (12, 12), "JPEG"))
    (folder / "c.jpeg").write_bytes(image_bytes((0, 0, 255), (5, 9), "JPEG"))
    (folder / "notes.txt").write_text("not an image")
    return folder


# ----------------------------------------------------------------------------- build and read

def test_round_trip_keeps_bytes_and_metadata(image_dir, tmp_path):
    out = tmp_path / "db" / "images.lmdb"
    summary = build_lmdb(image_dir, out, ["a", "b", "c"])
    assert summary["count"] == 3 and summary["missing"] == 0
    assert sorted(os.listdir(out.parent)) == ["images.lmdb"]  # no temp, lock or report file
    store = ImageStore(out)
    for name, suffix in [("a", ".png"), ("b", ".jpg"), ("c", ".jpeg")]:
        assert store.get_bytes(name) == (image_dir / f"{name}{suffix}").read_bytes()
    assert store.meta["format_version"] == 1 and store.meta["count"] == 3
    assert store.meta["missing"] == [] and len(store) == 3
    assert store.names() == ["a", "b", "c"]
    other = ImageStore(out, image_size=4)  # a second store on the same file shares the handle
    assert other.load_tensor("b").shape == (3, 4, 4) and store.get_bytes("a")


def test_resize_stores_square_jpeg(image_dir, tmp_path):
    out = tmp_path / "small.lmdb"
    build_lmdb(image_dir, out, resize=8)  # no item list: every image of the folder
    with Image.open(io.BytesIO(ImageStore(out).get_bytes("c"))) as img:
        assert img.format == "JPEG" and img.size == (8, 8)


def test_missing_items_are_reported(image_dir, tmp_path, caplog):
    items = tmp_path / "items.tsv"
    items.write_text("a\ttitle a\nx\ttitle x\nb\nc\ny\n")
    out = tmp_path / "images.lmdb"
    with pytest.raises(InputError) as err:
        build_lmdb(image_dir, out, items)
    report = tmp_path / "images.lmdb.missing.txt"
    assert "2 of 5 items" in str(err.value) and str(report) in str(err.value)
    assert report.read_text() == "x\ny\n"
    assert not out.exists()

    with caplog.at_level(logging.WARNING):
        build_lmdb(image_dir, out, items, allow_missing=True)
        store = ImageStore(out, image_size=16)
        blank = store.load_tensor("x")
    assert store.meta["missing"] == ["x", "y"]
    assert torch.equal(blank, torch.zeros(3, 16, 16))
    assert any("no image" in record.message for record in caplog.records)
    with pytest.raises(InputError, match=r"'zzz'.*images\.lmdb"):
        store.load_tensor("zzz")


def test_unreadable_source_image_names_the_file(image_dir, tmp_path):
    (image_dir / "d.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match=r"d\.png is not a readable image"):
        build_lmdb(image_dir, tmp_path / "x.lmdb")
    assert not (tmp_path / "x.lmdb").exists()


def test_corrupt_value_names_the_key_and_fix(tmp_path):
    out = tmp_path / "bad.lmdb"
    good = image_bytes(fmt="JPEG", size=(64, 64))
    with LmdbWriter(out) as writer:
        writer.put("garbled", b"this is not an image")
        writer.put("truncated", good[: len(good) // 2])
        writer.put("fine", good)
    store = ImageStore(out)
    assert store.load_tensor("fine").shape == (3, 224, 224)
    for key in ("garbled", "truncated"):
        with pytest.raises(InputError) as err:
            store.load_tensor(key)
        message = str(err.value)
        assert repr(key) in message and str(out) in message and "scripts/build_lmdb.py" in message


def test_reserved_names_and_foreign_lmdb(tmp_path):
    with pytest.raises(InputError, match="reserved"):
        with LmdbWriter(tmp_path / "r.lmdb") as writer:
            writer.put("__meta__/count", b"")
    assert not (tmp_path / "r.lmdb").exists() and not list(tmp_path.iterdir())
    foreign = tmp_path / "foreign.lmdb"
    env = lmdb.open(str(foreign), subdir=False, lock=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"__len__", pickle.dumps(1))
    env.close()
    with pytest.raises(InputError, match="convert_legacy_lmdb"):
        ImageStore(foreign).load_tensor("1")


@pytest.mark.parametrize("norm", ["imagenet", "half"])
def test_solid_colour_tensor_values(tmp_path, norm):
    colour = (255, 0, 128)
    with LmdbWriter(tmp_path / "c.lmdb") as writer:
        writer.put("solid", image_bytes(colour, (10, 7)))
    store = ImageStore(tmp_path / "c.lmdb", image_size=32, norm=norm)
    tensor = store.load_tensor("solid")
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32
    mean, std = NORMS[norm]
    for channel in range(3):
        expected = (colour[channel] / 255 - mean[channel]) / std[channel]
        assert torch.allclose(tensor[channel], torch.full((32, 32), expected), atol=1e-5)
    batch = store.load_batch(["solid", "solid"])
    assert batch.shape == (2, 3, 32, 32) and torch.equal(batch[1], tensor)


def test_dataloader_workers_open_their_own_handle(image_dir, tmp_path):
    out = tmp_path / "images.lmdb"
    build_lmdb(image_dir, out)
    store = ImageStore(out, image_size=8)
    expected = store.load_batch(["a", "b", "c"])  # opens in this process first
    pickle.dumps(store)  # the open handle is not part of the pickled state
    loader = torch.utils.data.DataLoader(ImageDataset(store, ["a", "b", "c"]), batch_size=3,
                                         num_workers=1)
    assert torch.equal(next(iter(loader)), expected)


def test_cli_runs_from_another_folder(image_dir, tmp_path):
    script = ROOT / "scripts" / "build_lmdb.py"
    items = tmp_path / "items.tsv"
    items.write_text("a\nq\n")
    run = subprocess.run([sys.executable, str(script), "--images", str(image_dir), "--items",
                          str(items), "--out", str(tmp_path / "cli.lmdb")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2 and "1 of 2 items" in run.stderr and "Traceback" not in run.stderr


# ----------------------------------------------------------------------------- legacy format

def legacy_record_class(module: str):
    """A copy of the original release's LMDB_Image, to be pickled under `module`."""
    class LMDB_Image:  # noqa: N801 -- the original name is what the pickles refer to
        def __init__(self, image, id):
            self.channels = image.shape[2]
            self.size = image.shape[:2]
            self.image = image.tobytes()
            self.id = id
    LMDB_Image.__module__, LMDB_Image.__qualname__ = module, "LMDB_Image"
    return LMDB_Image


def write_legacy_lmdb(path, values: dict[bytes, bytes]):
    """An LMDB laid out as the original build script did (pickled __keys__ / __len__)."""
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value)
        txn.put(b"__keys__", pickle.dumps(list(values)))
        txn.put(b"__len__", pickle.dumps(len(values)))
    env.close()


@pytest.mark.parametrize("module,protocol", [("__main__", 4), ("data_utils.dataset", 2)])
def test_legacy_conversion(tmp_path, monkeypatch, module, protocol):
    cls = legacy_record_class(module)
    for name in ("data_utils", "data_utils.dataset"):  # the original training code's package
        if module.startswith(name) and name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules[module], "LMDB_Image", cls, raising=False)
    rng = np.random.default_rng(0)
    pixels = {name: rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for name in ("v7", "v0012")}
    src = tmp_path / "legacy.lmdb"
    write_legacy_lmdb(src, {str(int(n[1:])).encode(): pickle.dumps(cls(p, int(n[1:])), protocol)
                            for n, p in pixels.items()})
    out = tmp_path / "new.lmdb"
    summary = convert_legacy_lmdb(src, out, items=["v7", "v0012"])
    assert summary["count"] == 2 and summary["missing"] == 0
    store = ImageStore(out)
    for name, expected in pixels.items():
        with Image.open(io.BytesIO(store.get_bytes(name))) as img:
            assert img.format == "PNG" and np.array_equal(np.asarray(img), expected)
    convert_legacy_lmdb(src, tmp_path / "keys.lmdb")  # no items: legacy keys kept
    assert ImageStore(tmp_path / "keys.lmdb").names() == ["12", "7"]


class RunsCode:
    """A pickle payload that would run a shell command when loaded with plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_legacy_converter_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    src, out = tmp_path / "evil.lmdb", tmp_path / "out.lmdb"
    write_legacy_lmdb(src, {b"1": pickle.dumps(RunsCode(marker))})
    with pytest.raises(InputError) as err:
        convert_legacy_lmdb(src, out)
    assert "refused" in str(err.value) and "system" in str(err.value) and "'1'" in str(err.value)
    assert not marker.exists() and not out.exists()
    with pytest.raises(RefusedPickleError, match="builtins.eval"):
        restricted_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")  # eval('1+1'), protocol 0
    assert not marker.exists()


def test_restricted_unpickler_numpy_only_plain_arrays():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(restricted_loads(pickle.dumps(array)), array)
    with pytest.raises(RefusedPickleError, match="object"):
        restricted_loads(pickle.dumps(np.array([None, 1], dtype=object)))


# ----------------------------------------------------------------------------- posters

def test_render_posters_deterministic_and_complete(tmp_path):
    from morec.tools import posters
    items = ROOT / "dataset" / "ml-100k" / "items.tsv"
    first, second = tmp_path / "p1.lmdb", tmp_path / "p2.lmdb"
    posters.render_posters(items, first, size=64, limit=25)
    posters.render_posters(items, second, size=64, limit=25)
    names = [line.split("\t")[0] for line in items.read_text().splitlines()[:25]]
    store1, store2 = ImageStore(first), ImageStore(second)
    assert sorted(store1.names()) == sorted(names) and store1.meta["info"]["synthetic"]
    for name in names:
        assert store1.get_bytes(name) == store2.get_bytes(name)
    with Image.open(io.BytesIO(store1.get_bytes(names[0]))) as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    # different genres or decades give different pictures
    assert store1.get_bytes(names[0]) != store1.get_bytes(names[1])


# ----------------------------------------------------------------------------- a broken store, checked before training

def test_truncated_lmdb_is_refused_before_any_read(image_dir, tmp_path):
    """An interrupted copy: reading past the file's end would kill the process with SIGBUS, so
    the read runs in a child process; it must end with the InputError instead."""
    out = tmp_path / "full.lmdb"
    with LmdbWriter(out) as writer:
        for k in range(300):                                 # ~300 pages, so half is well short
            writer.put(f"i{k}", os.urandom(4000))
    data = out.read_bytes()
    cut = tmp_path / "cut.lmdb"
    cut.write_bytes(data[: len(data) // 2])
    code = ("import sys; sys.path.insert(0, sys.argv[2])\n"
            "from morec.data.images import ImageStore\nfrom morec.errors import InputError\n"
            "try:\n    print(len(b''.join(ImageStore(sys.argv[1]).get_bytes(n) for n in ImageStore(sys.argv[1]).names())))\n"
            "except InputError as err:\n    print('error:', err); raise SystemExit(2)\n")
    result = subprocess.run([sys.executable, "-c", code, str(cut), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert f"image LMDB {cut} is truncated: {len(data) // 2} bytes, but its pages run to {len(data)} bytes" \
        in result.stdout


def test_not_an_lmdb_and_empty_folder(tmp_path):
    other = tmp_path / "notes.lmdb"
    other.write_text("not an LMDB\n" * 500)
    with pytest.raises(InputError, match=r"notes.lmdb is not a readable LMDB \(MDB_INVALID"):
        ImageStore(other).names()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty is a folder without data.mdb, not an LMDB"):
        ImageStore(tmp_path / "empty").names()


def test_damaged_image_found_before_training(image_dir, tmp_path):
    """features.item_images, which every vision run calls before training, decodes every image."""
    from conftest import write_dataset
    from morec.config import Config
    from morec.data import load_sequence_data
    from morec.features import item_images
    from morec.resolve import image_spec
    folder = write_dataset(tmp_path / "d", ["a", "b", "c"], ["u\ta b c a b", "v\tc b a c b"])
    build_lmdb(image_dir, folder / "images.lmdb", ["a", "b", "c"])
    env = lmdb.open(str(folder / "images.lmdb"), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"b", txn.get(b"b")[:40])                    # a cut-off JPEG
    env.close()
    cfg = Config(root_data_dir=str(tmp_path), dataset="d", item_tower="vision", image_size=8, max_seq_len=2)
    data = load_sequence_data(folder, "users.tsv", "items.tsv", 2, 5)
    with pytest.raises(InputError, match=r"1 of 3 images in .*images.lmdb do not decode \(items 'b'\)"):
        item_images(image_spec(cfg), data)


class _FailingDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        if index == 1:
            raise InputError("the image of item 'b' does not decode")
        return torch.tensor([index])


@pytest.mark.parametrize("workers", [0, 1])
def test_input_error_in_a_worker_keeps_its_message(workers):
    from morec.data.images import image_loader
    with pytest.raises(InputError) as err:
        list(image_loader(_FailingDataset(), workers, False))
    assert str(err.value) == "the image of item 'b' does not decode"
