"""What the runs say: one run's curves and final/best rows (``RunSummary``), one arm over its seeds
(``ArmSummary``), the pairs a report is about (``Pair``) and the whole comparison the statistics read and fill
(``Comparison``)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import val as validate
from compare.plan import arm_name, run_dir
from compare.runner import RECORD
from models.yolo import DetectionModel
from utils.data.config import check_dataset
from utils.evaluation.metrics import fitness
from utils.evaluation.stats import mean_std
from utils.io.checkpoint import load_checkpoint
from utils.io.files import yaml_load
from utils.io.results import MAP, MAP50, PRECISION, RECALL, read_results

STABLE_AFTER, DROP = 5, 0.1  # a collapse: after epoch 5, val mAP50 falls by more than 0.1 in one epoch
DETECTIONS = "final_detections.pt"  # per run: the final checkpoint's val detections and labels, per image


@dataclass
class RunSummary:
    """One finished run: its curves (per logged epoch), final and best-fitness rows, seconds per epoch."""

    epochs: np.ndarray       # (E,)
    map50: np.ndarray        # (E,)
    map: np.ndarray          # (E,) mAP50-95
    train_loss: np.ndarray   # (E,) sum of the train/*_loss columns
    val_loss: np.ndarray     # (E,) sum of the val/*_loss columns
    final: tuple[float, float]  # (mAP50, mAP50-95) of the last epoch
    best: tuple[float, float]   # (mAP50, mAP50-95) of the epoch of best fitness (best.pt)
    train_s: float           # median train seconds per epoch (nan without compare.json)
    first_batch: dict[int, str]  # epoch -> digest of its first batch
    imgsz: int | None
    bn_s: float = math.nan   # median precise-BN seconds per epoch (nan: not recorded)
    epoch_s: np.ndarray | None = None  # (E,) train + val seconds of each logged epoch (nan: not recorded)

    def drops(self, after: int = STABLE_AFTER, by: float = DROP) -> int:
        """Epochs after ``after`` whose val mAP50 fell by more than ``by`` from the epoch before: collapses."""
        d = self.map50[:-1] - self.map50[1:]
        return int(((d > by) & (self.epochs[1:] > after)).sum())

    def best_minus_final(self) -> float:
        """Highest mAP50-95 of any epoch minus the final one: what the end of the run lost."""
        return float(self.map.max() - self.map[-1])


def summarise_run(run: Path) -> RunSummary:
    rows = read_results(run / "results.csv")
    if not rows:
        raise ValueError(f"{run / 'results.csv'} has no rows: the run did not train an epoch")

    def col(name: str) -> np.ndarray:
        return np.array([r[name] for r in rows])

    def loss(prefix: str) -> np.ndarray:
        return np.array([sum(v for k, v in r.items() if k.startswith(prefix) and k.endswith("_loss")) for r in rows])

    m50, m = col(MAP50), col(MAP)
    fi = fitness(np.stack((col(PRECISION), col(RECALL), m50, m), 1))
    b = int(fi.argmax())
    record = json.loads((run / RECORD).read_text()) if (run / RECORD).is_file() else {"epochs": {}}
    train_s = [e["train_s"] for e in record["epochs"].values() if "train_s" in e]
    bn_s = [e["precise_bn_s"] for e in record["epochs"].values() if "precise_bn_s" in e]
    return RunSummary(epochs=col("epoch").astype(int), map50=m50, map=m, train_loss=loss("train/"),
                      val_loss=loss("val/"), final=(float(m50[-1]), float(m[-1])), best=(float(m50[b]), float(m[b])),
                      train_s=float(np.median(train_s)) if train_s else math.nan,
                      first_batch={int(k): e.get("first_batch_sha1") for k, e in record["epochs"].items()},
                      imgsz=record.get("imgsz"), bn_s=float(np.median(bn_s)) if bn_s else math.nan,
                      epoch_s=np.array([_seconds(record["epochs"].get(str(int(e)), {})) for e in col("epoch")]))


def _seconds(epoch: dict) -> float:
    """An epoch's train + val seconds from compare.json (nan when not recorded)."""
    return float(epoch["train_s"] + epoch.get("val_s", 0.0)) if "train_s" in epoch else math.nan


@dataclass
class ArmSummary:
    """One cfg over its seeds, with the model's size (the statistics add the rest to ``Comparison.results``)."""

    cfg: str
    head: str
    runs: dict[int, RunSummary]
    imgsz: int
    params: int
    gflops: float | None
    weights: Path | None = None  # the first seed's best.pt: what latency is measured on (None: weights deleted)

    @property
    def name(self) -> str:
        return arm_name(self.cfg)

    def stat(self, what: str) -> tuple[float, float]:
        """mean, std over seeds of 'final50', 'final', 'best50', 'best' or 'train_s'."""
        pick = {"final50": lambda r: r.final[0], "final": lambda r: r.final[1], "best50": lambda r: r.best[0],
                "best": lambda r: r.best[1], "train_s": lambda r: r.train_s}[what]
        return mean_std([pick(r) for r in self.runs.values()])

    def finals(self) -> dict[int, float]:
        """seed -> final mAP50-95: what the pairs compare."""
        return {s: r.final[1] for s, r in self.runs.items()}


