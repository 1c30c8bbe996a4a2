"""The statistics of a comparison report, in report order (compare/statistics/base.py has the contract).

Adding one: a module here (or anywhere: a test's) with a ``Statistic`` subclass, and one line in ``STATISTICS``
(or ``register(MyStatistic())`` at run time); report.csv, pairs.csv, report.md and the plots pick it up.
"""
from __future__ import annotations

from compare.statistics.accuracy import Accuracy
from compare.statistics.base import Statistic
from compare.statistics.bootstrap import Bootstrap
from compare.statistics.budget import Budget
from compare.statistics.estimators import Estimators
from compare.statistics.seeds import SeedInterval
from compare.statistics.sequential import Sequential
from compare.statistics.speed import Speed
from compare.statistics.stability import Stability
from compare.statistics.tide import Tide

STATISTICS: list[Statistic] = [Speed(), Accuracy(), SeedInterval(), Sequential(), Budget(), Estimators(), Bootstrap(),
                               Tide(), Stability()]


def register(stat: Statistic) -> Statistic:
    """Add ``stat`` at the end of the report (after the built-in ones); its name must be new."""
    if not isinstance(stat, Statistic):
        raise TypeError(f"a compare statistic must subclass compare.statistics.base.Statistic, got {type(stat).__name__}")
    if any(s.name == stat.name for s in STATISTICS):
        raise ValueError(f"a statistic named '{stat.name}' is registered already")
    STATISTICS.append(stat)
    return stat


def unregister(name: str) -> None:
    STATISTICS[:] = [s for s in STATISTICS if s.name != name]
