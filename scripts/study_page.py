"""The page of a study: `<out>/README.md` (or `--page PATH`), written by the study script itself
after its tables and figures, so a re-run (or `--table_only`, or `--page_only`) rewrites it.

A page holds one section per (study, output folder): the study's title and question (the first
paragraph of the study script's docstring), the exact command, the settings of its runs, the
tables it just wrote in that folder (`<name>*.md`, shown inline, with links to them and to the
csv) and its figures (`<name>*.png`); then, once per study, its reading: the `READING` text held
in the study script (`scripts/study_<name>.py`), so the reading is edited there, not on the page.
Several studies can share a page (Q1 and Q3 write docs/studies/ml-100k/README.md); each rewrites
only its own sections, between the `<!-- study: ... -->` / `<!-- end: ... -->` markers. Text
outside the markers (the page's heading) is kept.
"""
from __future__ import annotations

import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import dataclasses
import importlib
import os
import re
import shlex
from pathlib import Path

from morec.config import Config

REPO = next(p for p in Path(__file__).resolve().parents if (p / "morec").is_dir())
# Options that only say how the tables were made, not what was run: left out of the command shown.
NOT_SHOWN = ("--table_only", "--page_only")
# Config fields that do not describe a run (where it is written, how it is watched).
NOT_SETTINGS = {"label", "runs_dir", "resume", "overwrite", "progress", "log_every", "cache_dir"}
MARK = re.compile(r"<!-- (study|reading): (.+?) -->\n(.*?)<!-- end \1: \2 -->\n?", re.S)


def study_module(name: str):
    """The study script `scripts/study_<name>.py` as a module (its docstring and READING)."""
    return importlib.import_module(f"study_{name}")


