"""The prepared form (morec.data.prepared): the data a run maps equals the data it parses (items,
user names, split, batches, evaluation arrays), and a prepared folder that is foreign, truncated,
overwritten, half-written or cannot be written is refused or rebuilt, never read stale."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, write_dataset
from morec.config import Config
from morec.data import SequenceBatches, load_sequence_data
from morec.data import prepared
from morec.data.prepared import prepared_sequence_data
from morec.errors import InputError
from users_files import CASES, ITEMS, each_random_users_file, run_make_synthetic

ML = REPO / "dataset" / "ml-100k"


def mapped(folder, cache, L=20, min_len=5, warm=0):
    return prepared_sequence_data(folder, "users.tsv", "items.tsv", L, min_len, warm, cache)


def outcome(load, folder, L, min_len, warm=0):
    """('data', items, user names, full) or ('error', message)."""
    try:
        data = load(folder, L, min_len, warm)
    except InputError as err:
        return ("error", str(err))
    return ("data", data.items, list(data.user_names), data.full.dtype, data.full.tolist())


def parsed(folder, L, min_len, warm=0):
    return load_sequence_data(folder, "users.tsv", "items.tsv", L, min_len, warm)


@pytest.fixture
def small_reads(monkeypatch):
    """The users file is read 256 bytes (whole lines) at a time: many blocks."""
    monkeypatch.setattr(prepared, "READ_BYTES", 256)


def only_folder(cache):
    return next(p for p in (cache / "prepared").iterdir() if not p.name.endswith(".lock"))


def built(cache) -> list[str]:
    """What the prepared folder holds, less the builders' lock files (.NAME.lock, kept)."""
    return sorted(p.name for p in (cache / "prepared").iterdir() if not p.name.endswith(".lock"))


# ------------------------------------------------------------------------------ the same data

@pytest.mark.parametrize("L, warm", [(20, 0), (10, 20)])
@pytest.mark.parametrize("reads", ["one read", "many reads"])
def test_ml100k_mapped_equals_parsed(tmp_path, monkeypatch, L, warm, reads):
    if reads == "many reads":
        monkeypatch.setattr(prepared, "READ_BYTES", 1000)
    want = parsed(ML, L, 5, warm)
    for _ in range(2):                                            # built, then opened
        got = mapped(ML, tmp_path, L, 5, warm)
        assert got.items == want.items and list(got.user_names) == want.user_names
        assert got.full.dtype == want.full.dtype and np.array_equal(got.full, want.full)
        for split in ("valid", "test"):
            for array in ("split_input", "split_target", "split_history", "split_repeats"):
                assert np.array_equal(getattr(got, array)(split), getattr(want, array)(split))
        assert np.array_equal(got.popularity(), want.popularity())
    batches_want = list(SequenceBatches(torch.from_numpy(want.train), 64, want.num_items, True).epoch(3, 1, 2))
    batches_got = list(SequenceBatches(torch.from_numpy(got.train), 64, got.num_items, True).epoch(3, 1, 2))
    assert len(batches_got) == len(batches_want) > 1
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
               for a, b in zip(batches_got, batches_want))


def test_run_setup_with_prepared_data_equals_the_parsed_one(tmp_path):
    from morec.parts import load_data
    base = dict(root_data_dir=str(REPO / "dataset"), dataset="ml-100k", cache_dir=str(tmp_path),
                train_user_fraction=0.5)
    want, got = load_data(Config(**base)), load_data(Config(**base, prepared_data=True))
    assert (tmp_path / "prepared").is_dir()
    assert np.array_equal(got.train, want.train) and np.array_equal(got.full, want.full)
    assert list(got.user_names) == want.user_names and got.items == want.items


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_made_users_files_as_parsed(tmp_path, small_reads, name):
    """Same data or the same error as the parsing reader, also when the file is not plain (the
    whole-file reader then decides) and across read blocks."""
    folder = write_dataset(tmp_path / "d", ITEMS, CASES[name] * (1 if "duplicate" in name else 9))
    want = outcome(parsed, folder, 2, 5)
    got = outcome(lambda *a: mapped(*a[:1], tmp_path / "cache", *a[1:]), folder, 2, 5)
    assert got == want


