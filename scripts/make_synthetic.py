"""Write a synthetic data set in our layout (users.tsv + items.tsv) at the scale of the paper's.

    python scripts/make_synthetic.py --preset mind [--users N] [--items N] [--seed S] [--out DIR] [--check]

Presets (sizes of the paper's data sets; `small` is for tests and quick runs):

    mind   630,235 users, 79,707 items, ~20 items per user (MIND, L = 20)  -> dataset/synthetic_mind
    hm     500,000 users, 86,879 items, ~13 items per user (HM hm_50w, L = 10) -> dataset/synthetic_hm
    small    2,000 users,    500 items, ~20 items per user                  -> dataset/synthetic_small
    pixel8m  8,000,000 users, 400,000 items, ~12.5 per user (~100M interactions)  -> dataset/synthetic_pixel8m
    pixel1m  1,000,000 users, 100,000 items, ~12.5 per user (~12.5M interactions) -> dataset/synthetic_pixel1m

The pixel presets write the raw PixelRec layout, the input of `scripts/convert_dataset.py --from
pixelrec --no_images` (and its `--stream` path): ``pixelrec_interaction/interactions.csv``
(``item_id,user_id,timestamp``, rows of 250,000 users at a time shuffled together, as a log
interleaves users) and ``pixelrec_iteminfo/item_info.csv`` (``item_id,title,description``),
generated 250,000 users at a time (bounded memory: about 1 GB whatever the size). Sizes: the
PixelRec paper (arXiv 2309.06789) reports ~200M interactions, ~30M users and ~400,000 cover images
for the whole PixelRec; Pixel8M is its 8M-user subset, here with 400,000 items and ~100M
interactions (users and interactions as this project's scale target states them; the real
subset's counts were not checked here). Pixel1M: 1M users and 100,000 items, same lengths.

What is drawn (numpy, vectorised, deterministic for a seed):
- sequence lengths: 5 + a log-normal tail (mean `mean_len`, capped at `max_len`), so after the
  protocol's cut to the last L+3 items the mean is a few items lower, as in the real files;
- items: power-law popularity p(rank r) ~ r^-alpha over a random permutation of the item ids
  (alpha 0.8: the top 1% of items hold about a third of the interactions at MIND size;
  a guess, not fitted to the real files);
- a learnable order: with probability `follow` an item is the fixed successor of the one before it
  (successors drawn from the same popularity), so sequential models beat popularity;
- every item once in some user's last L+3 items, so all `items` survive the protocol's filter;
- item titles (5-14 words) and abstracts (10-30 words) of random pseudo-words, for text towers.

Item names look like the originals' (`N123` for mind, `v123` for hm), users `U1`, `U2`, ...
Both files are written to temporary files and renamed, so a killed run leaves the old files or
none. A README.md in the folder records the command. Train on it with
`--dataset synthetic_mind` (or `--root_data_dir` / `--dataset` for another --out).
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import os
import shlex
import time
from pathlib import Path

import numpy as np

from morec.atomic_io import write_text_atomic

REPO = Path(__file__).resolve().parent.parent
PRESETS = {
    "mind": dict(users=630_235, items=79_707, mean_len=20.0, max_seq_len=20, prefix="N"),
    "hm": dict(users=500_000, items=86_879, mean_len=13.0, max_seq_len=10, prefix="v"),
    "small": dict(users=2_000, items=500, mean_len=20.0, max_seq_len=20, prefix="N"),
    "pixel8m": dict(users=8_000_000, items=400_000, mean_len=12.5, max_seq_len=20, prefix="", layout="pixelrec"),
    "pixel1m": dict(users=1_000_000, items=100_000, mean_len=12.5, max_seq_len=20, prefix="", layout="pixelrec"),
}
CHUNK_USERS = 250_000                  # pixelrec layout: users generated (and shuffled together) at a time
MIN_LEN = 5
CONSONANTS = list("bcdfghjklmnprstvwz") + ["ch", "sh", "th", "tr", "st", "br"]
VOWELS = list("aeiou") + ["ai", "ea", "ou", "io"]


def sequence_lengths(rng: np.random.Generator, users: int, mean_len: float, max_len: int) -> np.ndarray:
    """MIN_LEN + floor(log-normal), sigma 1, with the mean of the total close to `mean_len`."""
    extra_mean = max(mean_len - MIN_LEN + 0.5, 0.5)
    sigma = 1.0
    extra = np.floor(rng.lognormal(np.log(extra_mean) - sigma ** 2 / 2, sigma, users)).astype(np.int64)
    return np.minimum(MIN_LEN + extra, max_len)


def popularity(rng: np.random.Generator, items: int, alpha: float) -> np.ndarray:
    """(items,) probabilities: rank r has weight r^-alpha; ranks are a random permutation of the ids."""
    weights = np.arange(1, items + 1, dtype=np.float64) ** -alpha
    return (weights / weights.sum())[rng.permutation(items)]


def draw_sequences(rng: np.random.Generator, lengths: np.ndarray, items: int, alpha: float,
                   follow: float, window: int) -> np.ndarray:
    """The flat item ids (1..items) of all users, concatenated in user order."""
    p = popularity(rng, items, alpha)
    cdf = np.cumsum(p)
    cdf[-1] = 1.0

    def sample(n: int) -> np.ndarray:
        return np.searchsorted(cdf, rng.random(n), side="right") + 1

    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    base = sample(total)
    successor = np.concatenate([[0], sample(items)])                 # successor[i] follows item i
    follows = rng.random(total) < follow
    follows[starts] = False                                          # a user's first item follows nothing
    flat = follower_chains(base, follows, successor, lengths)
    # every item once in some user's last `window` items (the part the protocol keeps)
    return placed_in_window(rng, flat, lengths, window, rng.permutation(items) + 1)


def follower_chains(base: np.ndarray, follows: np.ndarray, successor: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat items: `base`, except that where `follows` the item is `successor` of the one
    before it (chains of followers, one link per pass)."""
    flat = base.copy()
    for _ in range(int(lengths.max())):
        updated = np.where(follows, successor[np.roll(flat, 1)], base)
        if np.array_equal(updated, flat):
            break
        flat = updated
    return flat


