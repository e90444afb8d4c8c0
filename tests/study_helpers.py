"""Shared by the tests of the study scripts (scripts/study_*.py): a study's refusal of options it
sets itself or cannot honour."""
from __future__ import annotations

from pathlib import Path

import pytest

from morec.errors import InputError


def assert_study_refuses(study_main, argv: list[str], message: str, out: Path) -> None:
    """study_main(["--out", OUT, "--table_only", *argv]) raises one InputError matching `message`
    (a regular expression) and leaves the folder `out` empty: refused before anything is written."""
    with pytest.raises(InputError, match=message):
        study_main(["--out", str(out), "--table_only"] + argv)
    assert not any(out.iterdir())
