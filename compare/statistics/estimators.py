"""Less noise per seed, measured: for each pair against the first, the spread (sample sd over seeds) of the paired
difference under other estimators of an arm's quality than the final epoch's mAP50-95 -- the mean over the last
K validated epochs (each the EMA weights, so they measure the same trained model near its end, with less
epoch-to-epoch validation noise). Reported only; which estimator the verdict uses stays the final epoch's until a
measurement on real runs says otherwise (README "Comparing heads")."""
from __future__ import annotations

import numpy as np

from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair, RunSummary

LAST_K = (3, 5)


def estimate(r: RunSummary, k: int) -> float:
    """Mean mAP50-95 over the run's last ``k`` logged epochs (k = 1: the final epoch)."""
    return float(np.mean(r.map[-k:]))


def paired_sd(pair: Pair, k: int) -> tuple[float, float]:
    """(mean, sd) over the shared seeds of arm minus base under the last-``k`` estimator; sd nan below 2 seeds."""
    seeds = sorted(set(pair.arm.runs) & set(pair.base.runs))
    d = np.array([estimate(pair.arm.runs[s], k) - estimate(pair.base.runs[s], k) for s in seeds])
    return (float(d.mean()) if d.size else np.nan), (float(d.std(ddof=1)) if d.size > 1 else np.nan)


class Estimators(Statistic):
    name = "estimators"
    columns = ("sd_final", *(f"sd_last{k}" for k in LAST_K))
    how_to_read = """\
- Estimators: the seed spread (sd) of each pair's paired difference when an arm's quality is its final epoch's
  mAP50-95 (what the verdicts use) or the mean over its last 3 / 5 validated epochs; a smaller sd means fewer
  seeds for the same interval (seeds scale with sd²)."""

    def compute(self, cmp: Comparison) -> None:
        cmp.results[self.name] = {p.key: {k: paired_sd(p, k) for k in (1, *LAST_K)} for p in cmp.pairs}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        if arm is cmp.first:
            return {}
        r = cmp.results[self.name][(arm.cfg, cmp.first.cfg)]
        return {"sd_final": r[1][1], **{f"sd_last{k}": r[k][1] for k in LAST_K}}

    def section(self, cmp: Comparison) -> list[str]:
        lines = ["## Estimators: seed spread of the paired difference", "",
                 "| pair | seeds | sd, final epoch | " + " | ".join(f"sd, mean of last {k} (× final)" for k in LAST_K)
                 + " |", "|---|---|---|" + "---|" * len(LAST_K)]
        for p in cmp.pairs:
            r = cmp.results[self.name][p.key]
            final = r[1][1]
            n = len(set(p.arm.runs) & set(p.base.runs))
            cells = [f"{r[k][1]:.4f} ({r[k][1] / final:.2f})" if final and np.isfinite(r[k][1]) else "-" for k in LAST_K]
            lines.append(f"| {p.label} | {n} | {final:.4f} | " + " | ".join(cells) + " |")
        return lines + [""]