def test_random_users_files_as_parsed(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path / "d", ITEMS, [])
    kinds = set()
    for case, text in each_random_users_file(folder, seed=7, cases=120):
        monkeypatch.setattr(prepared, "READ_BYTES", [16, 64, 1 << 20][case % 3])
        want = outcome(parsed, folder, 2, 3)
        got = outcome(lambda *a: mapped(*a[:1], tmp_path / f"c{case}", *a[1:]), folder, 2, 3)
        assert got == want, text
        kinds.add(want[0])
    assert kinds == {"data", "error"}


# ------------------------------------------------------------------------------ refusals

def copy_ml(tmp_path):
    folder = tmp_path / "ml-100k"
    shutil.copytree(ML, folder, ignore=shutil.ignore_patterns("*.md", "*.py", "user_groups.tsv"))
    return folder


def test_changed_users_file_is_never_read_stale(tmp_path):
    folder = copy_ml(tmp_path)
    mapped(folder, tmp_path / "cache")
    lines = (folder / "users.tsv").read_text().splitlines(keepends=True)
    (folder / "users.tsv").write_text("".join(lines[1:]))          # another data identity
    got, want = mapped(folder, tmp_path / "cache"), parsed(folder, 20, 5)
    assert list(got.user_names) == want.user_names and np.array_equal(got.full, want.full)
    assert len(built(tmp_path / "cache")) == 2


def test_a_folder_from_other_source_files_is_refused(tmp_path):
    folder = copy_ml(tmp_path)
    old = only_folder(tmp_path / "cache") if mapped(folder, tmp_path / "cache") else None
    (folder / "items.tsv").write_text((folder / "items.tsv").read_text() + "9999\tnew item\n")
    new = prepared.prepared_folder(tmp_path / "cache", "ml-100k",
                                   prepared.source_identity(folder / "users.tsv", folder / "items.tsv"))
    shutil.copytree(old, new)                                      # put where the new files' form goes
    with pytest.raises(InputError, match=rf"{new} was built from other source files than .*items.tsv.*delete the folder"):
        mapped(folder, tmp_path / "cache")


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "no sidecar", "no split sidecar"])
def test_a_damaged_folder_is_one_error_naming_the_file_and_the_fix(tmp_path, damage):
    mapped(ML, tmp_path)
    folder = only_folder(tmp_path)
    split = folder / prepared.split_name(20, 5, 0)
    target = {"truncate": split / "full.i64", "overwrite": folder / "names.u8", "no sidecar": folder / "prepared.json",
              "no split sidecar": split / "split.json"}[damage]
    if damage == "truncate":
        os.truncate(target, target.stat().st_size - 8)
    elif damage == "overwrite":
        target.write_bytes(b"X" + target.read_bytes()[1:])
    else:
        target.unlink()
    with pytest.raises(InputError) as err:
        mapped(ML, tmp_path)
    assert f"delete the folder {folder}" in str(err.value)
    if damage in ("truncate", "overwrite"):
        assert str(target) in str(err.value)
    shutil.rmtree(folder)                                          # the fix works
    assert np.array_equal(mapped(ML, tmp_path).full, parsed(ML, 20, 5).full)


