"""Which trained run did a test command mean? A test whose values name a folder with no
checkpoint (a `--ties random` on a run trained without it: the label hashes every defining value)
is told which values differ from the nearest trained run beside it, not only "train this run first"."""
from __future__ import annotations

import json
from pathlib import Path

from morec.config import UNUSED_BY_MODEL, UNUSED_BY_TOWER, Config, run_control

MOST_DIFFERENCES = 4        # a folder differing in more values is another experiment, not a near miss


def defining_differences(cfg: Config, saved: dict) -> dict[str, tuple]:
    """{field: (this command's value, the saved run's value)} over the values that define a run
    (its label's: no run control, no field its towers do not read)."""
    defaults = Config().to_dict()
    unused = run_control(cfg) | UNUSED_BY_TOWER.get(cfg.item_tower, set()) | UNUSED_BY_MODEL.get(cfg.model, set())
    return {name: (value, saved.get(name, defaults[name])) for name, value in cfg.to_dict().items()
            if name not in unused and saved.get(name, defaults[name]) != value}


def nearest_trained_run(run_dir: Path, cfg: Config) -> tuple[Path, dict[str, tuple]] | None:
    """The trained run folder beside `run_dir` (a best checkpoint and a readable config.json)
    whose values differ from cfg's in the fewest defining values (at most MOST_DIFFERENCES), and
    those differences; None if there is none."""
    best = None
    try:
        siblings = sorted(p for p in run_dir.parent.iterdir() if p != run_dir and p.is_dir())
    except OSError:
        return None
    for folder in siblings:
        if not (folder / "checkpoint_best.pt").is_file():
            continue
        try:
            saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(saved, dict):
            continue
        differences = defining_differences(cfg, saved)
        if differences and len(differences) <= MOST_DIFFERENCES and (best is None or len(differences) < len(best[1])):
            best = (folder, differences)
    return best


def no_checkpoint_message(run_dir: Path, cfg: Config) -> str:
    """The error of a test whose run folder holds no checkpoint, naming the values that differ
    from the nearest trained run when there is one."""
    near = nearest_trained_run(run_dir, cfg)
    if near is None:
        return (f"no checkpoint in {run_dir}; train this run first (the train script with the same values "
                "or --label), then test it")
    folder, differences = near
    changed = ", ".join(f"--{name} {mine} (that run: {theirs})" for name, (mine, theirs) in differences.items())
    return (f"no checkpoint in {run_dir}: this command's values differ from the trained run {folder.name} "
            f"in {changed}; those values change the run's label. To test that run, give its values "
            "(drop or change those flags); to test these values, train this run first")
