"""Why an arm wins: the TIDE error breakdown (Bolya et al., ECCV 2020) of every run's final checkpoint, mean over
seeds per arm, and arm minus base per pair."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from compare.plots import figure
from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair
from utils.evaluation.tide import ERRORS, tide_errors

KEYS = ("AP50", *ERRORS, "FP", "FN")


class Tide(Statistic):
    name = "tide"
    columns = tuple(f"tide_{k.lower()}" for k in KEYS)
    pair_columns = tuple(f"d_tide_{k.lower()}" for k in KEYS)
    how_to_read = """\
- TIDE (Bolya et al., ECCV 2020): dAP50 in AP points that fixing each error type would recover (Cls: right box,
  wrong class; Loc: right class, IoU 0.1-0.5; Both; Dupe: duplicate; Bkg: on background; Missed: label never
  found) and fixing all false positives (FP) / all false negatives (FN), on the final checkpoint, mean over seeds
  (utils/evaluation/tide.py)."""

    def compute(self, cmp: Comparison) -> None:
        """cfg -> {seed: TideResult} for every run with final detections."""
        out = {}
        for a in cmp.arms:
            out[a.cfg] = {}
            for s in a.runs:
                dets = cmp.detections(a, s)
                if dets is not None:
                    out[a.cfg][s] = tide_errors([d for d, _ in dets], [lb for _, lb in dets])
        cmp.results[self.name] = out

    def mean(self, cmp: Comparison, arm: ArmSummary) -> dict[str, float]:
        """AP50 and the dAPs (ERRORS, FP, FN) of an arm, mean over its seeds, in AP points (0-100) as TIDE
        reports them; {} without detections."""
        rows = [{"AP50": t.ap50, **t.dap, "FP": t.dap_fp, "FN": t.dap_fn} for t in cmp.results[self.name][arm.cfg].values()]
        return {k: 100 * float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        m = self.mean(cmp, arm)
        return {f"tide_{k.lower()}": m.get(k) for k in KEYS}

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        a, b = self.mean(cmp, pair.arm), self.mean(cmp, pair.base)
        return {f"d_tide_{k.lower()}": (a[k] - b[k] if a and b else None) for k in KEYS}

    def section(self, cmp: Comparison) -> list[str]:
        head = ["## Why: error breakdown (TIDE, final checkpoints)", ""]
        if not any(cmp.results[self.name][a.cfg] for a in cmp.arms):
            return [*head, "not available: no run has final detections (its final_detections.pt, or weights/last.pt to "
                    "make them from)", ""]
        lines = ["| arm | seeds | " + " | ".join(KEYS) + " |", "|" + "---|" * (len(KEYS) + 2)]
        first = self.mean(cmp, cmp.first)
        for a in cmp.arms:
            m = self.mean(cmp, a)
            if not m:
                continue
            lines.append(f"| {a.name} | {len(cmp.results[self.name][a.cfg])} | "
                         + " | ".join(f"{m[k]:.2f}" for k in KEYS) + " |")
            if a is not cmp.first and first:
                lines.append(f"| Δ vs {cmp.first.name} | | " + " | ".join(f"{m[k] - first[k]:+.2f}" for k in KEYS)
                             + " |")
        return [*head, *lines, ""]

    def chosen_section(self, cmp: Comparison) -> list[str]:
        """Per chosen pair, arm minus base in AP50 and each dAP (mean over each arm's seeds)."""
        lines = ["| arm − base | " + " | ".join(KEYS) + " |", "|" + "---|" * (len(KEYS) + 1)]
        for p in cmp.chosen:
            d = self.pair_row(cmp, p)
            if d["d_tide_ap50"] is not None:
                lines.append(f"| {p.label} | " + " | ".join(f"{d[f'd_tide_{k.lower()}']:+.2f}" for k in KEYS) + " |")
        if len(lines) == 2:
            return []
        return ["", "TIDE, arm minus base (dAP50 in AP points, mean over each arm's seeds):", "", *lines]

    def plots(self, cmp: Comparison) -> list[Path]:
        """tide.png: per error type (and FP / FN) the dAP of each arm, grouped bars (mean over seeds)."""
        means = [(a, self.mean(cmp, a)) for a in cmp.arms if cmp.results[self.name][a.cfg]]
        if not means:
            return []
        keys = KEYS[1:]
        fig, (ax,) = figure()
        width = 0.8 / len(means)
        for i, (a, m) in enumerate(means):
            ax.bar(np.arange(len(keys)) + (i - (len(means) - 1) / 2) * width, [m[k] for k in keys], width,
                   label=f"{a.name} (AP50 {m['AP50']:.1f})")
        ax.set_xticks(np.arange(len(keys)), keys)
        ax.set(ylabel="dAP50 (AP points) if fixed", title="TIDE error breakdown, final checkpoints, mean over seeds")
        ax.legend()
        fig.savefig(cmp.exp / "tide.png", dpi=150)
        return [cmp.exp / "tide.png"]
