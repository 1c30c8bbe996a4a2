"""The report of a comparison: report.csv (a row per arm), pairs.csv (a row per --pairs pair), report.md and the
plots, each assembled from the statistics in ``compare.statistics.STATISTICS``; report.html, all of them as one
page (compare/report_html.py)."""
from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

from compare.report_html import write_html
from compare.statistics import STATISTICS
from compare.summary import ArmSummary, Comparison, Pair, summarise_arm
from utils import LOGGER

CORE = ("cfg", "head", "seeds", "imgsz", "params", "gflops")  # report.csv's first columns: the arm itself


def csv_columns() -> list[str]:
    return [*CORE, *(c for s in STATISTICS for c in s.columns)]


def pair_columns() -> list[str]:
    return ["arm", "base", *(c for s in STATISTICS for c in s.pair_columns)]


def _cells(row: dict) -> dict:
    """None and NaN as empty CSV cells."""
    return {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}


def csv_row(cmp: Comparison, arm: ArmSummary) -> dict:
    row = {"cfg": arm.cfg, "head": arm.head, "seeds": len(arm.runs), "imgsz": arm.imgsz, "params": arm.params,
           "gflops": arm.gflops}
    for s in STATISTICS:
        row.update(s.row(cmp, arm))
    return _cells(row)


def write_csv(path: Path, cmp: Comparison) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=csv_columns())
        w.writeheader()
        w.writerows(csv_row(cmp, a) for a in cmp.arms)
    return path


def write_pairs_csv(path: Path, cmp: Comparison) -> Path:
    """pairs.csv: a row per --pairs pair (differences are arm minus base)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=pair_columns())
        w.writeheader()
        for p in cmp.chosen:
            row = {"arm": p.arm.cfg, "base": p.base.cfg}
            for s in STATISTICS:
                row.update(s.pair_row(cmp, p))
            w.writerow(_cells(row))
    return path


def markdown_table(cmp: Comparison) -> list[str]:
    head = ["cfg", "head", "params", "GFLOPs", *(h for s in STATISTICS for h in s.headers(cmp))]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in cmp.arms:
        cells = [a.cfg, a.head, f"{a.params:,}", "-" if a.gflops is None else f"{a.gflops:.2f}",
                 *(c for s in STATISTICS for c in s.cells(cmp, a))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def chosen_section(cmp: Comparison) -> list[str]:
    """report.md's --pairs section: a line per pair (every statistic's words on it), then the statistics' parts."""
    if not cmp.chosen:
        return []
    lines = ["## Chosen pairs (--pairs: final mAP50-95, paired by seed; both noises)", ""]
    for p in cmp.chosen:
        words = [t for s in STATISTICS if (t := s.pair_text(cmp, p))]
        lines.append(f"- **{p.arm.name}** vs {p.base.name}: " + "; ".join(words))
    return lines + [line for s in STATISTICS for line in s.chosen_section(cmp)] + [""]


def how_to_read(cmp: Comparison) -> list[str]:
    latency = f"{cmp.latency_runs} runs" if cmp.latency_runs else "latency not measured"
    return ["## How to read this", "", *(s.how_to_read.format(latency=latency) for s in STATISTICS if s.how_to_read)]


PRECISION = {None: "FP32 on a CPU / FP16 AMP on CUDA (the default)", True: "mixed precision (--amp: BF16 on a CPU, "
             "FP16 on CUDA)", False: "FP32 (--no-amp)"}


def write_markdown(path: Path, cmp: Comparison, plots: list[Path]) -> Path:
    plan, r = cmp.plan, cmp.plan["recipe"]
    budget = ["--budget-time", f"{plan['budget_min']:g}"] if plan.get("budget_min") else []
    d = plan.get("decide")
    seeds = (["--decide", "--max-seeds", str(d["max_seeds"]), "--margin", f"{d.get('margin') or 0:g}"] if d else
             ["--seeds", str(plan["seeds"])]) + (["--pairs", *plan["pairs"]] if plan.get("pairs") else [])
    command = " ".join(["python compare.py --cfg", *plan["cfg"], *seeds, *budget, *plan["train_args"]])
    trained = max(len(a.runs) for a in cmp.arms) if d else int(plan["seeds"])  # --decide: the seeds it has so far
    lines = [f"# compare: {cmp.exp.name}", "", f"`{command}`", "",
             f"data `{r['data']}`, hyp `{Path(r['hyp']).name}`, {r['epochs']} epochs, batch {r['batch_size']}, "
             f"imgsz {cmp.first.imgsz}, {PRECISION[r.get('amp')]} for every arm, seeds 0..{trained - 1}; "
             f"{datetime.now():%Y-%m-%d %H:%M}"
             + (f"; budget {plan['budget_min']:g} min of train + val per run (--budget-time; epochs reached per run "
                f"in the stability table)" if plan.get("budget_min") else ""), "",
             *markdown_table(cmp), ""]
    lines += [line for s in STATISTICS for line in s.section(cmp)]
    lines += chosen_section(cmp)
    lines += [line for p in plots for line in (f"![{p.stem}]({p.name})", "")]
    lines += how_to_read(cmp)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def report(exp: Path, plan: dict, latency_runs: int, n_boot: int = 1000,
           pairs: list[tuple[str, str]] = ()) -> Comparison:
    """Summaries of every arm, every statistic computed on them, written out as report.md / report.csv / the
    plots; ``pairs`` (--pairs, resolved: (arm cfg, base cfg)) add a section to report.md and pairs.csv."""
    arms = [summarise_arm(exp, cfg, int(plan["seeds"])) for cfg in plan["cfg"]]
    by_cfg = {a.cfg: a for a in arms}
    cmp = Comparison(exp=exp, plan=plan, arms=arms, chosen=[Pair(by_cfg[a], by_cfg[b]) for a, b in pairs],
                     latency_runs=latency_runs, n_boot=n_boot)
    for s in STATISTICS:
        s.compute(cmp)
    write_csv(exp / "report.csv", cmp)
    if cmp.chosen:
        write_pairs_csv(exp / "pairs.csv", cmp)
    plots = [p for s in STATISTICS for p in s.plots(cmp)]
    write_markdown(exp / "report.md", cmp, plots)
    write_html(exp)  # report.md, report.csv and the plots as one page
    for line in markdown_table(cmp):
        LOGGER.info(line)
    LOGGER.info(f"\nReport: {exp / 'report.html'} (a page; {exp / 'report.md'}, {exp / 'report.csv'}, "
                f"{'pairs.csv, ' if cmp.chosen else ''}"
                f"{', '.join(p.name for p in plots)})")
    return cmp