def placed_in_window(rng: np.random.Generator, flat: np.ndarray, lengths: np.ndarray, window: int,
                     place: np.ndarray) -> np.ndarray:
    """`flat` with the items `place` each put once into a random position among the users' last
    `window` items (the part the protocol keeps)."""
    starts = np.cumsum(lengths) - lengths
    position = np.arange(len(flat)) - np.repeat(starts, lengths)
    in_window = np.flatnonzero(position >= np.repeat(lengths - window, lengths))
    if len(in_window) < len(place):
        raise SystemExit(f"error: {len(in_window)} kept positions cannot hold all {len(place)} items; "
                         "ask for more users or fewer items")
    flat[rng.choice(in_window, size=len(place), replace=False)] = place
    return flat


def pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct pronounceable words of 1-3 syllables."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        n = 2 * count
        syllables = rng.integers(1, 4, n)
        cons = rng.integers(0, len(CONSONANTS), (n, 3))
        vows = rng.integers(0, len(VOWELS), (n, 3))
        for k in range(n):
            word = "".join(CONSONANTS[cons[k, j]] + VOWELS[vows[k, j]] for j in range(syllables[k]))
            if word not in seen:
                seen.add(word)
                words.append(word)
                if len(words) == count:
                    break
    return words


def texts(rng: np.random.Generator, items: int, vocab: list[str], low: int, high: int) -> list[str]:
    """`items` strings of low..high words; word frequencies follow a power law (like real text)."""
    lengths = rng.integers(low, high + 1, items)
    word_p = popularity(rng, len(vocab), 1.0)
    ids = np.searchsorted(np.cumsum(word_p), rng.random(int(lengths.sum())) * (1 - 1e-12), side="right")
    words = np.asarray(vocab, dtype=object)[ids].tolist()
    ends = np.cumsum(lengths).tolist()
    return [" ".join(words[a:b]) for a, b in zip([0] + ends[:-1], ends)]


def write_atomic(path: Path, lines) -> None:
    """Write the lines (each ending in a newline) to a temporary file, then rename it over `path`."""
    write_text_atomic(path, "".join(lines))


