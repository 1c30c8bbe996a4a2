"""The sequential design behind ``compare.py --decide``, by simulation: false-verdict rate under no difference
(with its Monte-Carlo interval) against reading a plain 95% t-interval after every round, power, equivalence, and
the seeds-needed estimate against the simulated median stopping seeds.

    python bench/sequential_design.py                 # 4,000 comparisons per row, paired sd 0.03, looks 3..10
    python bench/sequential_design.py --comparisons 20000 --max-seeds 5

Prints a table and writes runs/bench/sequential_design.json. No training: utils/evaluation/sequential.py alone.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy import stats as sps  # noqa: E402

from utils.evaluation.sequential import nominal_level, seeds_needed, sequential_verdicts, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def rate(k: int, n: int) -> str:
    lo = sps.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = sps.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{k / n:.4f} ({lo:.4f}-{hi:.4f})"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--comparisons", type=int, default=4000)
    p.add_argument("--sd", type=float, default=0.03, help="paired sd of the per-seed differences")
    p.add_argument("--max-seeds", type=int, default=10)
    p.add_argument("--seed", type=int, default=11)
    opt = p.parse_args(argv)
    n, sd, ms = opt.comparisons, opt.sd, opt.max_seeds
    out = {"nominal_level_per_look": nominal_level(0.05, tuple(range(3, ms + 1)))}
    v, _ = simulate(0.0, sd, n, max_seeds=ms, seed=opt.seed)
    out["null_false_verdicts"] = rate(int(np.isin(v, ["better", "worse"]).sum()), n)
    d = np.random.default_rng(opt.seed).normal(0.0, sd, (n, ms))
    naive = np.zeros(n, bool)
    for k in range(3, ms + 1):
        t = d[:, :k].mean(1) / (d[:, :k].std(1, ddof=1) / math.sqrt(k))
        naive |= np.abs(t) > sps.t.ppf(0.975, k - 1)
    out["null_naive_peeking"] = rate(int(naive.sum()), n)
    v, _ = sequential_verdicts(np.random.default_rng(opt.seed).standard_t(4, (n, ms)) * sd)
    out["null_t4_false_verdicts"] = rate(int(np.isin(v, ["better", "worse"]).sum()), n)
    v, u = simulate(1.67 * sd, sd, n, max_seeds=ms, seed=opt.seed)
    out["power_1.67sd"] = f"{(v == 'better').mean():.4f}, median seeds {np.median(u[v == 'better']):g}"
    v, u = simulate(0.0, 0.005, n, max_seeds=ms, margin=0.02, seed=opt.seed)
    out["equivalent_sd0.005_margin0.02"] = f"{(v == 'equivalent').mean():.4f}, median seeds {np.median(u):g}"
    v, _ = simulate(0.02, sd, n, max_seeds=ms, margin=0.02, seed=opt.seed)
    out["equivalent_at_the_margin"] = f"{(v == 'equivalent').mean():.4f}"
    for m, s, mg in [(0.05, 0.046, None), (0.04, 0.03, None), (0.03, 0.03, None), (0.0, 0.01, 0.02), (0.06, 0.03, None)]:
        _, u = simulate(m, s, n, max_seeds=ms, margin=mg, seed=opt.seed)
        out[f"seeds_needed mean={m} sd={s} margin={mg}"] = (f"estimate {seeds_needed(m, s, ms, mg)}, simulated "
                                                            f"median {np.median(u):g}")
    for k, val in out.items():
        print(f"{k:>45}: {val}")
    path = ROOT / "runs" / "bench" / "sequential_design.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
