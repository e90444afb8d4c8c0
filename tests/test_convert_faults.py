"""Converters under hostile conditions (morec/tools/convert.py): header rows in headerless item
files, out-of-range options, a conversion killed with SIGKILL, and destinations that cannot be
written (below a file, read-only, disk full). Each ends well or in one `error:` line (exit 2), and
never leaves a half-written DST or a temp folder behind.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from conftest import REPO
from morec.errors import InputError
from morec.tools.convert import convert
from test_convert import EXPECTED, ITEMS, MAKERS, lines, make_microlens, make_ninerec, run_main

sys.path.insert(0, str(REPO / "scripts"))
from fault_drill import run_read_only as drill_run_read_only  # noqa: E402  (shared with the drill)
from fault_drill import start_paused_conversion  # noqa: E402  (the killed-conversion child, shared with the drill)

SCRIPT = REPO / "scripts" / "convert_dataset.py"


def item_names(folder: Path) -> list[str]:
    return [line.split("\t")[0] for line in lines(folder / "items.tsv")]


# ----------------------------------------------------------------------------- header rows

@pytest.mark.parametrize("header", [None, "item_id,title", "videoID,title_en", "item,title"])
def test_microlens_title_file_with_or_without_header(header, tmp_path, caplog):
    """The public copies of MicroLens' title csv disagree on a header row: with one, it is skipped
    (logged), never read as an item `item_id` titled `title`."""
    src = tmp_path / "src"
    make_microlens(src)
    titles = src / "MicroLens-toy_title_en.csv"
    if header:
        titles.write_text(header + "\n" + titles.read_text())
    with caplog.at_level(logging.INFO, logger="morec.tools.convert"):
        convert("microlens", src, tmp_path / "out", no_images=True)
    assert item_names(tmp_path / "out") == ITEMS
    assert lines(tmp_path / "out" / "users.tsv") == [f"{u}\t{seq}" for u, seq in EXPECTED.items()]
    skipped = [r.getMessage() for r in caplog.records if "header row" in r.getMessage()]
    assert skipped == ([f"{titles}, line 1: {header.split(',')[0]!r} is a header row, not an item; skipped"]
                       if header else [])


def numeric_microlens(src: Path, first_title_line: str) -> None:
    """MicroLens with numeric ids (as shipped): items 101..103, and `first_title_line` on top."""
    src.mkdir(parents=True)
    (src / "MicroLens-toy_pairs.tsv").write_text("7\t101 102 103\n8\t103 101\n")
    (src / "MicroLens-toy_title_en.csv").write_text(first_title_line + "101,One\n102,Two\n103,Three\n")


def test_unknown_header_names_among_numeric_ids_are_a_header(tmp_path):
    numeric_microlens(tmp_path / "src", "vid,caption\n")
    convert("microlens", tmp_path / "src", tmp_path / "out", no_images=True)
    assert item_names(tmp_path / "out") == ["101", "102", "103"]


@pytest.mark.parametrize("first, interacted", [("100,Zero\n", False), ("x9,An item named x9\n", True)])
def test_a_first_row_that_is_an_item_is_kept(first, interacted, tmp_path):
    """A number among numbers is data (an item without interactions is kept), and so is a first
    row that is an item of the interactions."""
    numeric_microlens(tmp_path / "src", first)
    if interacted:
        pairs = tmp_path / "src" / "MicroLens-toy_pairs.tsv"
        pairs.write_text(pairs.read_text() + f"9\t{first.split(',')[0]} 101\n")
    convert("microlens", tmp_path / "src", tmp_path / "out", no_images=True)
    assert item_names(tmp_path / "out") == [first.split(",")[0], "101", "102", "103"]


def test_pairs_tsv_and_ninerec_item_csv_header_rows_are_skipped(tmp_path):
    src = tmp_path / "src"
    numeric_microlens(src, "item_id,title\n")
    pairs = src / "MicroLens-toy_pairs.tsv"
    pairs.write_text("user_id\titem_id\n" + pairs.read_text())
    convert("microlens", src, tmp_path / "out", no_images=True)
    assert lines(tmp_path / "out" / "users.tsv") == ["7\t101 102 103", "8\t103 101"]
    make_ninerec(tmp_path / "nine")
    items = tmp_path / "nine" / "Toy_item.csv"
    items.write_text("video_id,title,title_en\n" + items.read_text(encoding="utf-8"), encoding="utf-8")
    convert("ninerec", tmp_path / "nine", tmp_path / "nine_out", no_images=True)
    assert item_names(tmp_path / "nine_out") == ITEMS


@pytest.mark.parametrize("fmt, header, shown", [("ninerec", "video_id,user_id,timestamp", "video_id user_id timestamp"),
                                                ("sasrec_txt", "user_id item_id", "user_id item_id")])
def test_header_line_of_a_headerless_interaction_file_is_skipped(fmt, header, shown, tmp_path, caplog):
    """NineRec's pair csv and SASRec's txt have no header; a copy with one converts the same."""
    MAKERS[fmt](tmp_path / "plain")
    convert(fmt, tmp_path / "plain", tmp_path / "plain_out", no_images=True)
    MAKERS[fmt](tmp_path / "src")
    [inter] = [p for p in (tmp_path / "src").iterdir() if p.name in ("Toy_pair.csv", "toy.txt")]
    inter.write_text(header + "\n" + inter.read_text())
    with caplog.at_level(logging.INFO, logger="morec.tools.convert"):
        convert(fmt, tmp_path / "src", tmp_path / "out", no_images=True)
    for name in ("users.tsv", "items.tsv"):
        assert lines(tmp_path / "out" / name) == lines(tmp_path / "plain_out" / name)
    assert [r.getMessage() for r in caplog.records if "header line" in r.getMessage()] == [
        f"{inter}, line 1: {shown!r} is a header line, not an interaction; skipped"]


# ----------------------------------------------------------------------------- options

@pytest.mark.parametrize("option, message", [
    (["--max_seq_len", "0"], "--max_seq_len 0 must be at least 1"),
    (["--max_seq_len", "-5"], "--max_seq_len -5 must be at least 1"),
    (["--min_seq_len", "0"], "--min_seq_len 0 must be at least 3"),
    (["--min_seq_len", "2"], "--min_seq_len 2 must be at least 3"),
    (["--resize", "0", "--no_images"], "--resize 0 must be a side length from 1 to 4096"),
    (["--resize", "5000"], "--resize 5000 must be a side length from 1 to 4096"),
    (["--resize", "32", "--no_images"], "--resize 32 applies to covers, and this conversion has none"),
])
def test_out_of_range_options_are_one_error_line(option, message, tmp_path, capsys):
    make_microlens(tmp_path / "src")
    code, out, err = run_main(SCRIPT, ["--from", "microlens", str(tmp_path / "src"), str(tmp_path / "out"),
                                       "--allow_missing_images", *option], capsys)
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["src"]


# ----------------------------------------------------------------------------- killed conversions

def test_sigkill_mid_conversion_leaves_no_dst_and_the_next_run_cleans_up(tmp_path, caplog):
    """Killed (SIGKILL) while writing: DST does not exist (its files are in the temp folder only);
    the next run removes that stale temp folder, says so, and converts."""
    make_microlens(tmp_path / "src")
    argv = [str(SCRIPT), "--from", "microlens", str(tmp_path / "src"), str(tmp_path / "out"), "--no_images"]
    process, temp = start_paused_conversion(argv, stderr=subprocess.PIPE)   # once the converter pauses (or exits)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, process.stderr.read()
    assert temp.parent == tmp_path and sorted(os.listdir(temp)) == ["items.tsv", "users.tsv"]
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.INFO, logger="morec.tools.convert"):
        convert("microlens", tmp_path / "src", tmp_path / "out", no_images=True)
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]                  # the stale folder is gone
    assert any(f"removed {temp}" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(tmp_path / "out")) == ["CARD.md", "items.tsv", "users.tsv"]


def test_temp_folder_of_a_running_conversion_is_refused(tmp_path):
    """A temp folder whose process still runs is another conversion to the same DST: refused,
    naming the folder and the process, and left alone."""
    make_microlens(tmp_path / "src")
    temp = tmp_path / f".out.tmp{os.getppid()}"
    temp.mkdir()
    with pytest.raises(InputError, match=rf"{temp} belongs to process {os.getppid()}, which still runs"):
        convert("microlens", tmp_path / "src", tmp_path / "out", no_images=True)
    assert temp.is_dir() and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- unwritable DST

@pytest.mark.parametrize("below", ["file.txt/out", "file.txt/deeper/out"])
def test_dst_below_a_regular_file_is_one_error(below, tmp_path, capsys):
    make_microlens(tmp_path / "src")
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    code, _, err = run_main(SCRIPT, ["--from", "microlens", str(tmp_path / "src"), str(tmp_path / below),
                                     "--no_images"], capsys)
    assert code == 2 and err == (f"error: cannot create {tmp_path / below}: {tmp_path / 'file.txt'} is a "
                                 "file, not a folder; choose a DST outside it\n"), err
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "src"]


def run_read_only(folder: Path, command: list[str]) -> subprocess.CompletedProcess:
    """`command` run with `folder` read-only (fault_drill.run_read_only: a read-only bind mount in a
    private mount namespace for root, whom file modes do not stop, else the folder's mode); the
    test is skipped where no folder can be made read-only (root without mount namespaces)."""
    try:
        return drill_run_read_only(folder, command)
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("below", ["out", "new/out"])
def test_read_only_dst_parent_is_one_error(below, tmp_path):
    make_microlens(tmp_path / "src")
    (tmp_path / "ro").mkdir()
    done = run_read_only(tmp_path / "ro", [sys.executable, str(SCRIPT), "--from", "microlens", str(tmp_path / "src"),
                                           str(tmp_path / "ro" / below), "--allow_missing_images"])
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: cannot write in {tmp_path / 'ro'} (")
    assert "choose a DST in a writable folder" in done.stderr
    assert os.listdir(tmp_path / "ro") == []


def full_disk_in_items_tsv(monkeypatch) -> None:
    import morec.tools.convert as convert_module
    real = convert_module.write_text_atomic

    def write(path: Path, text: str) -> None:
        if path.name == "items.tsv":                            # users.tsv is written by then
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, text)
    monkeypatch.setattr(convert_module, "write_text_atomic", write)


def full_disk_in_images_lmdb(monkeypatch) -> None:
    from morec.tools.lmdb_builder import LmdbWriter

    def flush(self) -> None:
        raise lmdb.DiskError("mdb_txn_commit: No space left on device")
    monkeypatch.setattr(LmdbWriter, "_flush", flush)


@pytest.mark.parametrize("fault", [full_disk_in_items_tsv, full_disk_in_images_lmdb])
@pytest.mark.parametrize("below", ["out", "new/deeper/out"])
def test_full_disk_is_one_error_and_nothing_is_left(fault, below, tmp_path, monkeypatch):
    make_microlens(tmp_path / "src")
    fault(monkeypatch)
    dst = tmp_path / below
    with pytest.raises(InputError) as err:
        convert("microlens", tmp_path / "src", dst, allow_missing_images=True)
    assert str(err.value).startswith(f"could not write {dst} (")
    assert "No space left on device" in str(err.value)
    assert str(err.value).endswith(f"nothing was written; free space on the disk of {dst.parent} or "
                                   "choose a DST on another disk")
    assert sorted(os.listdir(tmp_path)) == ["src"]          # no DST, no temp folder, no new parents


def test_unreadable_cover_is_named_as_a_source_file(tmp_path, monkeypatch):
    """An OSError reading SRC while the LMDB is written names that file, not a DST problem."""
    import morec.tools.lmdb_builder as lmdb_builder
    make_microlens(tmp_path / "src")
    cover = tmp_path / "src" / "covers" / "i4.jpg"

    def unreadable(path: Path, resize, quality) -> bytes:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    monkeypatch.setattr(lmdb_builder, "_file_value", unreadable)
    with pytest.raises(InputError, match=rf"^could not read {cover} \(Permission denied\); make it readable"):
        convert("microlens", tmp_path / "src", tmp_path / "out", allow_missing_images=True)
    assert sorted(os.listdir(tmp_path)) == ["src"]
