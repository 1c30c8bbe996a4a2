"""A test-only compare statistic, registered at test time (tests/test_compare.py): the median over seeds of the
final mAP50-95 per arm, its difference per pair, a report.md section, a "how to read" paragraph and a plot --
one file, no edit to the compare package."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compare.plots import figure
from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair


class MedianFinal(Statistic):
    name = "median_final"
    columns = ("final_map_median",)
    pair_columns = ("d_map_median",)
    how_to_read = "- Median: the median over seeds of the final mAP50-95, robust to one seed's collapse."

    def compute(self, cmp: Comparison) -> None:
        cmp.results[self.name] = {a.cfg: float(np.median(list(a.finals().values()))) for a in cmp.arms}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        return {"final_map_median": cmp.results[self.name][arm.cfg]}

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        m = cmp.results[self.name]
        return {"d_map_median": m[pair.arm.cfg] - m[pair.base.cfg]}

    def headers(self, cmp: Comparison) -> list[str]:
        return ["median final mAP50-95"]

    def cells(self, cmp: Comparison, arm: ArmSummary) -> list[str]:
        return [f"{cmp.results[self.name][arm.cfg]:.3f}"]

    def pair_text(self, cmp: Comparison, pair: Pair) -> str:
        return f"medians differ by {self.pair_row(cmp, pair)['d_map_median']:+.4f}"

    def section(self, cmp: Comparison) -> list[str]:
        return ["## Median over seeds", "", *(f"- {a.name}: {cmp.results[self.name][a.cfg]:.4f}" for a in cmp.arms), ""]

    def plots(self, cmp: Comparison) -> list[Path]:
        fig, (ax,) = figure()
        ax.bar([a.name for a in cmp.arms], [cmp.results[self.name][a.cfg] for a in cmp.arms])
        fig.savefig(cmp.exp / "median.png", dpi=50)
        return [cmp.exp / "median.png"]
