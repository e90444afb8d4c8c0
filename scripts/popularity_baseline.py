"""Most-popular baseline on the leave-one-out split (morec/baselines.py): every user gets the same
item scores, each item's interaction count in all train parts, ranked under the models' protocol.

    python scripts/popularity_baseline.py [--dataset ml-100k] [--root_data_dir dataset]
                                          [--max_seq_len 20] [--min_seq_len 5]
                                          [--warm_min_count 20]   (the warm-item setting's items only)
                                          [--repeat_targets miss|rank|skip]   (SPEC "Evaluation")
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import re

from morec.baselines import popularity_metrics
from morec.config import make_config, parse_overrides
from morec.errors import InputError, run_cli
from morec.parts import load_data

OPTIONS = ("dataset", "root_data_dir", "max_seq_len", "min_seq_len", "warm_min_count", "behaviors", "news",
           "repeat_targets")


def card_comparison(cfg) -> str:
    """Whether the data set's CARD.md (scripts/describe_dataset.py) shows the numbers of these
    values, and if not which values differ: both rank by train counts over each user's last L+3
    items, so another L, min_seq_len, repeat rule or warm-item setting gives other numbers."""
    card = cfg.data_dir() / "CARD.md"
    try:
        found = re.search(r"--max_seq_len (\d+) --min_seq_len (\d+)", card.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        found = None
    if found is None:
        return f"(no dataset card with its values at {card})"
    theirs = {"max_seq_len": int(found[1]), "min_seq_len": int(found[2]), "repeat_targets": "miss",
              "warm_min_count": 0, "behaviors": "users.tsv", "news": "items.tsv"}
    differ = [f"{name} {getattr(cfg, name)} here, {value} there" for name, value in theirs.items()
              if getattr(cfg, name) != value]
    if not differ:
        return f"(the same values as {card.name}'s most-popular table: the same numbers)"
    return (f"(not {card.name}'s numbers: {'; '.join(differ)}; item counts and targets come from each user's "
            "last L+3 items, so these values change them)")


def main(argv: list[str]) -> None:
    overrides = parse_overrides(argv)
    unknown = sorted(set(overrides) - set(OPTIONS))
    if unknown:
        raise InputError(f"popularity_baseline takes only --{', --'.join(OPTIONS)}; got --{unknown[0]}")
    if any(isinstance(v, list) for v in overrides.values()):
        raise InputError("popularity_baseline takes one value per option, not a grid")
    cfg = make_config(overrides)
    data = load_data(cfg)
    print(f"{cfg.dataset}: {data.num_users} users, {data.num_items} items, L={cfg.max_seq_len}, "
          f"min_seq_len={cfg.min_seq_len}" + (f", warm_min_count={cfg.warm_min_count}" if cfg.warm_min_count else ""))
    print(card_comparison(cfg))
    for split in ("valid", "test"):
        m = popularity_metrics(data, split, cfg.repeat_targets)
        repeats = int(data.split_repeats(split).sum())
        note = f" ({repeats} repeat targets, rule {cfg.repeat_targets})" if repeats else ""
        print(f"popularity {split}: HR@10 {100 * m['HR@10']:.2f} NDCG@10 {100 * m['NDCG@10']:.2f}{note}")


if __name__ == "__main__":
    run_cli(main)
