"""Synthetic "posters" for the MovieLens-100k movies, drawn into an image LMDB.

MovieLens-100k ships no images, so the vision pipeline is tested on pictures drawn from the
movie's real metadata in items.tsv. They are NOT real posters. Each one carries three signals:

- genres: the background is split into vertical stripes, one per genre, coloured by genre
  (fixed palette below; "unknown" is grey);
- decade: a dark band at the top holds one white square per decade since the 1910s
  (1920s: 1 ... 1990s: 8) on a band colour that also depends on the decade; no squares when the
  year is unknown;
- title: the title's words, wrapped, in black on a white panel in the lower half (PIL's built-in
  bitmap font, so the pixels do not depend on the FreeType version).

The same items file always gives the same bytes (PNG, no randomness, no timestamps).

Command line: ``python dataset/ml-100k/render_posters.py``. Benchmarks and tests call
`render_posters` (any items file, size, output) or `ml100k_posters` (the repository's copy).
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from morec.config import REPO_ROOT
from morec.data.files import ItemRow, read_items
from morec.data.image_format import progress_bar
from morec.tools.lmdb_builder import LmdbWriter, encode_image
from morec.errors import InputError

ML100K = REPO_ROOT / "dataset" / "ml-100k"
GENRE_COLOURS = {  # the 19 MovieLens genres; "unknown" also covers the one misspelled entry
    "Action": (220, 40, 40), "Adventure": (240, 140, 20), "Animation": (250, 220, 30),
    "Children's": (150, 220, 60), "Comedy": (255, 170, 200), "Crime": (90, 90, 90),
    "Documentary": (120, 170, 130), "Drama": (60, 90, 200), "Fantasy": (170, 90, 230),
    "Film-Noir": (30, 30, 30), "Horror": (110, 0, 20), "Musical": (240, 110, 240),
    "Mystery": (40, 60, 90), "Romance": (230, 60, 130), "Sci-Fi": (30, 200, 220),
    "Thriller": (140, 60, 30), "War": (100, 110, 50), "Western": (200, 150, 90),
    "unknown": (160, 160, 160),
}
DECADE_BANDS = [(20, 20, 60), (40, 20, 60), (60, 20, 40), (70, 40, 20), (50, 60, 20),
                (20, 60, 40), (20, 50, 70), (10, 10, 10)]  # 1920s .. 1990s
YEAR = re.compile(r"\b(18|19|20)\d\d\b")


def parse_item(row: ItemRow) -> tuple[str, int | None, list[str]]:
    """(title, year or None, genres) from an items.tsv row ``id \\t title \\t year genres``."""
    words = row.abstract.split()
    year = int(words[0]) if words and words[0].isdigit() and len(words[0]) == 4 else None
    if year is None:  # a few rows put the year in the title, e.g. "... (1995)"
        found = YEAR.search(row.title)
        year = int(found.group()) if found else None
    genres = [word for word in words if word in GENRE_COLOURS] or ["unknown"]
    return row.title, year, genres


def decade_index(year: int | None) -> int:
    """1 for the 1920s ... 8 for the 1990s (clamped to 1..8); 0 for an unknown year."""
    if year is None:
        return 0
    return min(max((year - 1910) // 10, 1), len(DECADE_BANDS))


def _font() -> ImageFont.ImageFont:
    """PIL's built-in bitmap font: the same pixels on every machine."""
    return ImageFont.load_default_imagefont()


def draw_poster(title: str, year: int | None, genres: list[str], size: int = 96) -> Image.Image:
    """The size x size RGB poster of one movie (see the module doc for the layout)."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for i, genre in enumerate(genres):  # genre stripes
        x0, x1 = size * i // len(genres), size * (i + 1) // len(genres)
        draw.rectangle([x0, 0, x1 - 1, size - 1], fill=GENRE_COLOURS[genre])
    band, decade = max(size // 6, 6), decade_index(year)  # decade band
    draw.rectangle([0, 0, size - 1, band - 1],
                   fill=DECADE_BANDS[decade - 1] if decade else (128, 128, 128))
    square, step = max(band // 2, 2), size // (len(DECADE_BANDS) + 1)
    for k in range(decade):
        x = step // 2 + k * step
        draw.rectangle([x, (band - square) // 2, x + square - 1, (band + square) // 2 - 1],
                       fill=(255, 255, 255))
    _draw_title(draw, title, size)
    return img


def _draw_title(draw: ImageDraw.ImageDraw, title: str, size: int) -> None:
    """Title words, wrapped to the width, on a white panel at the bottom (at most half the height)."""
    font = _font()
    char_w, line_h = 6, 11  # the bitmap font's cell
    lines = textwrap.wrap(title, width=max((size - 3) // char_w, 1))[: max(size // 2 // line_h, 1)]
    top = size - len(lines) * line_h - 2
    draw.rectangle([0, top, size - 1, size - 1], fill=(255, 255, 255))
    for i, line in enumerate(lines):
        draw.text((2, top + 1 + i * line_h), line, fill=(0, 0, 0), font=font)


def poster_png(row: ItemRow, size: int = 96) -> bytes:
    """PNG bytes of the poster of one items.tsv row."""
    return encode_image(draw_poster(*parse_item(row), size=size), "png")


def render_posters(items: Path, out: Path, size: int = 96, limit: int | None = None) -> dict:
    """Draw the posters of the items (the first `limit` ones if given) into the LMDB `out`."""
    if size < 16:
        raise InputError(f"--size {size} is too small to draw on; use 16 or more")
    rows = read_items(Path(items))[:limit]
    info = {"generator": "dataset/ml-100k/render_posters.py", "synthetic": True, "size": size,
            "note": "drawn from title, year and genres; not real posters"}
    with LmdbWriter(out, info=info) as writer:
        for row in progress_bar(rows, len(rows), "posters"):
            writer.put(row.name, poster_png(row, size))
    return {"path": str(out), "count": len(rows), "size": size}


def ml100k_posters() -> Path:
    """dataset/ml-100k/posters.lmdb (96 x 96), rendered first if it is not there yet."""
    out = ML100K / "posters.lmdb"
    if not out.exists():
        render_posters(ML100K / "items.tsv", out)
    return out
