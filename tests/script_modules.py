"""Shared by the tests that call a script's functions directly: scripts/NAME.py imported as a module."""
from __future__ import annotations

import importlib
import sys

from conftest import REPO


def import_script(name: str):
    """scripts/NAME.py as a module (importlib.import_module, so a second call returns the same
    module), with scripts/ on sys.path only while it is imported: the script's own imports of its
    neighbours resolve, later imports elsewhere do not see scripts/."""
    scripts = str(REPO / "scripts")
    sys.path.insert(0, scripts)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(scripts)
