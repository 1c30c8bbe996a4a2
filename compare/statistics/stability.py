"""Stability per run: collapses (val mAP50 falling by more than 0.1 in one epoch after epoch 5), the worst
one-epoch fall, what the end of the run lost (best minus final mAP50-95) and the precise-BN seconds."""
from __future__ import annotations

import math

import numpy as np

from compare.statistics.base import Statistic
from compare.summary import DROP, STABLE_AFTER, Comparison


class Stability(Statistic):
    name = "stability"
    how_to_read = f"""\
- Stability: a collapse is an epoch after epoch {STABLE_AFTER} whose val mAP50 fell by more than {DROP} from the
  epoch before; best − final is what the end of the run lost (the highest mAP50-95 of any epoch minus the last)."""

    def section(self, cmp: Comparison) -> list[str]:
        lines = ["## Stability per run", "",
                 ("| arm | seed | epochs | collapses after epoch 5 | worst one-epoch mAP50 fall | best − final mAP50-95 "
                  "| precise BN s/epoch |"), "|---|---|---|---|---|---|---|"]
        for a in cmp.arms:
            for s, r in a.runs.items():
                fall = float(np.max(r.map50[:-1] - r.map50[1:], initial=0.0))
                bn = "-" if math.isnan(r.bn_s) else f"{r.bn_s:.1f}"
                lines.append(f"| {a.name} | {s} | {len(r.epochs)} | {r.drops()} | {fall:+.3f} | "
                             f"{r.best_minus_final():.4f} | {bn} |")
        return lines + [""]
