"""The statistic contract: what one figure of a comparison computes and contributes to each part of the report.

A statistic computes once per report (``compute``: per arm, per pair, or both, into ``cmp.results[name]``) and
then, each part optional, contributes:

- ``columns`` / ``row(cmp, arm)``: its report.csv columns, one row per arm (the CSV's column order is the table's);
- ``pair_columns`` / ``pair_row(cmp, pair)``: its pairs.csv columns, one row per --pairs pair;
- ``headers(cmp)`` / ``cells(cmp, arm)``: its columns of report.md's summary table;
- ``section(cmp)``: its report.md section (Markdown lines, heading included);
- ``pair_text(cmp, pair)`` / ``chosen_section(cmp)``: its words on one --pairs pair (joined with the other
  statistics' into the pair's line) and its part of report.md's "Chosen pairs" section after those lines;
- ``how_to_read``: its paragraph of report.md's "How to read this" (``str.format`` with ``latency``);
- ``plots(cmp)``: the figures it draws into the exp folder.

Statistics run in the order of ``compare.statistics.STATISTICS``; one may read an earlier one's results
(``cmp.results["seeds"]``), never a later one's.
"""
from __future__ import annotations

import math
from pathlib import Path

from compare.summary import ArmSummary, Comparison, Pair


class Statistic:
    name: str = ""
    columns: tuple[str, ...] = ()
    pair_columns: tuple[str, ...] = ()
    how_to_read: str = ""

    def compute(self, cmp: Comparison) -> None:
        """Fill ``cmp.results[self.name]``."""

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        return {}

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        return {}

    def headers(self, cmp: Comparison) -> list[str]:
        return []

    def cells(self, cmp: Comparison, arm: ArmSummary) -> list[str]:
        return []

    def section(self, cmp: Comparison) -> list[str]:
        return []

    def pair_text(self, cmp: Comparison, pair: Pair) -> str:
        return ""

    def chosen_section(self, cmp: Comparison) -> list[str]:
        return []

    def plots(self, cmp: Comparison) -> list[Path]:
        return []


def fmt_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` for report.md ('-' without a mean, the mean alone without a std)."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
