"""Experiment trackers as training hooks, each behind its own train.py flag (off unless asked for; the packages are
optional): the name table below, the contract in base.py, one module per tracker.

    --mlflow [URI]     MLflow (mlflow_logger.py): MLflow's default store (./mlflow.db, what `mlflow ui` opens
                       there) or the tracking URI given
    --wandb [MODE]     Weights & Biases (wandb_logger.py): offline, online, or W&B's own choice

Adding a tracker: a module with an ``ExperimentLogger`` subclass, one line in ``LOGGERS`` and its flag in
utils/training/options.py (the flag's dest is the table's key).
"""
from __future__ import annotations

from utils.training.loggers.base import (
    TRACKING,
    ExperimentLogger,
    read_tracking,
    update_tracking,
)
from utils.training.loggers.mlflow_logger import MLflowLogger
from utils.training.loggers.wandb_logger import WandbLogger

LOGGERS: dict[str, type[ExperimentLogger]] = {"mlflow": MLflowLogger, "wandb": WandbLogger}


def logger_hooks(opt) -> list[ExperimentLogger]:
    """A logger hook per tracker flag set in ``opt`` (its value: the tracker's argument); a missing package is a
    ValueError that names it."""
    hooks = []
    for key, cls in LOGGERS.items():
        value = getattr(opt, key, None)
        if value not in (None, False):
            hooks.append(cls(value))
    return hooks


__all__ = ["LOGGERS", "TRACKING", "ExperimentLogger", "MLflowLogger", "WandbLogger", "logger_hooks", "read_tracking",
           "update_tracking"]
