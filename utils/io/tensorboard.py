"""TensorBoard logging of a run into its folder (``tensorboard --logdir runs/train``): scalars (the results.csv
columns), images (the val prediction plots) and the model graph. ``tensorboard`` is an optional dependency: without
it the logger is off and says so in one line."""
from __future__ import annotations

import warnings
from copy import deepcopy
from pathlib import Path

import cv2
import torch
from torch import nn

from utils import LOGGER

INSTALL = "pip install tensorboard"


class TensorBoardLogger:
    """A ``SummaryWriter`` on ``log_dir``, or nothing (every method a no-op) when ``tensorboard`` is not installed
    or ``enabled`` is False (DDP ranks other than 0)."""

    def __init__(self, log_dir: str | Path, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's module needs the tensorboard package
            LOGGER.info(f"TensorBoard: off ({INSTALL} to log this run to it)")
            return
        self.writer = SummaryWriter(str(log_dir))
        LOGGER.info(f"TensorBoard: tensorboard --logdir {Path(log_dir).parent}, view at http://localhost:6006/")

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)

    def images(self, files: list[Path], step: int) -> None:
        """Image files (the run's jpg plots) under their file stem."""
        if self.writer is None:
            return
        for f in files:
            im = cv2.imread(str(f))
            if im is not None:
                self.writer.add_image(Path(f).stem, im[..., ::-1].copy(), step, dataformats="HWC")

    def graph(self, model: nn.Module, imgsz: int, ch: int = 3) -> None:
        """The model's graph, traced in eval mode on a copy (a train-mode trace would move BatchNorm statistics).
        A model that does not trace is logged without its graph, with the reason in one line."""
        if self.writer is None:
            return
        p = next(model.parameters())
        im = torch.zeros(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings about python values in the graph
                traced = torch.jit.trace(deepcopy(model).eval(), im, strict=False, check_trace=False)
                self.writer.add_graph(traced, [])  # a traced module is taken as it is
        except Exception as e:  # noqa: BLE001 (tracing fails in many ways; the graph is an extra, not the run)
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            LOGGER.info(f"TensorBoard: model graph not logged, the model does not trace ({type(e).__name__}: "
                        f"{reason})")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
