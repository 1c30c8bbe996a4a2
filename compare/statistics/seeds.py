"""The seed interval (training noise): per pair, final mAP50-95 of the arm minus the base's, paired by seed,
with a 95% t-interval and a verdict (utils/evaluation/stats.py)."""
from __future__ import annotations

from compare.decide import read_decisions
from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair
from utils.evaluation.stats import PairedDifference, paired_difference


def per_seed(p: PairedDifference) -> str:
    return ", ".join(f"seed {s}: {d:+.4f}" for s, d in zip(p.seeds, p.diffs))


class SeedInterval(Statistic):
    name = "seeds"
    columns = ("d_map_mean", "d_map_lo", "d_map_hi", "d_map_seeds", "verdict")
    pair_columns = columns
    how_to_read = """\
- Pairs: for seed s every arm saw the same images in the same order with the same augmentation, so
  `d_s = mAP50-95(cfg, s) - mAP50-95(first cfg, s)` (final epoch) cancels the noise both arms share. The interval is
  `mean(d) ± t(0.975, n-1) · sd(d) / √n` over the n paired seeds. **better** / **worse**: the whole 95% interval is
  above / below 0; **within noise**: it contains 0 — these seeds cannot tell the two apart (more seeds or epochs
  narrow it). With one seed there is no interval and no verdict. In a `--decide` comparison the table's verdict is
  the sequential decision below (**open** until --decide has finished): the plain interval, read after every
  round, would claim a difference more often than 5% of the time."""

    def compute(self, cmp: Comparison) -> None:
        cmp.results[self.name] = {p.key: paired_difference(p.base.finals(), p.arm.finals()) for p in cmp.pairs}

    def diff(self, cmp: Comparison, pair: Pair) -> PairedDifference:
        return cmp.results[self.name][pair.key]

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        p = self.diff(cmp, pair)
        lo, hi = p.interval or (None, None)
        return {"d_map_mean": p.mean, "d_map_lo": lo, "d_map_hi": hi, "d_map_seeds": " ".join(map(str, p.seeds)),
                "verdict": p.verdict}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        if arm is cmp.first:
            return {"d_map_mean": None, "d_map_lo": None, "d_map_hi": None, "d_map_seeds": "", "verdict": "baseline"}
        return self.pair_row(cmp, Pair(arm, cmp.first))

    def headers(self, cmp: Comparison) -> list[str]:
        return ["Δ mAP50-95 vs first", "verdict"]

    def cells(self, cmp: Comparison, arm: ArmSummary) -> list[str]:
        if arm is cmp.first:
            return ["-", "baseline"]
        pair = Pair(arm, cmp.first)
        p, seq = self.diff(cmp, pair), sequential_verdict(cmp, pair)
        return [p.describe(), p.verdict if seq is None else seq]

    def pair_text(self, cmp: Comparison, pair: Pair) -> str:
        p = self.diff(cmp, pair)
        return f"seeds {p.describe()} -> **{p.verdict}** ({per_seed(p)})"

    def section(self, cmp: Comparison) -> list[str]:
        lines = ["## Against the first cfg (final mAP50-95, paired by seed)", ""]
        for pair in cmp.against_first:
            p = self.diff(cmp, pair)
            seq = sequential_verdict(cmp, pair)
            verdict = f"**{p.verdict}**" if seq is None else \
                f"{p.verdict} at a fixed n, not corrected for the looks; the verdict is --decide's: **{seq}**"
            lines.append(f"- **{pair.arm.name}** vs {pair.base.name}: {p.describe()} -> {verdict} ({per_seed(p)})")
        return lines + [""]


def sequential_verdict(cmp: Comparison, pair: Pair) -> str | None:
    """A --decide comparison's verdict for the pair: its decide.json record ('open' before it is decided), with the
    seeds it used; None without --decide (the plain interval's verdict stands)."""
    if not cmp.plan.get("decide"):
        return None
    dec = read_decisions(cmp.exp).get(pair.key)
    if dec is None or dec.get("verdict", "open") == "open":
        return "open"
    return f"{dec['verdict']} at {dec['seeds']} seeds"