def generate(users: int, items: int, mean_len: float, max_seq_len: int, prefix: str, seed: int,
             alpha: float = 0.8, follow: float = 0.3, max_len: int = 500) -> tuple[list[str], list[str], dict]:
    """(items.tsv lines, users.tsv lines, stats)."""
    rng = np.random.default_rng(seed)
    lengths = sequence_lengths(rng, users, mean_len, max_len)
    window = max_seq_len + 3
    flat = draw_sequences(rng, lengths, items, alpha, follow, window)
    names = [f"{prefix}{k}" for k in range(items + 1)]               # names[0] unused (padding)
    vocab = pseudo_words(rng, 5000)
    titles = texts(rng, items, vocab, 5, 14)
    abstracts = texts(rng, items, vocab, 10, 30)
    item_lines = [f"{names[k + 1]}\t{titles[k]}\t{abstracts[k]}\n" for k in range(items)]
    tokens = np.asarray(names, dtype=object)[flat].tolist()
    ends = np.cumsum(lengths).tolist()
    user_lines = [f"U{u + 1}\t{' '.join(tokens[a:b])}\n"
                  for u, (a, b) in enumerate(zip([0] + ends[:-1], ends))]
    counts = np.sort(np.bincount(flat, minlength=items + 1)[1:])[::-1]
    top = max(1, items // 100)
    stats = {"users": users, "items": items, "interactions": len(flat),
             "mean_len": float(lengths.mean()), "mean_len_after_cut": float(np.minimum(lengths, window).mean()),
             "max_len": int(lengths.max()), "top1pct_share": float(counts[:top].sum() / counts.sum()),
             "items_once": int((counts == 1).sum())}
    return item_lines, user_lines, stats


def draw_chunk(rng: np.random.Generator, lengths: np.ndarray, cdf: np.ndarray, successor: np.ndarray,
               place: np.ndarray, follow: float, window: int) -> np.ndarray:
    """`draw_sequences` for one chunk of users with the data set's popularity `cdf` and `successor`
    table; the items `place` each go once into a random position of the chunk's last `window` items."""
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    base = np.searchsorted(cdf, rng.random(total), side="right") + 1
    follows = rng.random(total) < follow
    follows[starts] = False
    return placed_in_window(rng, follower_chains(base, follows, successor, lengths), lengths, window, place)


def write_pixelrec(out: Path, users: int, items: int, mean_len: float, max_seq_len: int,
                   args: argparse.Namespace, start: float) -> dict:
    """The raw PixelRec layout, CHUNK_USERS users at a time (see the module doc); files written
    under temp names and renamed at the end."""
    import polars as pl
    rng = np.random.default_rng(args.seed)
    cdf = np.cumsum(popularity(rng, items, args.alpha))
    cdf[-1] = 1.0
    successor = np.concatenate([[0], np.searchsorted(cdf, rng.random(items), side="right") + 1])
    chunks = -(-users // CHUNK_USERS)
    order = rng.permutation(items) + 1                               # items placed once, chunk by chunk
    inter, info = out / "pixelrec_interaction" / "interactions.csv", out / "pixelrec_iteminfo" / "item_info.csv"
    for path in (inter, info):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = inter.with_name(f".{inter.name}.tmp{os.getpid()}")
    total, count_sum = 0, np.zeros(items + 1, dtype=np.int64)
    with open(tmp, "wb") as f:
        f.write(b"item_id,user_id,timestamp\n")
        for chunk in range(chunks):
            first = chunk * CHUNK_USERS
            lengths = sequence_lengths(rng, min(CHUNK_USERS, users - first), mean_len, 500)
            flat = draw_chunk(rng, lengths, cdf, successor, order[chunk * items // chunks:(chunk + 1) * items // chunks],
                              args.follow, max_seq_len + 3)
            user = np.repeat(np.arange(first + 1, first + len(lengths) + 1), lengths)
            gaps = np.cumsum(rng.integers(1, 86_400, len(flat)))      # strictly increasing times per user
            starts = np.cumsum(lengths) - lengths
            times = np.repeat(rng.integers(1_600_000_000, 1_650_000_000, len(lengths)) - gaps[starts], lengths) + gaps
            shuffle = rng.permutation(len(flat))
            pl.DataFrame({"item_id": flat[shuffle], "user_id": user[shuffle], "timestamp": times[shuffle]}).write_csv(
                f, include_header=False)
            total += len(flat)
            count_sum += np.bincount(flat, minlength=items + 1)
    vocab = pseudo_words(rng, 5000)
    write_text_atomic(info, "item_id,title,description\n" + "".join(
        f"{k + 1},{title},{abstract}\n" for k, (title, abstract) in
        enumerate(zip(texts(rng, items, vocab, 5, 14), texts(rng, items, vocab, 10, 30)))))
    os.replace(tmp, inter)
    counts = np.sort(count_sum[1:])[::-1]
    stats = {"users": users, "items": items, "interactions": total, "mean_len": total / users,
             "top1pct_share": float(counts[:max(1, items // 100)].sum() / counts.sum()), "seconds": time.perf_counter() - start}
    command = shlex.join(["python", "scripts/make_synthetic.py", *sys.argv[1:]])
    write_text_atomic(out / "README.md", f"# Synthetic data set (not real data), PixelRec layout\n\nWritten by `{command}` "
                      f"(seed {args.seed}). Convert: `python scripts/convert_dataset.py --from pixelrec --no_images "
                      f"--stream {out} DST`.\n\n" + "".join(f"- {k}: {v}\n" for k, v in stats.items()))
    print(f"wrote {inter} and {info} in {stats['seconds']:.1f}s: {users:,} users, {items:,} items, {total:,} interactions")
    return stats


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--users", type=int, help="number of users (default: the preset's)")
    parser.add_argument("--items", type=int, help="number of items (default: the preset's)")
    parser.add_argument("--mean_len", type=float, help="mean sequence length before the L+3 cut")
    parser.add_argument("--alpha", type=float, default=0.8, help="popularity power law exponent")
    parser.add_argument("--follow", type=float, default=0.3, help="probability that an item is its predecessor's successor")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--out", help="data set folder (default: dataset/synthetic_<preset>)")
    parser.add_argument("--check", action="store_true", help="load the result with morec.data.load_sequence_data")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    users = args.users or preset["users"]
    items = args.items or preset["items"]
    mean_len = args.mean_len or preset["mean_len"]
    if users < 1 or items < 1 or mean_len < MIN_LEN:
        parser.error(f"--users and --items must be >= 1 and --mean_len >= {MIN_LEN}")
    out = Path(args.out) if args.out else REPO / "dataset" / f"synthetic_{args.preset}"
    start = time.perf_counter()
    if preset.get("layout") == "pixelrec":
        return write_pixelrec(out, users, items, mean_len, preset["max_seq_len"], args, start)
    item_lines, user_lines, stats = generate(users, items, mean_len, preset["max_seq_len"], preset["prefix"],
                                             args.seed, args.alpha, args.follow)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "items.tsv", item_lines)
    write_atomic(out / "users.tsv", user_lines)
    command = shlex.join(["python", "scripts/make_synthetic.py", *(sys.argv[1:] if argv is None else argv)])
    write_atomic(out / "README.md", [
        "# Synthetic data set (not real data)\n\n",
        f"Written by `{command}` (preset {args.preset}, seed {args.seed}, alpha {args.alpha}, follow {args.follow}).\n",
        "Same seed and arguments: the same files. Statistics before the protocol's filter and cut:\n\n",
        *[f"- {k}: {v:.3f}\n" if isinstance(v, float) else f"- {k}: {v}\n" for k, v in stats.items()]])
    stats["seconds"] = time.perf_counter() - start
    print(f"wrote {out}/users.tsv and items.tsv in {stats['seconds']:.1f}s: {users:,} users, {items:,} items, "
          f"{stats['interactions']:,} interactions (mean {stats['mean_len']:.1f} per user, "
          f"{stats['mean_len_after_cut']:.1f} after the L+3 cut, L={preset['max_seq_len']}), "
          f"top 1% of items hold {100 * stats['top1pct_share']:.1f}% of interactions")
    if args.check:
        from morec.data import load_sequence_data
        start = time.perf_counter()
        data = load_sequence_data(out, "users.tsv", "items.tsv", preset["max_seq_len"], MIN_LEN)
        print(f"load_sequence_data (L={preset['max_seq_len']}): {data.num_users:,} users, {data.num_items:,} items "
              f"in {time.perf_counter() - start:.1f}s")
    return stats


if __name__ == "__main__":
    main()
