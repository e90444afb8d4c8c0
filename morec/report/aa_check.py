"""--aa_check: the A/A check of the default test on the runs of one system (>= 6 seeds): every
split of its seeds into two disjoint halves tested as A vs B; at alpha 0.05 about 5% of the splits
should be starred (docs/significance.md).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats

from morec.errors import InputError
from morec.report.grouping import check_runs, grouped, mode_name, tower_name
from morec.report.run_files import METRICS, load_runs
from morec.report.significance import ALPHA, seed_arrays, seed_level, sign_flip_p, user_cluster_test


AA_MIN_SEEDS = 6


def aa_splits(n_seeds: int, half: int):
    """Every split of range(n_seeds) into two disjoint index tuples of `half` each (unordered:
    the half holding the smallest index present is A)."""
    from itertools import combinations
    for a in combinations(range(n_seeds), half):
        rest = [i for i in range(n_seeds) if i not in a]
        for b in combinations(rest, half):
            if a[0] < b[0]:
                yield a, b


def binomial_range(n: int, rate: float = ALPHA, level: float = 0.95) -> tuple[int, int]:
    """The central `level` range of Binomial(n, rate) counts (stats.binom.interval)."""
    low, high = stats.binom.interval(level, n, rate)
    return int(low), int(high)


def aa_check(folders: list[str | Path], half: int | None = None, metric: str = "NDCG@10",
             max_splits: int = 5000, plant: list[float] | None = None) -> list[str]:
    """A/A check on the runs of one system (the A/A check): every split of its seeds into two
    disjoint halves tested as "A vs B" by the default test (the halves share no seed: Welch over
    the seed means, as the table would test two rows without shared seeds), next to the paired t
    with the halves paired in seed order, the per-user cluster test and the old pooled test (both
    sign flips by their normal approximation here, whose error is far below the resampling noise
    at these sizes). Returns the report's lines; the last is 'A/A: x of N splits with p < 0.05 (y%)'
    for the default test on `metric`. Splits overlap (they reuse seeds), so their p-values are
    dependent: the binomial range printed is a guide, not an exact interval. More than `max_splits`
    splits (20 seeds have 92,378 halvings): a uniform random sample of that many (seeded).
    plant: gains (points of `metric`) added to half A in turn, the share of splits the default
    and the paired test find (p < 0.05): their power against real seed variation."""
    runs = load_runs(folders, quiet=True)
    where = ", ".join(map(str, folders)) if len(folders) <= 3 else f"{len(folders)} folders ({folders[0]} ...)"
    if not runs:
        raise InputError(f"--aa_check: no tested run under {where}")
    groups = grouped(runs, check=False)
    if len(groups) != 1:
        names = [f"{tower_name(g['run'].iloc[0].config)} {mode_name(g['run'].iloc[0].config)} "
                 f"({len(g)} runs)" for g in groups]
        raise InputError(f"--aa_check: {where} holds {len(groups)} systems (table rows: {'; '.join(names)}); "
                         "give the runs of one system, differing only in their seed")
    check_runs(runs)
    group = groups[0]
    if len(group) < AA_MIN_SEEDS:
        raise InputError(f"--aa_check: {where} holds {len(group)} seed(s) of one system ({' '.join(map(str, group['seed']))}); "
                         f"an A/A check needs at least {AA_MIN_SEEDS} (two disjoint halves of >= 3)")
    arrays = seed_arrays(list(group["run"]))
    if arrays is None:
        raise InputError(f"--aa_check: some runs under {where} lack test_ranks.npz; re-run their test script")
    n = len(arrays.seeds)
    half = half or n // 2
    if not 2 <= half <= n // 2:
        raise InputError(f"--aa_half {half}: choose 2 .. {n // 2} for {n} seeds")
    lines = [f"A/A check: {n} seeds ({' '.join(map(str, arrays.seeds))}) x {len(arrays.users)} users of one system "
             f"under {where}; every split into two disjoint halves of {half} seeds"]
    for m in METRICS:
        x = arrays.values[m]
        means = x.mean(axis=1)
        noise = math.sqrt(float(x.var(axis=0, ddof=1).mean()) / x.shape[1])
        lines.append(f"{m}: run means {means.mean():.2f}, sd over seeds {means.std(ddof=1):.3f} points; "
                     f"per-user noise alone would give {noise:.3f} (run-level sd "
                     f"{math.sqrt(max(means.var(ddof=1) - noise ** 2, 0.0)):.3f})")
    total = math.comb(n, half) * math.comb(n - half, half) // 2
    if total <= max_splits:
        splits = list(aa_splits(n, half))
    else:                                             # distinct random splits, without listing them all
        rng, chosen = np.random.default_rng(0), set()
        while len(chosen) < max_splits:
            order = rng.permutation(n)
            a, b = tuple(sorted(order[:half].tolist())), tuple(sorted(order[half:2 * half].tolist()))
            chosen.add((a, b) if a[0] < b[0] else (b, a))
        splits = sorted(chosen)
        lines.append(f"{total} splits: a random sample of {max_splits} tested (--aa_max_splits)")
    everyone = np.arange(len(arrays.users))
    tests = {
        "seed-level (default: Welch over seed means)":
            lambda a, b: seed_level([(a, everyone, 1.0)], [(b, everyone, 1.0)], interval=False)["p"],
        "paired t over seed means (halves paired in seed order)":
            lambda a, b: seed_level([(a - b, everyone, 1.0)], interval=False)["p"],
        "per-user cluster sign flip (these models; not a test of A vs B)":
            lambda a, b: user_cluster_test(a, b, budget=0, interval=False)["p"],
        "old pooled (seed, user) sign flip (before the seed-level default)":
            lambda a, b: sign_flip_p(a.ravel(), b.ravel(), budget=0),
    }
    low, high = binomial_range(len(splits))
    default = {}
    for name, test in tests.items():
        for m in METRICS:
            x = arrays.values[m]
            p = np.array([test(x[list(a)], x[list(b)]) for a, b in splits])
            lines.append(f"{name}, {m}: {int((p < 0.05).sum())} of {len(splits)} with p < 0.05 "
                         f"({100 * np.mean(p < 0.05):.1f}%), {int((p < 0.01).sum())} with p < 0.01 "
                         f"({100 * np.mean(p < 0.01):.1f}%)")
            if name.startswith("seed-level"):
                default[m] = p
    for gain in plant or []:
        x = arrays.values[metric]
        for name in list(tests)[:2]:
            p = np.array([tests[name](x[list(a)] + gain, x[list(b)]) for a, b in splits])
            lines.append(f"power, {metric} + {gain:g} points planted in half A, {name}: {int((p < 0.05).sum())} of "
                         f"{len(splits)} with p < 0.05 ({100 * np.mean(p < 0.05):.1f}%)")
    lines.append(f"(binomial 95% range of the count at 5% if the {len(splits)} splits were independent: {low} .. {high}; "
                 "they share seeds, so the true spread is wider)")
    p = default[metric]
    hits = int((p < ALPHA).sum())
    lines.append(f"A/A: {hits} of {len(splits)} splits with p < {ALPHA:g} ({100 * hits / len(splits):.1f}%)")
    return lines