def test_a_build_that_fails_midway_leaves_no_folder(tmp_path, monkeypatch, small_reads):
    calls = []

    def fail_on_third(writer, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt                                # killed midway
        return real(writer, *args)
    real = prepared._append_users
    monkeypatch.setattr(prepared, "_append_users", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        mapped(ML, tmp_path)
    assert built(tmp_path) == []                                   # neither the folder nor its temp folder
    monkeypatch.setattr(prepared, "_append_users", real)
    assert np.array_equal(mapped(ML, tmp_path).full, parsed(ML, 20, 5).full)


def test_a_killed_builders_temp_folder_is_removed_and_the_build_redone(tmp_path):
    identity = prepared.source_identity(ML / "users.tsv", ML / "items.tsv")
    folder = prepared.prepared_folder(tmp_path, "ml-100k", identity)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    temp = folder.with_name(f".{folder.name}.tmp{int(dead.stdout)}")
    temp.mkdir(parents=True)
    (temp / "users.i32").write_bytes(b"half")
    got = mapped(ML, tmp_path)
    assert not temp.exists() and built(tmp_path) == [folder.name]
    assert np.array_equal(got.full, parsed(ML, 20, 5).full)


def test_a_full_disk_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(self, name, array):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(prepared._FolderWriter, "append", full_disk)
    with pytest.raises(InputError, match=r"cannot write the prepared data .*No space left on device.*--cache_dir"):
        mapped(ML, tmp_path)
    assert built(tmp_path) == []


def test_mapped_arrays_are_private_to_the_process(tmp_path):
    """A write to a mapped array stays in this process (copy-on-write): the file is unchanged."""
    got = mapped(ML, tmp_path)
    got.full[0, 0] = -1
    again = mapped(ML, tmp_path)
    assert again.full[0, 0] != -1 and np.array_equal(again.full, parsed(ML, 20, 5).full)


@pytest.mark.parametrize("lines", [
    [CASES["plain"][0], "", "u2\ti1 i2 i3 i1 i1"],                  # a blank line: an error, wherever blocks end
    [CASES["plain"][0], "u2\ti1 i2 i3 i1 i1\t", "u3\ti1 i2 i3 i1 i1"],  # a tab before a line end: an error
    [CASES["plain"][0], "u2\ti1 i2 i3 i1 i1  ", "u3\ti1 i2 i3 i1 i1", "", " "],   # spaces, trailing blanks: data
    ["\ufeffu1\ti1 i2 i3 i10 i1x", "\ufeffu2\ti1 i2 i3 i1 i1"],       # a BOM inside the file is part of a name
    [CASES["plain"][0], "u2\ti1 i2 i3 i1 i1", "u1\ti1 i2 i3 i1 i1"],   # a user twice, in two blocks
])
def test_every_block_edge_as_parsed(tmp_path, monkeypatch, lines):
    folder = write_dataset(tmp_path / "d", ITEMS, lines)
    want = outcome(parsed, folder, 2, 5)
    for size in range(1, len((folder / "users.tsv").read_bytes()) + 2):
        monkeypatch.setattr(prepared, "READ_BYTES", size)
        assert outcome(lambda *a: mapped(*a[:1], tmp_path / f"c{size}", *a[1:]), folder, 2, 5) == want, size


# ------------------------------------------------------------------------------ the streaming converter

from morec.tools.convert import convert                                      # noqa: E402
from morec.tools.stream_convert import stream_convert                        # noqa: E402
from test_convert import EXPECTED, ITEMS as ITEM_FILE, MAKERS, make_pixelrec  # noqa: E402


def both_converters(src, tmp_path, fmt="pixelrec", **options):
    """(outcome of convert, outcome of stream_convert): ('files', users.tsv, items.tsv) or ('error', message)."""
    results = []
    for name, run in (("convert", convert), ("stream", stream_convert)):
        dst = tmp_path / f"out_{name}"
        shutil.rmtree(dst, ignore_errors=True)
        try:
            run(fmt, src, dst, **options)
            results.append(("files", (dst / "users.tsv").read_bytes(), (dst / "items.tsv").read_bytes()))
        except InputError as err:
            results.append(("error", str(err).replace(str(dst), "DST")))
    return results


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_stream_converter_writes_what_convert_writes(tmp_path, fmt):
    """Each format's hand-made copy (test_convert): the same bytes as convert, and the known sequences."""
    MAKERS[fmt](tmp_path / "src")
    old, new = both_converters(tmp_path / "src", tmp_path, fmt, no_images=fmt in ("pixelrec", "microlens", "ninerec"))
    assert new == old and new[0] == "files"
    users = dict(line.split("\t") for line in new[1].decode().splitlines())
    if fmt == "sasrec_txt":                      # the file is in time order; names are numbers; no item text
        assert users == {u[1:]: EXPECTED[u].replace("i", "") for u in EXPECTED} and list(users) == ["3", "1", "2"]
        assert new[2].decode().split() == ["3", "5", "4", "1", "2", "6"]                        # first seen
    else:
        assert users == EXPECTED and list(users) == ["u2", "u1", "u3"]     # time order, ties in file order
        assert [line.split("\t")[0] for line in new[2].decode().splitlines()] == ITEM_FILE
    assert sorted(os.listdir(tmp_path / "out_stream")) == ["CARD.md", "items.tsv", "users.tsv"]


def test_stream_converter_on_a_synthetic_log_and_its_covers(tmp_path):
    run_make_synthetic("--preset", "pixel1m", "--users", "3000", "--items", "400", "--out", str(tmp_path / "src"))
    old, new = both_converters(tmp_path / "src", tmp_path, no_images=True)
    assert new == old and new[0] == "files" and len(new[1].splitlines()) == 3000
    make_pixelrec(tmp_path / "toy")                                          # with covers: the same images.lmdb keys
    stream_convert("pixelrec", tmp_path / "toy", tmp_path / "toy_out", allow_missing_images=True)
    from morec.data.images import ImageStore
    assert (tmp_path / "toy_out" / "images.lmdb").exists() and len(ImageStore(tmp_path / "toy_out" / "images.lmdb").names()) > 0


LOG = "pixelrec_interaction/Pixel_toy.csv"
EDITS = {
    "blank inner line": lambda text: text.replace("\n", "\n\n", 3).replace("\n\n", "\n", 2),
    "trailing blank lines": lambda text: text + "\n\n",
    "not a number": lambda text: text.replace(",u1,30", ",u1,thirty"),
    "float times": lambda text: text.replace(",u1,30", ",u1,30.5").replace(",u3,9", ",u3,9.25"),
    "empty user": lambda text: text.replace(",u1,30", ",,30"),
    "user with a space": lambda text: text.replace(",u1,30", ",u 1,30"),
    "unknown item": lambda text: text.replace("i4,u3,7", "i9,u3,7"),
    "spaces around names": lambda text: text.replace("i4,u3,7", " i4 , u3 ,7"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_stream_converter_refuses_what_convert_refuses(tmp_path, edit):
    make_pixelrec(tmp_path / "src")
    log = tmp_path / "src" / LOG
    log.write_text(EDITS[edit](log.read_text()))
    old, new = both_converters(tmp_path / "src", tmp_path, no_images=True)
    assert new == old
    assert new[0] == ("files" if edit in ("trailing blank lines", "float times", "spaces around names") else "error")


def test_stream_converter_refuses_a_duplicate_item_as_convert(tmp_path):
    make_pixelrec(tmp_path / "src")
    info = tmp_path / "src" / "pixelrec_iteminfo" / "Pixel_toy.csv"
    info.write_text(info.read_text() + "i4,0,1,2,3,4,5,6,again,tag,twice\n")
    old, new = both_converters(tmp_path / "src", tmp_path, no_images=True)
    assert new == old and new[0] == "error" and "already listed" in new[1]


def test_stream_conversion_killed_midway_leaves_no_dst_and_the_next_run_converts(tmp_path, monkeypatch):
    import morec.tools.stream_convert as module
    make_pixelrec(tmp_path / "src")

    def killed(path, *args):
        path.write_text("u2\ti3")                                            # half a file, then the end
        raise KeyboardInterrupt
    monkeypatch.setattr(module, "_write_users", killed)
    with pytest.raises(KeyboardInterrupt):
        stream_convert("pixelrec", tmp_path / "src", tmp_path / "out", no_images=True)
    assert sorted(os.listdir(tmp_path)) == ["src"]                           # no DST, no temp folder
    monkeypatch.undo()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp{int(dead.stdout)}"                         # what SIGKILL leaves
    stale.mkdir()
    (stale / "users.tsv").write_text("u2\ti3")
    stream_convert("pixelrec", tmp_path / "src", tmp_path / "out", no_images=True)
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]
    assert dict(line.split("\t") for line in (tmp_path / "out" / "users.tsv").read_text().splitlines()) == EXPECTED


def test_stream_conversion_on_a_full_disk_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import morec.tools.stream_convert as module

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(module, "write_text_atomic", full)
    make_pixelrec(tmp_path / "src")
    dst = tmp_path / "new" / "out"
    with pytest.raises(InputError, match=rf"could not write {dst} \(No space left on device\); nothing was written; "
                                         "free space on the disk"):
        stream_convert("pixelrec", tmp_path / "src", dst, no_images=True)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_ranks_started_together_build_once_and_read_the_same(tmp_path):
    """Two processes (DDP ranks) asking for a prepared form that does not exist yet: one builds
    (under the lock), the other waits and maps it; both see the parsed data."""
    code = ("import sys, hashlib; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
            "from morec.data.prepared import prepared_sequence_data as p;"
            "d = p(Path(sys.argv[2]), 'users.tsv', 'items.tsv', 20, 5, 0, Path(sys.argv[3]));"
            "print(hashlib.sha256(d.full.tobytes()).hexdigest())")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(REPO), str(ML), str(tmp_path)], stdout=subprocess.PIPE,
                             text=True) for _ in range(2)]
    digests = {run.communicate(timeout=300)[0].strip() for run in runs}
    import hashlib
    assert digests == {hashlib.sha256(parsed(ML, 20, 5).full.tobytes()).hexdigest()}
    assert len(built(tmp_path)) == 1 and not list((tmp_path / "prepared").glob(".*tmp*"))


