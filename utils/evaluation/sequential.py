"""Sequential decisions over seeds: how many seeds a comparison needs, decided while it runs.

compare.py pairs the arms by seed, so a comparison is a sequence of paired differences ``d_1, d_2, ...`` (arm
minus base, final mAP50-95), one per seed round. Looking at the t-interval after every round and stopping when it
excludes 0 inflates the false-verdict rate far above the nominal 5% (each look is another chance to be fooled).
This module keeps it at ``alpha`` with a **group-sequential paired t-test with Pocock's boundary**: every look n in
``looks`` (seed counts) tests at the SAME nominal level ``alpha'`` (interval ``mean ± t(1 - alpha'/2, n-1) · sd /
sqrt(n)``), ``alpha'`` chosen so that under "no difference" the chance that ANY look's interval excludes 0 is
``alpha`` (Pocock 1977, "Group sequential methods in the design and analysis of clinical trials", Biometrika
64:191-199; with unknown variance the nominal-level form of the boundary, Jennison & Turnbull 2000, "Group
Sequential Methods with Applications to Clinical Trials", sections 3.3 and 11.1). The t statistics of normal
differences do not depend on their scale, so ``alpha'`` is computed once per (alpha, looks) by simulating the
looks under the null (``nominal_level``): 0.0118 for looks at 3..10 seeds, i.e. a 10-seed interval 1.39x as wide
as a fixed 10-seed design's, the price of being allowed to stop at 3, 4, ... 9.

Why not an anytime-valid confidence sequence: a comparison looks a handful of times (3 to ~10 seeds) and a sequence
valid at every n out to infinity pays for looks that never happen, with an unknown variance heavily so at these
n. Why Pocock rather than O'Brien-Fleming's boundary (strict early, near-nominal late): seeds are expensive and an
early look should be able to stop a clear comparison (the matrix's decided pairs were decided at 3 seeds).

Verdicts at a look, with the sequential interval ``[lo, hi]``:
    better / worse            the interval excludes 0 (above / below)
    equivalent within ±Δ      with a margin Δ: the interval lies inside (-Δ, +Δ) (two one-sided tests at the
                              sequential level: each one-sided error is at most alpha)
    continue                  neither, and looks remain
    undecided after N seeds   neither at the last look
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from utils.evaluation.stats import mean_std

ALPHA = 0.05
MIN_SEEDS = 3  # the first look: with 2 seeds the t statistic has 1 degree of freedom and decides nothing usable
SIMULATIONS = 200_000  # null sequences behind a boundary: its Monte-Carlo error is ~0.001 in the error rate
PLANNING_SIMULATIONS = 20_000  # for a design longer than planned (how many seeds beyond --max-seeds): cheaper


@lru_cache(maxsize=64)
def nominal_level(alpha: float = ALPHA, looks: tuple[int, ...] = tuple(range(MIN_SEEDS, 11)),
                  sims: int = SIMULATIONS, seed: int = 0) -> float:
    """Pocock's nominal level ``alpha'``: testing every look of ``looks`` at ``alpha'`` gives P(any rejection) =
    ``alpha`` for i.i.d. normal paired differences of mean 0 (any scale); by simulation, seeded."""
    from scipy.stats import t as student

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not looks or min(looks) < 2 or list(looks) != sorted(set(looks)):
        raise ValueError(f"looks must be increasing seed counts >= 2, got {list(looks)}")
    d = np.random.default_rng(seed).standard_normal((sims, max(looks)))
    n = np.arange(1, max(looks) + 1)
    mean = np.cumsum(d, 1) / n
    var = (np.cumsum(d * d, 1) - n * mean ** 2) / np.maximum(n - 1, 1)
    at = np.asarray(looks)
    t = np.abs(mean[:, at - 1]) / np.sqrt(var[:, at - 1] / at)
    return float(np.quantile((2 * student.sf(t, at - 1)).min(1), alpha))


def critical(n: int, level: float) -> float:
    """The t quantile a look at ``n`` seeds uses at nominal two-sided ``level``."""
    from scipy.stats import t as student

    return float(student.ppf(1 - level / 2, n - 1))


@dataclass(frozen=True)
class Decision:
    """One pair at one look: ``n`` seeds, the mean difference and its sequential interval, the verdict."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    verdict: str  # better / worse / equivalent / continue / undecided
    margin: float | None = None

    @property
    def final(self) -> bool:
        return self.verdict != "continue"

    def describe(self, digits: int = 4) -> str:
        f = f"{{:+.{digits}f}}"
        words = {"equivalent": f"equivalent within ±{self.margin or 0:g}",
                 "undecided": f"undecided after {self.n} seeds", "continue": "not decided yet"}.get(self.verdict,
                                                                                                   self.verdict)
        return (f"{f.format(self.mean)} (sequential CI {f.format(self.low)} to {f.format(self.high)}, n={self.n}) -> "
                f"{words}")


