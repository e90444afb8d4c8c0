"""Shared by the users-file reader tests (tests/test_fast_setup.py, tests/test_prepared.py): the
hand-made items and users lines whose right reading is the line-by-line reference's, random
users files, and data folders written by scripts/make_synthetic.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from conftest import REPO

ITEMS = ["i1", "i2", "i3", "i10", "i1x", "long_item_name_17", "\u00fcnic\u00f6de"]
OK = "u1\ti1 i2 i3 i10 i1x"
CASES = {                                  # name -> users.tsv lines (items: ITEMS)
    "plain": [OK, "u2\ti2 i2 i3 i1 long_item_name_17 i10"],
    "spaces around": ["  u1 \t  i1  i2 i3   i10 i1x  ", "u2\ti1 i1 i1 i1 i1 "],
    "unicode names": ["\u00e9l\u00e8ve\ti1 \u00fcnic\u00f6de i2 i3 \u00fcnic\u00f6de"],
    "name with a space": ["user one\ti1 i2 i3 i1 i2", OK],
    "prefix of an item": [OK, "u2\ti1 i2 i i3 i1"],
    "extension of an item": [OK, "u2\ti1 i2 i10x i3 i1"],
    "longer than any item": [OK, "u2\ti1 i2 long_item_name_17_and_more i3 i1"],
    "missing tab": [OK, "u2 i1 i2 i3 i1 i1"],
    "two tabs": [OK, "u2\ti1 i2\ti3 i1 i1"],
    "tab at the end": [OK, "u2\ti1 i2 i3 i1 i1\t"],
    "empty name": [OK, " \ti1 i2 i3 i1 i1"],
    "empty items": [OK, "u2\t   "],
    "blank inner line": [OK, "", "u2\ti1 i2 i3 i1 i1"],
    "trailing blank lines": [OK, "u2\ti1 i2 i3 i1 i1", "", "  ", "\t", ""],
    "duplicate user": [OK, "u1\ti2 i2 i2 i2 i2"],
    "no-break space": [OK, "u2\ti1 i2\u00a0i3 i1 i1"],
    "ideographic space at the end": [OK, "u2\ti1 i2 i3 i1 i1", "\u3000"],
    "form feed": [OK, "u2\ti1 i2 i3 i1 i1\x0c"],
    "control character": [OK, "u2\ti1 i2 i3\x01 i1 i1"],
    "NUL": [OK, "u2\ti1 i2 i3\x00 i1 i1"],
    "too short": ["u1\ti1 i2"],
}

PIECES = ["i1", "i2", "i3", "i10", "i1x", "long_item_name_17", "\u00fcnic\u00f6de", "i", "zz", " ", " ", " ",
          "\t", "\n", "\r", "\r\n", "\u00a0", "\x0b", "u", "u2"]


def random_users_file(rng) -> str:
    """1 to 7 lines of users with 3 to 8 of ITEMS[:6], 0 to 2 blank lines at the end, then up to 2
    random edits (a piece of PIECES inserted or put in place of one character)."""
    lines = []
    for k in range(rng.integers(1, 8)):
        items = " ".join(rng.choice(ITEMS[:6], rng.integers(3, 9)))
        lines.append(f"u{rng.integers(0, 6)}\t{items}")
    text = "\n".join(lines) + "\n" * int(rng.integers(0, 3))
    for _ in range(rng.integers(0, 3)):                     # a few random edits
        at = int(rng.integers(0, len(text) + 1))
        text = text[:at] + PIECES[rng.integers(len(PIECES))] + text[at + int(rng.integers(0, 2)):]
    return text


def each_random_users_file(folder: Path, seed: int, cases: int):
    """Write `cases` random users files in turn (random_users_file, drawn from one generator seeded
    with `seed`) as folder/users.tsv; yield (case number, the file's text) after each is written."""
    rng = np.random.default_rng(seed)
    for case in range(cases):
        text = random_users_file(rng)
        (folder / "users.tsv").write_bytes(text.encode())
        yield case, text


def run_make_synthetic(*args: str) -> dict:
    """scripts/make_synthetic.py's main(args) (loaded from its file: scripts/ is not a package);
    returns what main returns (the set's statistics)."""
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "scripts" / "make_synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))