def summarise_arm(exp: Path, cfg: str, seeds: int) -> ArmSummary:
    """Runs of ``cfg`` that finished, and its params / GFLOPs (thop, unfused, at the run's imgsz) from the first
    seed's best.pt (from the cfg when no seed kept its weights; latency then has nothing to time)."""
    runs = {s: summarise_run(run_dir(exp, cfg, s)) for s in range(seeds)
            if (run_dir(exp, cfg, s) / "results.csv").is_file()}
    if not runs:
        raise ValueError(f"{cfg}: no run with a results.csv under {exp / arm_name(cfg)}")
    first = next(iter(runs))
    opt = run_dir(exp, cfg, first) / "opt.yaml"
    best = next((w for s in runs if (w := run_dir(exp, cfg, s) / "weights" / "best.pt").is_file()), None)
    if best is not None:
        model = DetectionModel.from_checkpoint(load_checkpoint(best)).eval()
    else:  # every seed's weights/ deleted after it finished: the same layers, counted from the cfg
        recipe = yaml_load(opt)
        model = DetectionModel(recipe["cfg"], nc=check_dataset(recipe["data"])["nc"]).eval()
    imgsz = runs[first].imgsz or int(yaml_load(opt)["imgsz"])
    info = model.info(imgsz)  # one counter (thop, unfused) for every arm
    return ArmSummary(cfg=cfg, head=str(model.yaml["head"][-1][2]), runs=runs, imgsz=imgsz,
                      params=int(info["parameters"]), gflops=info["gflops"], weights=best)


@dataclass
class Pair:
    """``arm`` minus ``base``: every arm against the first, and each --pairs item."""

    arm: ArmSummary
    base: ArmSummary

    @property
    def key(self) -> tuple[str, str]:
        return self.arm.cfg, self.base.cfg

    @property
    def label(self) -> str:
        return f"{self.arm.name} − {self.base.name}"


def final_detections(run: Path, recipe: dict, imgsz: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per val image, the final checkpoint's detections (n, 6) and the labels (m, 5), xyxy in original pixels:
    last.pt (the EMA weights the last epoch validated) through val.py with the same thresholds and loader, on
    PyTorch. Cached in the run folder (remade when last.pt is newer); None for a run without last.pt."""
    cache, last = run / DETECTIONS, run / "weights" / "last.pt"
    if cache.is_file() and (not last.is_file() or cache.stat().st_mtime >= last.stat().st_mtime):
        return torch.load(cache, weights_only=True)
    if not last.is_file():
        return None
    res = validate.run(data=recipe["data"], weights=str(last), batch_size=2 * int(recipe["batch_size"]),
                       imgsz=imgsz, workers=0, single_cls=bool(recipe.get("single_cls")), project=run,
                       name="final_val", exist_ok=True, plots=False, backend="torch", collect=True)
    torch.save(res.per_image, cache)
    return res.per_image


@dataclass
class Comparison:
    """Everything a report is made of: the arms, the pairs (``against_first``: every arm after the first minus the
    first; ``chosen``: --pairs), the options, and ``results``: statistic name -> what it computed."""

    exp: Path
    plan: dict
    arms: list[ArmSummary]
    chosen: list[Pair] = field(default_factory=list)
    latency_runs: int = 0
    n_boot: int = 1000
    results: dict[str, Any] = field(default_factory=dict)
    _detections: dict = field(default_factory=dict, repr=False)

    @property
    def first(self) -> ArmSummary:
        return self.arms[0]

    @property
    def against_first(self) -> list[Pair]:
        return [Pair(a, self.arms[0]) for a in self.arms[1:]]

    @property
    def pairs(self) -> list[Pair]:
        """Every pair any statistic reports on, each once: the ones against the first, then the chosen ones."""
        out = {p.key: p for p in self.against_first}
        out.update({p.key: p for p in self.chosen if p.key not in out})
        return list(out.values())

    def detections(self, arm: ArmSummary, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The final checkpoint's per-image detections and labels of one run (``final_detections``), read once."""
        key = arm.cfg, seed
        if key not in self._detections:
            self._detections[key] = final_detections(run_dir(self.exp, arm.cfg, seed), self.plan["recipe"], arm.imgsz)
        return self._detections[key]