def decide(diffs: Sequence[float], max_seeds: int = 10, margin: float | None = None, alpha: float = ALPHA,
           min_seeds: int = MIN_SEEDS) -> Decision:
    """The decision after ``len(diffs)`` seeds of a sequential comparison planned to look at ``min_seeds`` ..
    ``max_seeds`` seeds. Fewer than ``min_seeds`` differences: 'continue'."""
    x = np.asarray(diffs, dtype=float)
    if max_seeds < min_seeds:
        raise ValueError(f"--max-seeds {max_seeds} must be >= {min_seeds} (the first look)")
    if x.size > max_seeds:
        raise ValueError(f"{x.size} seeds given, but the design looks at most at {max_seeds}")
    if not np.isfinite(x).all():
        raise ValueError(f"paired differences must be finite, got {x.tolist()}")
    if margin is not None and margin <= 0:
        raise ValueError(f"--margin must be > 0, got {margin}")
    mean, sd = mean_std(x) if x.size else (math.nan, math.nan)
    if x.size < min_seeds:
        return Decision(int(x.size), mean, sd, -math.inf, math.inf, "continue", margin)
    level = nominal_level(alpha, tuple(range(min_seeds, max_seeds + 1)))
    half = critical(x.size, level) * sd / math.sqrt(x.size)
    lo, hi = mean - half, mean + half
    if lo > 0:
        verdict = "better"
    elif hi < 0:
        verdict = "worse"
    elif margin is not None and -margin < lo and hi < margin:
        verdict = "equivalent"
    else:
        verdict = "undecided" if x.size >= max_seeds else "continue"
    return Decision(int(x.size), mean, sd, lo, hi, verdict, margin)


def seeds_needed(mean: float, sd: float, max_seeds: int = 10, margin: float | None = None, alpha: float = ALPHA,
                 min_seeds: int = MIN_SEEDS, cap: int = 50) -> int | None:
    """Seeds at which a pair whose true paired difference has this ``mean`` and ``sd`` is expected to be decided:
    the first look n whose half-width ``t(1 - alpha'/2, n-1) · sd / sqrt(n)`` is below |mean| (a difference) or
    below ``margin - |mean|`` (an equivalence), for a design looking at ``min_seeds`` .. ``max(max_seeds, n)``. None
    when neither happens within ``cap`` seeds (a mean of 0 without a margin, |mean| >= margin, or too noisy)."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd < 0:
        return None
    target = max([abs(mean)] + ([margin - abs(mean)] if margin is not None else []))
    if target <= 0:
        return None
    for last, sims in ((max_seeds, SIMULATIONS), (cap, PLANNING_SIMULATIONS)):  # the planned design, else longer
        level = nominal_level(alpha, tuple(range(min_seeds, last + 1)), sims)
        for n in range(min_seeds, last + 1):
            if critical(n, level) * sd / math.sqrt(n) < target:
                return n
    return None


def simulate(mean: float, sd: float, comparisons: int, max_seeds: int = 10, margin: float | None = None,
             alpha: float = ALPHA, min_seeds: int = MIN_SEEDS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``comparisons`` sequential comparisons of a pair whose per-seed differences are N(``mean``, ``sd``):
    (verdict per comparison, seeds each used). What the tests check the design with."""
    d = np.random.default_rng(seed).normal(mean, sd, (comparisons, max_seeds))
    return sequential_verdicts(d, margin, alpha, min_seeds)


def sequential_verdicts(d: np.ndarray, margin: float | None = None, alpha: float = ALPHA,
                        min_seeds: int = MIN_SEEDS) -> tuple[np.ndarray, np.ndarray]:
    """``decide`` run look by look over each row of ``d`` ``(comparisons, max_seeds)`` paired differences,
    vectorised: (verdict per row, seeds each used)."""
    comparisons, max_seeds = d.shape
    level = nominal_level(alpha, tuple(range(min_seeds, max_seeds + 1)))
    n = np.arange(1, max_seeds + 1)
    m = np.cumsum(d, 1) / n
    var = np.clip((np.cumsum(d * d, 1) - n * m ** 2) / np.maximum(n - 1, 1), 0, None)
    verdict = np.full(comparisons, "undecided", dtype=object)
    used = np.full(comparisons, max_seeds)
    open_ = np.ones(comparisons, bool)
    for k in range(min_seeds, max_seeds + 1):
        half = critical(k, level) * np.sqrt(var[:, k - 1] / k)
        lo, hi = m[:, k - 1] - half, m[:, k - 1] + half
        outcome = np.where(lo > 0, "better", np.where(hi < 0, "worse", ""))
        if margin is not None:
            outcome = np.where((outcome == "") & (lo > -margin) & (hi < margin), "equivalent", outcome)
        stop = open_ & (outcome != "")
        verdict[stop], used[stop] = outcome[stop], k
        open_ &= ~stop
    return verdict, used
