"""Sequential decisions (``--decide``) and how many seeds a decision needs: per pair, the verdict of the
group-sequential t-test, the seeds it used and the rule that stopped it (compare/decide.py's decide.json), and
from the observed paired spread the seeds a decision is expected to need (utils/evaluation/sequential.py)."""
from __future__ import annotations

import numpy as np

from compare.decide import DEFAULT_MARGIN, read_decisions
from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair
from utils.evaluation.sequential import ALPHA, seeds_needed


class Sequential(Statistic):
    name = "sequential"
    columns = ("seq_verdict", "seq_seeds", "seq_run_hours", "seeds_needed")
    pair_columns = columns
    how_to_read = """\
- Sequential decisions (`--decide`): seed rounds continue until each pair's interval, read at a nominal level
  that keeps the chance of any false verdict over all the looks (3 .. --max-seeds seeds) at --alpha (Pocock's
  group-sequential boundary for the paired t-test), lies above 0 (**better**), below 0 (**worse**) or inside
  ±margin (**equivalent**); otherwise the pair ends **undecided** at --max-seeds. A decided pair keeps the
  decision of the look that decided it. *Seeds needed*: from the observed mean and spread of the paired
  differences, the first look whose interval would be narrow enough to decide (a difference, or equivalence at
  the margin) — a planning figure, as noisy as the spread it is computed from. *Run hours*: the train + val
  wall-clock of both arms' runs of the seeds the decision used (compare.json), summed: what the decision cost on
  this machine at its load (one run per core with `--jobs`)."""

    def compute(self, cmp: Comparison) -> None:
        settings = cmp.plan.get("decide") or {}
        margin = settings.get("margin", DEFAULT_MARGIN) if settings else DEFAULT_MARGIN
        decisions = read_decisions(cmp.exp)
        needed = {}
        for p in cmp.pairs:
            d = cmp.results["seeds"][p.key]
            needed[p.key] = seeds_needed(d.mean, d.std, settings.get("max_seeds", 10), margin,
                                         settings.get("alpha", ALPHA)) if d.n >= 2 else None
        hours = {p.key: run_hours(p, decisions.get(p.key, {}).get("seeds")) for p in cmp.pairs}
        cmp.results[self.name] = {"decisions": decisions, "needed": needed, "margin": margin, "hours": hours}

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        r = cmp.results[self.name]
        dec = r["decisions"].get(pair.key, {})
        return {"seq_verdict": dec.get("verdict"), "seq_seeds": dec.get("seeds"),
                "seq_run_hours": r["hours"][pair.key] if dec.get("seeds") else None, "seeds_needed": r["needed"][pair.key]}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        return {} if arm is cmp.first else self.pair_row(cmp, Pair(arm, cmp.first))

    def pair_text(self, cmp: Comparison, pair: Pair) -> str:
        dec = cmp.results[self.name]["decisions"].get(pair.key)
        return f"--decide: {dec['describe']}" if dec and "describe" in dec else ""

    def section(self, cmp: Comparison) -> list[str]:
        r = cmp.results[self.name]
        lines = ["## Sequential decisions and seeds needed", ""]
        if r["decisions"]:
            s = cmp.plan["decide"]
            lines += [(f"`--decide`: looks at 3 .. {s['max_seeds']} seeds, alpha {s.get('alpha', ALPHA)}, margin "
                       f"{s.get('margin') or 'off'}."), ""]
        for p in cmp.pairs:
            dec, n = r["decisions"].get(p.key), r["needed"][p.key]
            head = f"- **{p.arm.name}** vs {p.base.name}: "
            if dec and "describe" in dec:
                hours = r["hours"][p.key]
                cost = f", {2 * dec['seeds']} runs, {hours:.2f} run-hours" if np.isfinite(hours) else ""
                head += f"{dec['describe']} ({dec['rule']}{cost}); "
            elif dec:
                head += "open (--decide has not finished); "
            d = cmp.results["seeds"][p.key]
            if n:
                need = f"seeds needed at the observed spread (sd {d.std:.4f}, margin ±{r['margin']:g}): ~{n}"
            elif d.n >= 2:
                need = "seeds needed: not decidable within 50 seeds at the observed spread"
            else:
                need = "seeds needed: needs 2 seeds to estimate"
            lines.append(head + need)
        return lines + [""]


def run_hours(pair: Pair, seeds: int | None) -> float:
    """Train + val hours of both arms' runs of seeds 0 .. seeds - 1 (every shared seed when None); nan when an
    epoch's seconds were not recorded."""
    shared = sorted(set(pair.arm.runs) & set(pair.base.runs))[:seeds]
    return float(sum(np.sum(a.runs[s].epoch_s) for a in (pair.arm, pair.base) for s in shared)) / 3600
