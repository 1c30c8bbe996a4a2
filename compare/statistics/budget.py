"""The verdict per budget: a pair's paired difference (mAP50-95, seed by seed) when both arms are cut at 25, 50,
75 and 100% of the epochs, and at equal wall-clock (each seed: both arms at the last epoch each finished within the
faster arm's total train + val time); the difference against the epoch with its band; and per arm whether its
curve is still rising at the end, so that a verdict says "at this budget"."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from compare.plots import figure
from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair, RunSummary
from utils.evaluation.stats import paired_difference, t_interval

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RISING = 0.25  # still rising: the last quarter's slope is at least this share of the run's average slope


def at_epoch(r: RunSummary, epoch: int) -> float | None:
    """mAP50-95 of the logged epoch ``epoch`` (0-based), None if the run did not log it."""
    hit = np.flatnonzero(r.epochs == epoch)
    return float(r.map[hit[0]]) if hit.size else None


def at_seconds(r: RunSummary, seconds: float) -> float | None:
    """mAP50-95 of the last epoch finished within ``seconds`` of train + val, None without a record."""
    if r.epoch_s is None or not np.isfinite(r.epoch_s).all():
        return None
    done = np.flatnonzero(np.cumsum(r.epoch_s) <= seconds * (1 + 1e-9))
    return float(r.map[done[-1]]) if done.size else None


def still_rising(arm: ArmSummary) -> bool | None:
    """The mean curve's least-squares slope over its last quarter (>= 3 epochs) is at least RISING x its average
    slope over the run; None for runs of fewer than 4 epochs."""
    epochs = sorted(set.intersection(*(set(r.epochs.tolist()) for r in arm.runs.values())))
    if len(epochs) < 4:
        return None
    curve = np.array([np.mean([at_epoch(r, e) for r in arm.runs.values()]) for e in epochs])
    k = max(3, len(epochs) // 4)
    slope = np.polyfit(epochs[-k:], curve[-k:], 1)[0]
    average = (curve[-1] - curve[0]) / (epochs[-1] - epochs[0])
    return bool(average > 0 and slope >= RISING * average)


def budget_differences(pair: Pair) -> dict[str, dict[int, float]]:
    """budget label -> {seed: arm minus base}: at each fraction of the epochs both arms logged, and at equal
    wall-clock."""
    seeds = sorted(set(pair.arm.runs) & set(pair.base.runs))
    last = min(int(min(r.epochs[-1] for r in a.runs.values())) for a in (pair.arm, pair.base))
    out = {}
    for f in FRACTIONS:
        e = max(0, math.ceil(f * (last + 1)) - 1)
        d = {s: (at_epoch(pair.arm.runs[s], e), at_epoch(pair.base.runs[s], e)) for s in seeds}
        out[f"{f:.0%} (epoch {e + 1})"] = {s: x - y for s, (x, y) in d.items() if x is not None and y is not None}
    wall = {}
    for s in seeds:
        ra, rb = pair.arm.runs[s], pair.base.runs[s]
        if ra.epoch_s is None or rb.epoch_s is None:
            continue
        t = min(np.nansum(ra.epoch_s), np.nansum(rb.epoch_s))
        x, y = at_seconds(ra, t), at_seconds(rb, t)
        if x is not None and y is not None:
            wall[s] = x - y
    out["equal wall-clock"] = wall
    return out


class Budget(Statistic):
    name = "budget"
    columns = ("d_map_half_epochs", "d_map_equal_time", "still_rising")
    how_to_read = """\
- Verdict per budget: the same paired difference with both arms cut at 25/50/75/100% of the epochs and at equal
  wall-clock (per seed, both at the last epoch each finished within the faster arm's total train + val time:
  what a fixed compute budget would have given; timings from a shared machine make it rough). *still rising*: the
  arm's mean curve over its last quarter still climbs at >= 25% of its average rate — a verdict at this budget
  partly measures how fast a head learns."""

    def compute(self, cmp: Comparison) -> None:
        cmp.results[self.name] = {"pairs": {p.key: {label: paired_difference({s: 0.0 for s in d}, d) if d else None
                                                    for label, d in budget_differences(p).items()}
                                            for p in cmp.pairs},
                                  "rising": {a.cfg: still_rising(a) for a in cmp.arms}}

    def _diff(self, cmp: Comparison, pair: Pair, prefix: str):
        return next((v for k, v in cmp.results[self.name]["pairs"][pair.key].items() if k.startswith(prefix)), None)

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        rising = cmp.results[self.name]["rising"][arm.cfg]
        row = {"still_rising": "" if rising is None else ("yes" if rising else "no")}
        if arm is not cmp.first:
            half, wall = (self._diff(cmp, Pair(arm, cmp.first), k) for k in ("50%", "equal"))
            row.update(d_map_half_epochs=half.mean if half else None, d_map_equal_time=wall.mean if wall else None)
        return row

    def section(self, cmp: Comparison) -> list[str]:
        r = cmp.results[self.name]
        labels = list(next(iter(r["pairs"].values())).keys()) if r["pairs"] else []
        lines = ["## The verdict per budget (final mAP50-95 difference, paired by seed)", "",
                 "| pair | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
        for p in cmp.pairs:
            cells = [d.describe() + f" {d.verdict}" if d else "-" for d in r["pairs"][p.key].values()]
            lines.append(f"| {p.label} | " + " | ".join(cells) + " |")
        rising = [a.name for a in cmp.arms if r["rising"][a.cfg]]
        lines += ["", "Still rising at the end: " + (", ".join(rising) if rising else "none")
                  + " (![difference vs epoch](difference_vs_epoch.png))", ""]
        return lines

    def plots(self, cmp: Comparison) -> list[Path]:
        """difference_vs_epoch.png: per pair against the first, the mean paired difference at every epoch with its
        95% t-interval band."""
        fig, (ax,) = figure()
        for p in cmp.against_first:
            seeds = sorted(set(p.arm.runs) & set(p.base.runs))
            last = min(int(min(r.epochs[-1] for r in a.runs.values())) for a in (p.arm, p.base))
            xs, mean, lo, hi = [], [], [], []
            for e in range(last + 1):
                d = [at_epoch(p.arm.runs[s], e) - at_epoch(p.base.runs[s], e) for s in seeds
                     if at_epoch(p.arm.runs[s], e) is not None and at_epoch(p.base.runs[s], e) is not None]
                if not d:
                    continue
                ci = t_interval(d) if len(d) > 1 else None
                xs.append(e + 1)
                mean.append(float(np.mean(d)))
                lo.append(ci[0] if ci else np.nan)
                hi.append(ci[1] if ci else np.nan)
            line = ax.plot(xs, mean, marker=".", label=p.label)[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set(xlabel="epoch", ylabel="mAP50-95 difference (arm − first)",
               title="paired difference vs epoch: mean over seeds, band = 95% t-interval")
        if cmp.against_first:
            ax.legend()
        fig.savefig(cmp.exp / "difference_vs_epoch.png", dpi=150)
        return [cmp.exp / "difference_vs_epoch.png"]
