"""Hyperparameter files: the keys the pipeline knows, and the check that a file holds no unknown key.

A misspelt optional key (``fl_gama``) would otherwise be ignored silently and its default used; here it is
an error naming the nearest known key. Also YOLOv5's hyperparameter evolution (``--evolve``): its mutation table and the
``evolve.csv`` it appends to. Known keys: the pipeline's (optimizer, warmup, augmentation) and the head-specific
ones the caller passes in -- every registered head's (``models.heads.all_hyp_keys``: YOLOv5's loss gains, the
assigners' options), so that one hyp file serves every arm of a comparison. The mutation table is the
pipeline's ranges and the head's own (``Head.hyp_ranges``), merged by ``evolve_meta``.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

PIPELINE_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
                 "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                 "fliplr", "mosaic", "mixup", "copy_paste")
OPTIONAL = ("copy_paste",)  # read with a default


def check_hyp(hyp: dict, head_keys: tuple[str, ...] = (), source: str = "hyp") -> None:
    """ValueError naming every unknown key (with the nearest known one) and every missing pipeline key."""
    known = set(PIPELINE_KEYS) | set(head_keys)
    problems = []
    for k in sorted(set(hyp) - known, key=str):
        near = difflib.get_close_matches(str(k), sorted(known), n=1)
        problems.append(f"unknown key {str(k)!r}" + (f" (did you mean '{near[0]}'?)" if near else ""))
    problems += [f"missing key '{k}'" for k in PIPELINE_KEYS if k not in hyp and k not in OPTIONAL]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))


# key: (mutation gain 0-1, lower limit, upper limit), YOLOv5 v7.0's table for the pipeline's keys; gain 0 keeps
# the key fixed. The heads' keys (YOLOv5's loss gains: Detect.hyp_ranges) come from the head, see evolve_meta.
PIPELINE_RANGES = {
    "lr0": (1, 1e-5, 1e-1), "lrf": (1, 0.01, 1.0), "momentum": (0.3, 0.6, 0.98), "weight_decay": (1, 0.0, 0.001),
    "warmup_epochs": (1, 0.0, 5.0), "warmup_momentum": (1, 0.0, 0.95), "warmup_bias_lr": (1, 0.0, 0.2),
    "hsv_h": (1, 0.0, 0.1), "hsv_s": (1, 0.0, 0.9), "hsv_v": (1, 0.0, 0.9),
    "degrees": (1, 0.0, 45.0), "translate": (1, 0.0, 0.9), "scale": (1, 0.0, 0.9), "shear": (1, 0.0, 10.0),
    "perspective": (0, 0.0, 0.001), "flipud": (1, 0.0, 1.0), "fliplr": (0, 0.0, 1.0), "mosaic": (1, 0.0, 1.0),
    "mixup": (1, 0.0, 1.0), "copy_paste": (1, 0.0, 1.0)}


def evolve_meta(head_ranges: dict[str, tuple[float, float, float]]) -> dict[str, tuple[float, float, float]]:
    """The mutation table of a run: the pipeline's ranges and its head's (``Head.hyp_ranges``), which may not
    re-range a pipeline key."""
    clash = sorted(set(head_ranges) & set(PIPELINE_RANGES))
    if clash:
        raise ValueError(f"head hyp_ranges may not re-range the pipeline's keys: {', '.join(clash)}")
    return {**PIPELINE_RANGES, **head_ranges}


MUTATION_P, MUTATION_SIGMA = 0.8, 0.2  # YOLOv5: each key mutates with probability 0.8, gain sigma 0.2


def mutate_hyp(hyp: dict, rng: np.random.Generator, meta: dict, p: float = MUTATION_P,
               sigma: float = MUTATION_SIGMA) -> dict:
    """A copy of ``hyp`` with YOLOv5's mutation: every numeric key in ``meta`` (``evolve_meta``) is multiplied by
    ``(gain * [u < p] * N(0, 1) * U(0, 1) * sigma + 1)`` clipped to [0.3, 3] (redrawn until one changes),
    then clipped to the key's limits and rounded to 5 decimals. Other keys are kept as they are."""
    keys = [k for k in hyp if k in meta and isinstance(hyp[k], (int, float)) and not isinstance(hyp[k], bool)]
    gain = np.array([meta[k][0] for k in keys], dtype=float)
    v = np.ones(len(keys))
    while gain.any() and (v == 1).all():
        v = (gain * (rng.random(len(keys)) < p) * rng.standard_normal(len(keys)) * rng.random() * sigma + 1)
        v = v.clip(0.3, 3.0)
    out = dict(hyp)
    for k, f in zip(keys, v):
        out[k] = round(float(np.clip(hyp[k] * f, meta[k][1], meta[k][2])), 5)
    return out


def read_evolve_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(header, (generations, columns) values) of an evolve.csv; ([], empty) when there is none."""
    if not path.exists():
        return [], np.zeros((0, 0))
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split(",")]
    return header, np.array([[float(x) for x in ln.split(",")] for ln in lines[1:]]).reshape(-1, len(header))


def append_evolve_csv(path: Path, results: dict[str, float], hyp: dict) -> None:
    """One row: the generation's results (metrics, val losses) then its hyp values, YOLOv5's layout."""
    row = {**results, **hyp}
    header, _ = read_evolve_csv(path)
    if header and header != list(row):
        raise ValueError(f"{path}: columns {header} differ from this run's {list(row)}; use another --name")
    with open(path, "a") as f:
        if not header:
            f.write(",".join("%20s" % k for k in row) + "\n")
        f.write(",".join("%20.5g" % float(v) for v in row.values()) + "\n")
