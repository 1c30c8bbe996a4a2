"""Run-to-run noise: mean ± std over seeds, and paired differences with a t-based confidence interval.

compare.py trains every arm once per seed with the same data order and augmentation draws, so the score of
arm B on seed s and the score of the baseline A on seed s are a pair; ``d_s = B_s - A_s`` removes the part of the
noise both arms share. With n paired seeds the interval is ``mean(d) ± t(1 - (1 - level) / 2, n - 1) * sd(d) /
sqrt(n)`` (Student's t, n - 1 degrees of freedom; ``sd`` the sample standard deviation, ddof=1). The verdict
reads it in plain words: "better" when the whole interval is above 0, "worse" when below, else "within noise".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

NO_INTERVAL = "n=1, no interval"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with ddof=1); std is nan for fewer than 2 values, both nan for none."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def t_quantile(p: float, dof: int) -> float:
    """Quantile ``p`` of Student's t with ``dof`` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"t_quantile: dof must be >= 1, got {dof}")
    from scipy.stats import t  # scipy is a requirement; imported here to keep `import utils.evaluation.stats` light

    return float(t.ppf(p, dof))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided ``level`` confidence interval of the mean of ``values``; None for fewer than 2 values."""
    if not 0 < level < 1:
        raise ValueError(f"t_interval: level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    if not np.isfinite(x).all():
        raise ValueError(f"t_interval: values must be finite, got {x.tolist()}")
    mean, sd = mean_std(x)
    half = t_quantile(1 - (1 - level) / 2, x.size - 1) * sd / math.sqrt(x.size)
    return mean - half, mean + half


def verdict(interval: tuple[float, float] | None) -> str:
    """"better" / "worse" when ``interval`` (of B - A, higher is better) excludes 0, else "within noise"."""
    if interval is None:
        return NO_INTERVAL
    lo, hi = interval
    if lo > 0:
        return "better"
    if hi < 0:
        return "worse"
    return "within noise"


@dataclass(frozen=True)
class PairedDifference:
    """``other - baseline`` per shared seed, its mean, the interval and the verdict."""

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: float
    std: float
    interval: tuple[float, float] | None
    level: float
    verdict: str

    @property
    def n(self) -> int:
        return len(self.diffs)

    def describe(self, digits: int = 4) -> str:
        """e.g. ``+0.0123 (95% CI -0.0040 to +0.0286, n=3)`` or ``+0.0123 (n=1, no interval)``."""
        f = f"{{:+.{digits}f}}"
        if self.interval is None:
            return f"{f.format(self.mean)} ({NO_INTERVAL})"
        lo, hi = self.interval
        return f"{f.format(self.mean)} ({self.level:.0%} CI {f.format(lo)} to {f.format(hi)}, n={self.n})"


def paired_difference(baseline: Mapping[int, float], other: Mapping[int, float],
                      level: float = 0.95) -> PairedDifference:
    """Pair ``other[s] - baseline[s]`` over the seeds both have; error when they share none."""
    seeds = tuple(sorted(set(baseline) & set(other)))
    if not seeds:
        raise ValueError(f"paired_difference: no seed in common (baseline seeds {sorted(baseline)}, "
                         f"other seeds {sorted(other)})")
    diffs = tuple(float(other[s]) - float(baseline[s]) for s in seeds)
    mean, std = mean_std(diffs)
    interval = t_interval(diffs, level)
    return PairedDifference(seeds, diffs, mean, std, interval, level, verdict(interval))
