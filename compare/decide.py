"""``compare.py --decide``: train seed rounds until every pair of interest is decided or --max-seeds is reached.

The pairs of interest are every arm against the first plus the --pairs. Round n (from the first look,
utils/evaluation/sequential.py's MIN_SEEDS) trains seed n - 1 of every arm still in an open pair (both arms of a
pair always have the same seeds), then each open pair is decided on seeds 0 .. n - 1 by the group-sequential t-test
with Pocock's boundary; a decided pair keeps its decision (later seeds trained for other pairs do not revise it).
Every look is a function of the finished runs alone, so a re-run (--resume, or the same command with --exist-ok)
replays the looks and carries on where the training stopped; ``decide.json`` records each pair's looks, verdict,
seeds used and the rule that stopped it, for the report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from compare.plan import arm_name, run_dir
from compare.runner import run_state, train_all
from utils import LOGGER
from utils.evaluation.sequential import (
    ALPHA,
    MIN_SEEDS,
    Decision,
    decide,
    nominal_level,
    seeds_needed,
)
from utils.io.results import MAP, read_results

DECISIONS = "decide.json"
DEFAULT_MARGIN = 0.01  # mAP50-95: one AP point (README "Comparing heads" says why)


def pairs_of_interest(cfgs: list[str], chosen: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(arm, base) cfgs: every arm against the first, then the --pairs not already among them."""
    out = [(c, cfgs[0]) for c in cfgs[1:]]
    return out + [p for p in chosen if p not in out]


def final_map(exp: Path, cfg: str, seed: int, epochs: int) -> float | None:
    """The final epoch's mAP50-95 of a finished run, None while it is not finished."""
    run = run_dir(exp, cfg, seed)
    if run_state(run, epochs) != "finished":
        return None
    rows = read_results(run / "results.csv")
    return rows[-1][MAP] if rows else None


def look(exp: Path, plan: dict, pair: tuple[str, str], n: int) -> Decision | None:
    """The pair's decision on seeds 0 .. n - 1, None while one of those runs is not finished."""
    epochs, d = int(plan["recipe"]["epochs"]), plan["decide"]
    diffs = []
    for s in range(n):
        a, b = final_map(exp, pair[0], s, epochs), final_map(exp, pair[1], s, epochs)
        if a is None or b is None:
            return None
        diffs.append(a - b)
    return decide(diffs, d["max_seeds"], d.get("margin"), d.get("alpha", ALPHA))


def rule(dec: Decision, plan: dict) -> str:
    d = plan["decide"]
    level = nominal_level(d.get("alpha", ALPHA), tuple(range(MIN_SEEDS, d["max_seeds"] + 1)))
    if dec.verdict == "undecided":
        return f"--max-seeds {d['max_seeds']} reached"
    where = {"better": "above 0", "worse": "below 0", "equivalent": f"inside ±{d.get('margin')}"}[dec.verdict]
    return f"sequential interval {where} at look {dec.n} (Pocock, nominal level {level:.4f} per look)"


def replay(exp: Path, plan: dict, pairs: list[tuple[str, str]]) -> tuple[dict, int]:
    """Replay the looks on the finished runs: ({pair: record} of the decided pairs, the next round's seed count)."""
    decided, n = {}, MIN_SEEDS
    max_seeds = plan["decide"]["max_seeds"]
    while n <= max_seeds:
        open_ = [p for p in pairs if p not in decided]
        if not open_:
            break
        looks = {p: look(exp, plan, p, n) for p in open_}
        if any(dec is None for dec in looks.values()):
            return decided, n  # round n is not trained yet
        for p, dec in looks.items():
            if dec.final:
                decided[p] = {"verdict": dec.verdict, "seeds": dec.n, "mean": dec.mean, "sd": dec.sd,
                              "low": dec.low, "high": dec.high, "describe": dec.describe(), "rule": rule(dec, plan)}
        n += 1
    return decided, n


def write_decisions(exp: Path, plan: dict, pairs: list[tuple[str, str]], decided: dict) -> Path:
    """decide.json: the settings and, per pair, its decision (or 'open' with the seeds it has)."""
    record = {"settings": plan["decide"], "pairs": [
        {"arm": a, "base": b, **decided.get((a, b), {"verdict": "open"})} for a, b in pairs]}
    path, tmp = exp / DECISIONS, exp / (DECISIONS + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def read_decisions(exp: Path) -> dict[tuple[str, str], dict]:
    """(arm, base) -> its decide.json record; {} without --decide."""
    path = exp / DECISIONS
    if not path.is_file():
        return {}
    return {(r["arm"], r["base"]): r for r in json.loads(path.read_text())["pairs"]}


def decide_all(exp: Path, plan: dict, pairs: list[tuple[str, str]], jobs: int = 1, ray: str | None = None) -> dict:
    """Seed rounds until every pair is decided or --max-seeds is reached; decide.json after every round."""
    max_seeds = plan["decide"]["max_seeds"]
    while True:
        decided, n = replay(exp, plan, pairs)
        write_decisions(exp, plan, pairs, decided)
        open_ = [p for p in pairs if p not in decided]
        if not open_ or n > max_seeds:
            break
        cfgs = [c for c in plan["cfg"] if any(c in p for p in open_)]
        LOGGER.info(f"--decide: {len(open_)} pair(s) open ({', '.join(f'{arm_name(a)} vs {arm_name(b)}' for a, b in open_)})"
                    f"; round {n}: seeds 0..{n - 1} of {', '.join(arm_name(c) for c in cfgs)}")
        train_all(exp, plan, jobs, cfgs=cfgs, seeds=n, ray=ray)
    for (a, b), r in decided.items():
        LOGGER.info(f"--decide: {arm_name(a)} vs {arm_name(b)}: {r['describe']} ({r['rule']})")
    return decided


def planned_seeds(exp: Path, plan: dict, pairs: list[tuple[str, str]]) -> list[str]:
    """--dry-run: per pair, from the finished seeds (a pilot of 2 is enough to start), the seeds a decision is
    expected to need: for the observed difference, and for an equivalence at the margin."""
    epochs, d = int(plan["recipe"]["epochs"]), plan["decide"]
    lines = []
    for a, b in pairs:
        diffs = []
        for s in range(int(plan["seeds"])):
            x, y = final_map(exp, a, s, epochs), final_map(exp, b, s, epochs)
            if x is None or y is None:
                break
            diffs.append(x - y)
        name = f"{arm_name(a)} vs {arm_name(b)}"
        if len(diffs) < 2:
            lines.append(f"{name}: {len(diffs)} finished seed(s); train a pilot of 2 first (--seeds 2), then "
                         f"--dry-run again")
            continue
        mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
        n = seeds_needed(mean, sd, d["max_seeds"], d.get("margin"), d.get("alpha", ALPHA))
        lines.append(f"{name}: from {len(diffs)} seeds, mean difference {mean:+.4f}, sd {sd:.4f} -> "
                     + (f"~{n} seeds to decide" if n else "not decidable within 50 seeds at this spread")
                     + (f" (margin ±{d['margin']})" if d.get("margin") else ""))
    return lines