def test_bench_prepared_converts_and_checks_the_same_data(tmp_path):
    """scripts/bench_prepared.py on a tiny raw log: both converters write the same files, and
    parsing, building and mapping give the same data (it exits 1 otherwise)."""
    run_make_synthetic("--preset", "pixel1m", "--users", "2000", "--items", "300", "--out", str(tmp_path / "raw"))
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_prepared.py"), "--raw", str(tmp_path / "raw"),
                           "--work", str(tmp_path / "w"), "--phases", "convert,setup", "--reference"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "same files" in done.stdout and "data: 2,000 users, 300 items kept" in done.stdout
    assert "setup, map the prepared form" in done.stdout


def test_convert_dataset_stream_and_prepare_from_the_command_line(tmp_path, capsys):
    """`convert_dataset.py --stream --prepare CACHE`: a run with --prepared_data then maps the form
    built there, without building (its folder's files are not rewritten)."""
    from test_convert import run_main
    make_pixelrec(tmp_path / "src")
    code, out, err = run_main(REPO / "scripts" / "convert_dataset.py",
                              ["--from", "pixelrec", str(tmp_path / "src"), str(tmp_path / "toy"), "--no_images",
                               "--stream", "--prepare", str(tmp_path / "cache"), "--min_seq_len", "3"], capsys)
    assert code == 0, err
    assert "wrote 3 users, 7 items and 16 interactions" in out and "prepared form under" in out
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    got = mapped(tmp_path / "toy", tmp_path / "cache", 20, 3)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == stamps
    want = parsed(tmp_path / "toy", 20, 3)
    assert list(got.user_names) == want.user_names == ["u2", "u1", "u3"] and np.array_equal(got.full, want.full)


