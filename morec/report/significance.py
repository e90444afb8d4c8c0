"""The tables' significance tests (docs/significance.md).

Default ("seed-level") test: the trained run is the unit. A table compares two
systems, each trained with several seeds; the question "does A beat B on this data set" is
answered against the run-to-run variation, which a test that pairs single users of fixed runs
never sees (its null holds the trained models fixed; measured on 10 ml-100k IDRec seeds it
starred 15% of A/A comparisons at alpha 0.05, docs/significance.md).
- p: a t test over the per-seed means, paired (scipy.stats.ttest_rel: the seed-wise differences
  of the run means) when both rows share >= 2 seeds, Welch (scipy.stats.ttest_ind,
  equal_var=False) over the two rows' seed means when they do not. Its null contains the seed
  variation; a run mean averages ~10^3 users, so the normal model of the t test is close. An
  exact sign flip over seeds would need no such model but cannot go below 2 / 2^S (0.25 with 3
  seeds, 0.0625 with 5): no power at the studies' seed counts. Dror et al. 2018, "The
  Hitchhiker's Guide to Testing Statistical Significance in NLP" (ACL), for the choice of a
  parametric test when its assumptions hold; Bouthillier et al. 2021, "Accounting for Variance
  in Machine Learning Benchmarks" (MLSys), for comparing over several seeds (the run as sample).
- interval: a 95% percentile interval of a two-level (hierarchical) bootstrap: resample the
  seeds with replacement, then the users within each resampled seed (Saravanan, Berman and
  Sober 2020, "Application of the hierarchical bootstrap to multi-level data in neuroscience",
  NBDC). With few seeds it is narrower than the t interval (the seeds drawn are treated as the
  population), so the star follows p, not the interval.
Per-user ("these trained models rank these users differently") test, a separate column, never
starred: each user's difference averaged over the seeds, users resampled as clusters (one sign
per user across all its seeds; bootstrap of users); its null holds the trained runs fixed.

A row is paired with its base row by pairing() (the seeds both share, >= 2: paired t; else all
seeds of each, each >= 2: Welch; a single-seed row or runs without per-user files get a problem
message, never a silent result); compare() runs both tests on one metric, paired_columns() gives
a table row's columns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from morec.errors import InputError
from morec.report.run_files import METRICS, Run, per_user_cached

CONFIDENCE = 0.95
RESAMPLES = 2000                      # bootstrap and sign-flip resamples per comparison (--resamples)
ALPHA = 0.05


def fmt_p(p: float, resamples: int | None = None) -> str:
    """'p=0.013'; a resampled p at or below 1/(R+1) (no resample as extreme) as 'p < 1/(R+1)'
    (the test's resolution), an analytic one below 10^-4 as 'p < 0.0001'."""
    if p is None or math.isnan(p):
        return "p=-"
    if resamples and p <= 1.0 / (resamples + 1) * (1 + 1e-9):
        return f"p < {1.0 / (resamples + 1):.2g}"
    if p < 1e-4:
        return "p < 0.0001"
    return f"p={p:.2g}"


@dataclass
class SeedArrays:
    """A row's per-user metrics: seeds (S,), users (U,), values {metric: (S, U) percent}."""
    seeds: list
    users: pd.Index
    values: dict
    runs: list


def seed_arrays(runs: list[Run]) -> SeedArrays | None:
    """The row's runs as (seed, user) arrays; None when a run has no per-user file. Refuses runs
    that tested other users (another data set or filter) or repeat a seed."""
    frames = [per_user_cached(r) for r in runs]
    if not runs or any(f is None for f in frames):
        return None
    seeds = [r.config.get("seed") for r in runs]
    if len(set(map(str, seeds))) < len(seeds):
        raise InputError(f"two runs of one row share a seed ({', '.join(str(r.dir) for r in runs)}); "
                         "a row holds one run per seed")
    for run, frame in zip(runs[1:], frames[1:]):
        if not frame.index.equals(frames[0].index):
            raise InputError(f"{run.dir} and {runs[0].dir} did not test the same users in the same order; "
                             "they cannot be one row (same data set and filters?)")
    return SeedArrays(seeds, frames[0].index, {m: np.stack([f[m].to_numpy() for f in frames]) for m in METRICS}, runs)


def seed_values(terms: list) -> np.ndarray:
    """(S,): per seed, sum of weight x mean over `users` of x[seed]; terms [(x (S, U), users, weight)]."""
    return sum(w * x[:, users].mean(axis=1) for x, users, w in terms)


def hierarchical_resamples(terms: list, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(R,): the statistic of seed_values(terms).mean() under a two-level bootstrap: the S seeds
    resampled with replacement, then, within each resampled seed, the users of each term (a group
    stays a group: stratified) resampled with replacement."""
    n_seeds = terms[0][0].shape[0]
    out = np.empty(resamples)
    users_max = max(len(users) for _, users, _ in terms)
    batch = max(1, 2 ** 22 // max(n_seeds * users_max, 1))
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        chosen = rng.integers(0, n_seeds, (size, n_seeds))                       # (B, S) resampled seeds
        total = np.zeros((size, n_seeds))
        for x, users, w in terms:
            picks = users[rng.integers(0, len(users), (size, n_seeds, len(users)))]   # (B, S, U_term)
            total += w * x[chosen[:, :, None], picks].mean(axis=2)
        out[start:start + size] = total.mean(axis=1)
    return out


def t_p_value(va: np.ndarray, vb: np.ndarray | None) -> float:
    """Two-sided p of the one-sample (paired differences) t test of va, or Welch's test of va vs
    vb; a zero-variance input gives p = 1 when the means are equal and 0 when they are not."""
    if vb is None:
        if np.ptp(va) <= 1e-12 * max(1.0, abs(va).max()):
            return 1.0 if abs(va.mean()) <= 1e-12 else 0.0
        return float(stats.ttest_1samp(va, 0.0).pvalue)
    if np.ptp(va) <= 1e-12 and np.ptp(vb) <= 1e-12:
        return 1.0 if abs(va.mean() - vb.mean()) <= 1e-12 else 0.0
    return float(stats.ttest_ind(va, vb, equal_var=False).pvalue)


def seed_level(a_terms: list, b_terms: list | None = None, resamples: int = RESAMPLES, seed: int = 0,
               interval: bool = True) -> dict:
    """The default test of a contrast: {"diff", "ci_low", "ci_high", "p"}. Paired (b_terms None):
    a_terms hold the seed-wise differences, p of the paired t test; unpaired: the contrast is
    seed mean of a_terms - of b_terms, p of Welch's test. interval False: no bootstrap (NaN)."""
    va = seed_values(a_terms)
    vb = None if b_terms is None else seed_values(b_terms)
    diff = float(va.mean() - (0.0 if vb is None else vb.mean()))
    low = high = math.nan
    if interval:
        rng = np.random.default_rng(seed)
        boot = hierarchical_resamples(a_terms, resamples, rng)
        if b_terms is not None:
            boot = boot - hierarchical_resamples(b_terms, resamples, rng)
        low, high = (float(v) for v in np.quantile(boot, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return {"diff": diff, "ci_low": low, "ci_high": high, "p": t_p_value(va, vb)}


def mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def bootstrap_interval(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval (percentile) of mean(a - b): pairs resampled with replacement.
    a, b (P,) paired values; a fixed seed makes the table reproducible."""
    batch = max(1, 2 ** 24 // max(len(a), 1))                 # resamples held at once: ~16M values
    ci = stats.bootstrap((a, b), mean_difference, paired=True, vectorized=True, n_resamples=resamples,
                         confidence_level=CONFIDENCE, method="percentile", batch=batch,
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


def sign_flip_p(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0,
                budget: float = 2e8) -> float:
    """Two-sided p-value of the paired sign-flip test of mean(a - b) = 0 (each pair's two values
    swapped at random under the null), statistic |sum(d)|. Identical pairs: p = 1.

    Pairs with equal values do not change the statistic under any flip, so only the others count.
    Exact (every sign vector) when 2^n <= resamples; else p = (1 + #{resamples as extreme}) /
    (R + 1), which cannot go below 1/(R+1) (fmt_p prints that as 'p < 1/(R+1)'). Above `budget`
    differences x resamples, the normal approximation of the same test: sum(d) has mean 0 and
    variance sum(d^2) over the flips (tests/test_results_table.py compares it with scipy)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tolerance = 1e-9 * max(observed, float(np.abs(d).sum()), 1e-300)
    if n <= 20 and 2 ** n <= resamples:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        return float(np.mean(np.abs(signs @ d) >= observed - tolerance))
    if n * resamples > budget:
        return float(2 * stats.norm.sf(observed / math.sqrt(float(np.sum(d * d)))))
    rng = np.random.default_rng(seed)
    extreme, batch = 0, max(1, 2 ** 22 // n)
    for start in range(0, resamples, batch):
        size = min(batch, resamples - start)
        signs = rng.integers(0, 2, (size, n), dtype=np.int8) * 2 - 1
        extreme += int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (1 + extreme) / (resamples + 1)


def user_cluster_test(a: np.ndarray, b: np.ndarray, users: np.ndarray | None = None, resamples: int = RESAMPLES,
                      seed: int = 0, budget: float = 2e8, interval: bool = True) -> dict:
    """'These trained models rank these users differently': a (S_a, U), b (S_b, U); each user's
    mean over the seeds of a minus of b, users as clusters (one sign per user across all its seeds
    in the sign flip; users resampled in the bootstrap). Not a test of 'A beats B' (the runs are held fixed)."""
    users = np.arange(a.shape[1]) if users is None else users
    d = a[:, users].mean(axis=0) - b[:, users].mean(axis=0)
    zeros = np.zeros_like(d)
    low, high = bootstrap_interval(d, zeros, resamples, seed) if interval and np.ptp(d) > 0 else \
        (float(d.mean()), float(d.mean())) if interval else (math.nan, math.nan)
    return {"diff": float(d.mean()), "ci_low": low, "ci_high": high, "p": sign_flip_p(d, zeros, resamples, seed, budget)}


@dataclass
class Pairing:
    """How two rows are compared: paired on shared seeds, unpaired (Welch), or not at all (problem)."""
    a: SeedArrays | None
    b: SeedArrays | None
    paired: bool = False
    problem: str = ""
    note: str = ""

    @property
    def test_name(self) -> str:
        if self.problem:
            return self.problem
        if self.paired:
            return f"paired t, {len(self.a.seeds)} seeds x {len(self.a.users)} users" + (f" ({self.note})" if self.note else "")
        return (f"Welch, {len(self.a.seeds)} vs {len(self.b.seeds)} seeds x {len(self.a.users)} users "
                f"(unpaired: {self.note})")


def pairing(runs: list[Run], base: list[Run]) -> Pairing:
    """Pair the runs of a row with those of its base row (module docstring): the seeds both share
    (>= 2: paired t), else all seeds of each (each >= 2: Welch); a single-seed row or runs without
    per-user files get a problem message, never a silent result."""
    if len(runs) < 2 or len(base) < 2:
        one = runs if len(runs) < 2 else base
        return Pairing(None, None, problem=f"{len(one)} seed in {'this row' if one is runs else 'its base row'} "
                                           f"({', '.join(r.dir.name for r in one)}): no seed-level test (needs >= 2 seeds each)")
    a, b = seed_arrays(runs), seed_arrays(base)
    if a is None or b is None:
        return Pairing(None, None, problem="no per-user file (test_ranks.npz) in some runs: re-run their test script")
    if not a.users.equals(b.users):
        raise InputError(f"{runs[0].dir} and {base[0].dir} did not test the same users in the same order; "
                         "they cannot be compared user by user (same data set and filters?)")
    shared = [s for s in a.seeds if s in b.seeds]
    if len(shared) >= 2:
        left_out = sorted(set(map(str, a.seeds + b.seeds)) - set(map(str, shared)),
                          key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))   # 6 7 8 9 10
        ia, ib = [a.seeds.index(s) for s in shared], [b.seeds.index(s) for s in shared]
        pick = lambda x, idx: SeedArrays(shared, x.users, {m: v[idx] for m, v in x.values.items()},  # noqa: E731
                                         [x.runs[i] for i in idx])
        return Pairing(pick(a, ia), pick(b, ib), paired=True,
                       note=f"seeds {' '.join(left_out)} of one row only left out" if left_out else "")
    return Pairing(a, b, note=f"the rows share {len(shared)} seed{'s' if len(shared) != 1 else ''}; "
                              f"{' '.join(map(str, a.seeds))} vs {' '.join(map(str, b.seeds))}")


def compare(pair: Pairing, metric: str, users: np.ndarray | None = None, resamples: int = RESAMPLES,
            seed: int = 0) -> dict:
    """Seed-level difference (default test) and per-user cluster test of `metric` over `users`
    (all when None): {"diff", "ci_low", "ci_high", "p", "user_diff", "user_ci_low", "user_ci_high", "user_p"}."""
    nan = dict.fromkeys(("diff", "ci_low", "ci_high", "p", "user_diff", "user_ci_low", "user_ci_high", "user_p"), math.nan)
    if pair.problem or pair.a is None:
        return nan
    a, b = pair.a.values[metric], pair.b.values[metric]
    users = np.arange(a.shape[1]) if users is None else np.asarray(users)
    result = seed_level([(a - b, users, 1.0)], None, resamples, seed) if pair.paired else \
        seed_level([(a, users, 1.0)], [(b, users, 1.0)], resamples, seed)
    user = user_cluster_test(a, b, users, resamples, seed)
    return {**result, **{f"user_{k}": v for k, v in user.items()}}


def paired_columns(rows: pd.DataFrame, base: pd.DataFrame | None, resamples: int, reason: str = "") -> dict:
    """The row's columns against its IDRec row: the test used, then per metric the seed-level
    diff / CI / p and the per-user cluster test's diff / CI / p."""
    pair = pairing(list(rows["run"]), list(base["run"])) if base is not None else Pairing(None, None, problem=reason)
    out = {"test": pair.test_name if (base is not None or reason) else "",
           "compared_seeds": "" if pair.problem or pair.a is None else " ".join(map(str, pair.a.seeds)) + (
               "" if pair.paired else " vs " + " ".join(map(str, pair.b.seeds)))}
    for metric in METRICS:
        key = metric.split("@")[0].lower() + "10"
        out.update({f"{key}_{name}": value for name, value in compare(pair, metric, resamples=resamples).items()})
    return out
