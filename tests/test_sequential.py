"""utils/evaluation/sequential.py: the group-sequential paired t-test behind ``compare.py --decide``, checked by
simulation (false-verdict rate under the null, power, equivalence, the seeds-needed estimate)."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from utils.evaluation.sequential import (
    decide,
    nominal_level,
    seeds_needed,
    sequential_verdicts,
    simulate,
)

SD = 0.03  # a paired spread like the matrix's (seed half-widths 0.046-0.125 at 3 seeds: sd ~0.02-0.05)
N = 4000  # simulated comparisons per check (>= 2,000)


def rate_interval(k: int, n: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of a rate k / n: the simulation's own Monte-Carlo uncertainty."""
    lo = sps.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = sps.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def test_single_look_is_the_t_test():
    """One look: the nominal level is alpha itself (the boundary is the fixed design's t quantile)."""
    assert nominal_level(0.05, (10,)) == pytest.approx(0.05, abs=0.002)
    assert nominal_level(0.05, (3, 4, 5, 6, 7, 8, 9, 10)) < 0.02  # eight looks: each at a stricter level


@pytest.mark.parametrize("max_seeds", [5, 10])
def test_false_verdict_rate_under_the_null_is_at_most_alpha(max_seeds):
    """Two arms of equal quality: better or worse in at most 5% of N sequential comparisons (the upper end of the
    rate's Monte-Carlo interval may pass 5% by that interval's half-width only); naive peeking at a 95% t-interval
    after every round is shown to break it."""
    verdict, _ = simulate(0.0, SD, N, max_seeds=max_seeds, seed=11)
    k = int(np.isin(verdict, ["better", "worse"]).sum())
    lo, hi = rate_interval(k, N)
    assert lo <= 0.05, f"false-verdict rate {k / N:.4f} (95% MC interval {lo:.4f}-{hi:.4f}) is above 5%"
    assert k / N <= 0.05 + (hi - lo) / 2
    d = np.random.default_rng(11).normal(0.0, SD, (N, max_seeds))
    naive = np.zeros(N, bool)
    for n in range(3, max_seeds + 1):
        t = d[:, :n].mean(1) / (d[:, :n].std(1, ddof=1) / math.sqrt(n))
        naive |= np.abs(t) > sps.t.ppf(0.975, n - 1)
    assert naive.mean() > 0.08  # what --decide exists to prevent


def test_heavy_tailed_differences_stay_near_alpha():
    """Not normal (Student's t with 4 degrees of freedom, scaled): still close to the nominal rate."""
    d = np.random.default_rng(5).standard_t(4, (N, 10)) * SD
    verdict, _ = sequential_verdicts(d)
    k = int(np.isin(verdict, ["better", "worse"]).sum())
    assert rate_interval(k, N)[0] <= 0.05, k / N


def test_a_true_effect_is_decided():
    """An effect of ~1.7 sd: 'better' in most comparisons (power), almost never 'worse'."""
    verdict, used = simulate(0.05, SD, N, seed=2)
    power = float((verdict == "better").mean())
    assert power > 0.9 and (verdict == "worse").mean() < 0.001
    assert np.median(used[verdict == "better"]) <= 6


def test_equivalence_when_the_effect_is_zero_and_the_spread_small():
    verdict, used = simulate(0.0, 0.005, N, margin=0.02, seed=3)
    assert (verdict == "equivalent").mean() > 0.95 and np.median(used) <= 4
    verdict, _ = simulate(0.0, 0.005, N, margin=None, seed=3)
    assert (verdict == "equivalent").sum() == 0  # no margin, no equivalence


def test_equivalence_is_rarely_claimed_at_the_margin():
    """True difference exactly at the margin: 'equivalent' at most alpha of the time (one-sided error)."""
    verdict, _ = simulate(0.02, SD, N, margin=0.02, seed=4)
    assert (verdict == "equivalent").mean() <= 0.05


@pytest.mark.parametrize("mean,sd,margin", [(0.05, 0.046, None), (0.04, 0.03, None), (0.03, 0.03, None),
                                            (0.0, 0.01, 0.02), (0.06, 0.03, None)])
def test_seeds_needed_matches_simulation_within_25_percent(mean, sd, margin):
    """The estimate against the simulated median stopping seed count (undecided counted at --max-seeds)."""
    est = seeds_needed(mean, sd, margin=margin)
    _, used = simulate(mean, sd, N, margin=margin, seed=6)
    sim = float(np.median(used))
    assert est is not None and abs(est - sim) <= 0.25 * sim, (est, sim)


def test_decide_matches_the_vectorised_simulation():
    verdicts, used = simulate(0.02, SD, 300, seed=9)
    d = np.random.default_rng(9).normal(0.02, SD, (300, 10))
    for row, v, n in zip(d, verdicts, used):
        dec = decide(row[:n])
        assert (dec.verdict, dec.n) == (v, n)
        assert n == 3 or not decide(row[:n - 1]).final


def test_decide_errors_and_early_looks():
    assert decide([0.1, 0.2]).verdict == "continue"  # before the first look
    with pytest.raises(ValueError, match="at most at 5"):
        decide([0.0] * 6, max_seeds=5)
    with pytest.raises(ValueError, match="--margin"):
        decide([0.0] * 3, margin=-1)
    with pytest.raises(ValueError, match="finite"):
        decide([0.0, float("nan"), 0.1])
    assert seeds_needed(0.0, 0.03) is None and seeds_needed(0.03, 0.01, margin=0.02) is not None