def test_train_counts_by_blocks_are_the_whole_counts(monkeypatch):
    """SequenceData.train_counts counts blocks of rows (no copy of the mapped split): the counts of
    one bincount over all train rows, with or without a training-user subset."""
    from morec.data import sequences
    from morec.data.sequences import with_train_users
    monkeypatch.setattr(sequences, "COUNT_ROWS", 7)
    for data in (parsed(ML, 20, 5), with_train_users(parsed(ML, 20, 5), 0.3)):
        whole = np.bincount(np.ascontiguousarray(data.train).ravel(), minlength=data.num_items + 1)
        whole[0] = 0
        assert np.array_equal(data.train_counts(), whole) and data.train_counts().dtype == whole.dtype


def test_bench_prepared_evalpass_shards_give_the_one_pass_counts_and_resume(tmp_path):
    """bench_prepared's evalpass on ml-100k: the counts of shards of 300 users, concatenated, are
    morec.train.evaluate's counts of one pass over all 943 users, with the same metrics; a missing
    shard (an interrupted pass) is the only one computed again."""
    import torch
    from script_modules import import_script
    from morec.config import make_config
    from morec.parts import build_run_model, load_data
    from morec.train import evaluate
    bench = import_script("bench_prepared")
    cfg = make_config(dict(item_tower="id", device="cpu", max_seq_len=10))
    data, device = load_data(cfg), torch.device("cpu")
    torch.manual_seed(0)
    model = build_run_model(cfg, data, device).eval()
    metrics, counts = evaluate(model, data, "valid", cfg, device)

    bench.evaluate_shards(model, data, cfg, device, tmp_path, 300)
    files = sorted(tmp_path.glob("shard-*.npz"))
    assert [f.name for f in files] == [f"shard-0000{i}.npz" for i in range(4)] and not list(tmp_path.glob(".*"))
    total = bench.pass_totals(tmp_path, data.num_users, cfg)
    stacked = np.concatenate([np.load(f)["counts"] for f in files])
    assert np.array_equal(stacked, counts.numpy()) and total["users"] == 943 and total["shards"] == 4
    assert total["HR@10"] == metrics["HR@10"] and total["NDCG@10"] == metrics["NDCG@10"] and total["cpu"] > 0

    stamps = {f: f.stat().st_mtime_ns for f in files if f.name != "shard-00002.npz"}
    files[2].unlink()                                                     # the pass was cut there
    bench.evaluate_shards(model, data, cfg, device, tmp_path, 300)
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps and files[2].is_file()
    assert bench.pass_totals(tmp_path, data.num_users, cfg)["HR@10"] == metrics["HR@10"]
