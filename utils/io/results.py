"""results.csv: the per-epoch log every training run writes (YOLOv5's column names), defined here once for the
writer (the ResultsCSV hook), the readers (compare, --evolve) and the tests."""
from __future__ import annotations

import csv
from pathlib import Path

PRECISION, RECALL, MAP50, MAP = "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"
METRICS = (PRECISION, RECALL, MAP50, MAP)  # in this order in every row, as YOLOv5 v7.0 logs them
LRS = ("x/lr0", "x/lr1", "x/lr2")


def results_header(loss_names: list[str]) -> list[str]:
    """The columns of a run whose head logs ``loss_names``: epoch, train losses, metrics, val losses, LRs."""
    return (["epoch", *(f"train/{n}_loss" for n in loss_names), *METRICS, *(f"val/{n}_loss" for n in loss_names),
             *LRS])


def read_results(path: Path) -> list[dict[str, float]]:
    """Rows of a YOLOv5-style results.csv (padded headers stripped) as floats; [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [{k.strip(): float(v) for k, v in row.items() if k is not None} for row in rows]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: unreadable row ({e}); delete the run folder to retrain it") from e


def truncate_results(path: Path, start_epoch: int) -> None:
    """Drop the rows of epochs ``start_epoch`` on (a run killed after logging an epoch, before saving it, trains
    that epoch again when resumed)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) < start_epoch]
    path.write_text("\n".join(keep) + "\n")
