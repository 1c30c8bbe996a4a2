"""The val-image bootstrap (test-set noise) beside the seed interval (training noise): per pair and shared seed,
the arm minus the base over resamples of the val images; the verdict that needs both noises; the wider one."""
from __future__ import annotations

import math

import numpy as np

from compare.statistics.base import Statistic
from compare.summary import ArmSummary, Comparison, Pair
from utils.evaluation.bootstrap import BootstrapResult, match_images, paired_bootstrap
from utils.evaluation.stats import PairedDifference


def noise_summary(p: PairedDifference | None, boot: dict[int, BootstrapResult]) -> dict:
    """A pair's seed interval (training noise), its image-bootstrap intervals (test-set noise, per seed), the
    verdict that needs both to exclude 0 on the same side, and which noise is the wider."""
    seed_lo, seed_hi = p.interval if p is not None and p.interval else (math.nan, math.nan)
    boots = [boot[s].map for s in sorted(boot)]
    boot_half = float(np.mean([(b.high - b.low) / 2 for b in boots])) if boots else math.nan
    seed_half = (seed_hi - seed_lo) / 2
    both = "within noise"
    if boots and not math.isnan(seed_lo):
        if seed_lo > 0 and all(b.low > 0 for b in boots):
            both = "better"
        elif seed_hi < 0 and all(b.high < 0 for b in boots):
            both = "worse"
    dominant = "-" if math.isnan(seed_half) or math.isnan(boot_half) else \
        "training (seeds)" if seed_half > boot_half else "test set (images)" if boot_half > seed_half else "neither"
    return {"boots": {s: boot[s].map for s in sorted(boot)}, "seed_half": seed_half, "boot_half": boot_half,
            "verdict": both if boots else "no bootstrap", "dominant": dominant}


class Bootstrap(Statistic):
    name = "bootstrap"
    columns = ("boot_half_width", "noise_dominant", "verdict_both_noises")
    pair_columns = columns
    how_to_read = """\
- Two noises: the seed interval above is training noise (another seed, another model). The val-image bootstrap is
  test-set noise: the val images are resampled with replacement (the same resample for both arms of a seed) and
  both arms' mAP50-95 recomputed; its 95% percentile interval of the difference says how much of it another val
  set of the same size could undo. "better" / "worse" there need both intervals (the seeds', every seed's
  bootstrap) to exclude 0 on the same side; the wider half-width says which noise limits the comparison."""

    def compute(self, cmp: Comparison) -> None:
        """pair key -> {seed: BootstrapResult} for every seed both arms have final detections of (the same val
        images, resampled together), then the two-noise summary of each pair."""
        matches = {}
        for a in cmp.arms:
            for s in a.runs:
                dets = cmp.detections(a, s) if cmp.n_boot > 0 else None
                if dets is not None:
                    matches[a.cfg, s] = match_images([d for d, _ in dets], [lb for _, lb in dets])
        boots = {p.key: {s: paired_bootstrap(matches[p.base.cfg, s], matches[p.arm.cfg, s], n_boot=cmp.n_boot, seed=s)
                         for s in p.arm.runs if (p.base.cfg, s) in matches and (p.arm.cfg, s) in matches}
                 for p in cmp.pairs}
        cmp.results[self.name] = {k: (b, noise_summary(cmp.results["seeds"][k], b)) for k, b in boots.items()}

    def boot(self, cmp: Comparison, pair: Pair) -> dict[int, BootstrapResult]:
        return cmp.results[self.name][pair.key][0]

    def noise(self, cmp: Comparison, pair: Pair) -> dict:
        return cmp.results[self.name][pair.key][1]

    def pair_row(self, cmp: Comparison, pair: Pair) -> dict:
        n = self.noise(cmp, pair)
        return {"boot_half_width": n["boot_half"], "noise_dominant": n["dominant"], "verdict_both_noises": n["verdict"]}

    def row(self, cmp: Comparison, arm: ArmSummary) -> dict:
        return {} if arm is cmp.first else self.pair_row(cmp, Pair(arm, cmp.first))

    def pair_text(self, cmp: Comparison, pair: Pair, seeds: bool = False) -> str:
        """Each seed's image-bootstrap interval (after the seed interval with ``seeds``), the verdict needing both,
        the wider noise."""
        n, boot = self.noise(cmp, pair), self.boot(cmp, pair)
        boots = ", ".join(f"seed {s}: {b.diff:+.4f} [{b.low:+.4f}, {b.high:+.4f}]" for s, b in n["boots"].items())
        p = cmp.results["seeds"][pair.key]
        if not boot:  # --bootstrap 0, or no seed kept final_detections.pt / last.pt to make them from
            why = "--bootstrap 0" if cmp.n_boot <= 0 else "no seed of both arms has final detections"
            return ((f"seeds {p.describe()}; " if seeds else "") + f"no val-image bootstrap ({why}); "
                    f"seed half-width {n['seed_half']:.4f}")
        return ((f"seeds {p.describe()}; " if seeds else "") + f"val-image bootstrap (95%, {next(iter(boot.values())).n_boot if boot else 0} "
                f"resamples) {boots or '-'} -> **{n['verdict']}**; half-widths: seeds {n['seed_half']:.4f}, images "
                f"{n['boot_half']:.4f}: the wider is {n['dominant']}")

    def section(self, cmp: Comparison) -> list[str]:
        return ["## Two noises: training (seeds) and test set (val images)", "",
                *(f"- **{p.arm.name}** vs {p.base.name}: {self.pair_text(cmp, p, seeds=True)}"
                  for p in cmp.against_first), ""]
