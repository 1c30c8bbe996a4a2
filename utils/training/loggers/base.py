"""The experiment-tracker contract: a training hook that sends a run to a tracker (MLflow, Weights & Biases).

A tracker implements five small methods; the hook events are shared here:

    before_train   start(trainer, params, name, group)   open the tracker's run (rank 0), or reopen it (--resume)
    after_epoch    log_metrics(values, epoch)            the epoch's results.csv row
    after_train    log_files(plots, files, weights, ..)  the run's plots, results.csv / opt.yaml / hyp.yaml, weights
                   finish()                              close the run

``group`` (a dict, or None) comes from the run folder's ``tracking.json``, written there by a caller that groups
runs (compare.py: one comparison, one parent run / group; each arm x seed a child tagged ``arm`` and ``seed``).
The tracker's own run id goes back into the same file, so that ``--resume`` continues the same tracked run.

A tracker that fails to start stops the run before its first epoch (the user asked for it: a one-line error);
one that fails later (a server gone) is switched off with a warning, and training goes on.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from utils import LOGGER
from utils.io.files import yaml_load
from utils.io.results import results_header
from utils.training.hooks import EpochEnd, Hook, Trainer, csv_values

TRACKING = "tracking.json"  # in a run folder: the trackers' run ids, and the group a caller put the run in
DEFAULT_PROJECT = "HeadZoo"  # tracker project / experiment of a run in the default runs/train (YOLOv5: 'YOLOv5')
FILES = ("results.csv", "opt.yaml", "hyp.yaml")
WEIGHTS = ("best.pt", "last.pt")


def read_tracking(folder: Path) -> dict:
    path = Path(folder) / TRACKING
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def update_tracking(folder: Path, key: str, value: Any) -> None:
    """Set ``key`` of the folder's tracking.json (written whole, through a temporary file)."""
    record = {**read_tracking(folder), key: value}
    tmp = Path(folder) / (TRACKING + ".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, Path(folder) / TRACKING)


def project_name(project: str | Path, default_parts: tuple[str, str] = ("runs", "train"),
                 default: str = DEFAULT_PROJECT) -> str:
    """The tracker project / experiment of a run folder's --project: its folder name, ``default`` for the built-in
    ``runs/train`` (as YOLOv5 names W&B's project 'YOLOv5' there)."""
    p = Path(project)
    return default if p.parts[-2:] == default_parts else p.name


def run_params(opt: Any) -> dict[str, Any]:
    """The run's options and hyperparameters as one flat dict: train.py's flags by name, the hyp keys as
    ``hyp/<key>`` (the hyp.yaml of the run folder)."""
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opt).items()}
    hyp = yaml_load(opt.hyp) if isinstance(opt.hyp, (str, Path)) else dict(opt.hyp)
    options["hyp"] = str(opt.hyp) if isinstance(opt.hyp, (str, Path)) else "(given as a dict)"
    return {**options, **{f"hyp/{k}": v for k, v in hyp.items()}}


def metric_name(column: str) -> str:
    """A results.csv column as a metric name every tracker takes: characters other than letters, digits and
    ``_-. /`` become '-' (``metrics/mAP_0.5:0.95`` -> ``metrics/mAP_0.5-0.95``; MLflow refuses ':' on Windows)."""
    return re.sub(r"[^\w\-. /]", "-", column)


def run_files(save_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(plots, files, weights) of a finished run folder: its png/jpg plots, results.csv / opt.yaml / hyp.yaml,
    and weights/best.pt, last.pt; the ones that exist."""
    plots = sorted(p for p in save_dir.iterdir() if p.suffix in (".png", ".jpg") and p.is_file())
    files = [save_dir / f for f in FILES if (save_dir / f).is_file()]
    weights = [save_dir / "weights" / f for f in WEIGHTS if (save_dir / "weights" / f).is_file()]
    return plots, files, weights


class ExperimentLogger(Hook):
    """A tracker as a training hook (the events above); subclasses implement start, log_metrics, log_files and
    finish. Runs after the Checkpointer (priority 70), so the weights it sends are the final,
    stripped ones and every epoch it logs is saved."""

    priority = 75
    name = ""  # the tracker's key in LOGGERS and in tracking.json

    def __init__(self):
        self.active = False

    # ------------------------------------------------------------------ what a tracker implements
    def start(self, trainer: Trainer, params: dict, group: dict | None, resume_id: str | None) -> dict:
        """Open (or with ``resume_id``, reopen) the tracker's run; what to keep in tracking.json (its run id)."""
        raise NotImplementedError

    def log_metrics(self, values: dict[str, float], epoch: int) -> None:
        raise NotImplementedError

    def log_files(self, plots: list[Path], files: list[Path], weights: list[Path], epoch: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ the hook events
    def before_train(self, trainer: Trainer) -> None:
        if not trainer.main:
            return
        record = read_tracking(trainer.save_dir)
        resume_id = record.get(self.name, {}).get("id") if trainer.opt.resume else None
        kept = self.start(trainer, run_params(trainer.opt), record.get("group"), resume_id)
        update_tracking(trainer.save_dir, self.name, kept)
        self.active = True

    def after_epoch(self, trainer: Trainer, end: EpochEnd) -> None:
        values = dict(zip(results_header(trainer.loss_names)[1:], csv_values(end)[1:]))
        self._safely("epoch metrics", self.log_metrics, values, end.epoch)

    def after_train(self, trainer: Trainer) -> None:
        self._safely("the run's files", self.log_files, *run_files(trainer.save_dir), trainer.opt.epochs - 1)
        self._safely("closing the run", self.finish)
        self.active = False

    def _safely(self, what: str, fn, *args) -> None:
        """``fn(*args)`` if the tracker is on; an error switches it off with one warning (training goes on)."""
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (a tracker's client raises many kinds; the run is the product)
            self.active = False
            LOGGER.warning(f"{self.name}: logging {what} failed ({type(e).__name__}: {e}); {self.name} is off for "
                           f"the rest of this run, the run folder has everything")
