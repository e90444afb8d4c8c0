"""Shared by the vision tests: ml-100k with rendered posters, and tiny random vision encoders
(each built once per test process, for IMAGE_SIZE-pixel images)."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from conftest import REPO
from morec.tools.posters import render_posters

IMAGE_SIZE = 32
TINY_VISION = {"resnet": "random_tiny_resnet18", "swin": "random_tiny_swin", "mae": "random_tiny_vit_mae"}


def _temp_dir(prefix: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.lru_cache(maxsize=None)
def poster_root() -> Path:
    """A root_data_dir whose ml-100k/ holds the real users.tsv / items.tsv and posters.lmdb
    rendered at IMAGE_SIZE pixels (the repository's own dataset folder is left alone)."""
    root = _temp_dir("morec-posters-")
    folder = root / "ml-100k"
    folder.mkdir()
    for name in ("users.tsv", "items.tsv"):
        (folder / name).symlink_to(REPO / "dataset" / "ml-100k" / name)
    render_posters(folder / "items.tsv", folder / "posters.lmdb", size=IMAGE_SIZE)
    return root


@functools.lru_cache(maxsize=None)
def tiny_vision_encoders() -> Path:
    """A pretrained_dir holding random_tiny_resnet18, random_tiny_swin and random_tiny_vit_mae."""
    import sys
    sys.path.insert(0, str(REPO / "pretrained_models"))
    import make_tiny
    root = _temp_dir("morec-tiny-vision-")
    make_tiny.make_tiny_resnet(root / TINY_VISION["resnet"], "resnet18")
    make_tiny.make_tiny_swin(root / TINY_VISION["swin"], image_size=IMAGE_SIZE)
    make_tiny.make_tiny_vit_mae(root / TINY_VISION["mae"], image_size=IMAGE_SIZE)
    return root


def tiny_for(encoder_name: str) -> str:
    """The tiny stand-in of a script's encoder (resnet18/50 -> ResNet18, swin_* -> Swin, mae -> ViT-MAE)."""
    return TINY_VISION["resnet" if "resnet" in encoder_name else "swin" if "swin" in encoder_name else "mae"]