def question(module) -> str:
    """The first paragraph of the study script's docstring, on one line."""
    first = (module.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(first.split()).rstrip(":")


def command(name: str, argv: list[str], width: int = 100) -> str:
    """The study's command line as typed, less --table_only / --page_only, as an indented block
    wrapped before an option where a line would pass `width` characters."""
    words = ["python", f"scripts/study_{name}.py", *map(shlex.quote, (a for a in argv if a not in NOT_SHOWN))]
    lines = [[]]
    for word in words:
        if word.startswith("--") and lines[-1] and len(" ".join(lines[-1] + [word])) > width - 10:
            lines.append([])
        lines[-1].append(word)
    return " \\\n        ".join(" ".join(line) for line in lines)


def show(value) -> str:
    """A setting's value for the page: a path inside the repository relative to it, a path outside
    it by its last part (a run folder, a temporary folder)."""
    if isinstance(value, str) and os.path.isabs(value):
        path = Path(value)
        try:
            return str(path.resolve().relative_to(REPO))
        except ValueError:
            return path.name
    return str(value) if value != "" else "(none)"


def settings(configs: list[Config]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(values every run shares that the studies set (study_common.SMALL) or that differ from
    Config's defaults, {field: the values it takes} for the fields that differ between runs)."""
    from study_common import SMALL
    default = dataclasses.asdict(Config())
    values = [dataclasses.asdict(c) for c in configs]
    shared, varying = {}, {}
    for field in default:
        if field in NOT_SETTINGS:
            continue
        seen = []
        for v in values:
            if show(v[field]) not in seen:
                seen.append(show(v[field]))
        if len(seen) > 3 and any("/" in v for v in seen):
            folders = [v for v in seen if v != "(none)"]         # e.g. init_from: one source run per seed
            varying[field] = (["(none)"] if len(folders) < len(seen) else []) + [f"{len(folders)} run folders"]
        elif len(seen) > 1:
            varying[field] = seen
        elif seen and (field in SMALL or values[0][field] != default[field]):
            shared[field] = seen[0]
    return shared, varying


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def table_text(path: Path) -> str:
    """A table file written by the study, its `# title` demoted to a bold line."""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines[0] = f"**{lines[0][2:]}**"
    return "\n".join(lines)


def seeds_line(argv: list[str]) -> str:
    """How the command chose its seeds: --seed, or the studies' default (study_common.SEED_RULE)."""
    from study_common import SEED_RULE
    given = [a.split("=")[0] for a in argv if a.split("=")[0] in ("--seed", "--id.seed", "--mo.seed")]
    where = "the rule is `default_seeds` in scripts/study_common.py, the power behind it is in docs/significance.md"
    if given:
        return (f"**Seeds.** Set by {', '.join(f'`{g}`' for g in given)}; without it the studies run {SEED_RULE}; "
                f"{where}. A Δ pairs the seeds both rows share.")
    return f"**Seeds.** The studies' default: {SEED_RULE}; {where}. A Δ pairs the seeds both rows share."


def section(name: str, title: str, argv: list[str], configs: list[Config], out: Path, page: Path) -> str:
    module = study_module(name)
    shared, varying = settings(configs)
    folder = relative(out, page.parent)
    lines = [f"## {title}" + ("" if folder == "." else f" (`{folder}/`)"), "",
             f"**Question.** {question(module)}", "",
             "Made with (from the repository root; `--table_only` rewrites the tables and this page from the "
             "runs there are):", "", f"    {command(name, argv)}", "",
             f"**Settings** ({len(configs)} runs; the study's values and those that differ from "
             "`morec/config.py`'s defaults). Every run: " + ", ".join(f"`{k}` {v}" for k, v in shared.items()) + "."]
    if varying:
        lines += ["", "Across the runs: " + "; ".join(f"`{k}` {', '.join(v)}" for k, v in varying.items()) + "."]
    lines += ["", seeds_line(argv)]
    for table in sorted(out.glob(f"{name}*.md")):
        link = relative(table, page.parent)
        csv = table.with_suffix(".csv")
        links = f"[{table.name}]({link})" + (f", [{csv.name}]({relative(csv, page.parent)})" if csv.is_file() else "")
        lines += ["", f"Table ({links}):", "", table_text(table)]
    figures = sorted(out.glob(f"{name}*.png"))
    if figures:
        lines += ["", "Figures: " + ", ".join(f"[{f.stem[len(name):].strip('_') or name}]({relative(f, page.parent)})"
                                             for f in figures), ""]
        lines += [f"![{f.stem}]({relative(f, page.parent)})" for f in figures]
    return "\n".join(lines) + "\n"


def reading(name: str, modality: str = "text", dataset: str = "ml-100k") -> str:
    """The study script's reading of its results on `dataset`: READING (a text, or {--modality:
    text} when the study's modalities read differently) for ml-100k, READING_BY_DATASET[dataset]
    for another data set; none where the script has no reading of that data set (a reading quotes
    its data set's results, so another data set's would be wrong there)."""
    module = study_module(name)
    text = (getattr(module, "READING", "") if dataset == "ml-100k"
            else getattr(module, "READING_BY_DATASET", {}).get(dataset, ""))
    text = (text.get(modality, "") if isinstance(text, dict) else text).strip()
    return f"### Reading: {name}\n\n{text}\n" if text else ""


def upsert(text: str, kind: str, key: str, body: str, before: str | None = None) -> str:
    """`text` with the block (kind, key) replaced by `body`, or added before the block `before`
    (a "reading: NAME" key) when it is there, else at the end."""
    block = f"<!-- {kind}: {key} -->\n{body}<!-- end {kind}: {key} -->\n"
    for match in MARK.finditer(text):
        if (match.group(1), match.group(2)) == (kind, key):
            return text[:match.start()] + block + text[match.end():]
    if before:
        for match in MARK.finditer(text):
            if f"{match.group(1)}: {match.group(2)}" == before:
                return text[:match.start()] + block + "\n" + text[match.start():]
    return text.rstrip("\n") + "\n\n" + block


def write_page(name: str, title: str, argv: list[str], configs: list[Config], out: Path,
               page: Path | None = None, modality: str = "text") -> Path:
    """Write (or update) the study's section and reading on its page; returns the page's path."""
    out = Path(out)
    page = Path(page) if page else out / "README.md"
    text = page.read_text(encoding="utf-8") if page.is_file() else (
        f"# Studies: {page.parent.name}\n\n"
        "Written by the study scripts (`scripts/study_page.py`): a re-run of a study, or the same command "
        "with `--table_only`, rewrites its section. The readings are held in the study scripts "
        "(`READING`); edit them there.\n")
    folder = relative(out, page.parent)
    key = name if folder == "." else f"{name} {folder}"
    text = upsert(text, "study", key, section(name, title, argv, configs, out, page), before=f"reading: {name}")
    body = reading(name, modality, configs[0].dataset if configs else "ml-100k")
    if body:
        text = upsert(text, "reading", name, body)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {page}")
    return page
