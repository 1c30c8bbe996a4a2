"""Outputs of detect.py: the mp4 writer of annotated videos and streams (one per video or stream)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils import LOGGER
from utils.data.sources import FPS_FALLBACK


class VideoSink:
    """An mp4 writer (OpenCV 'mp4v', suffix forced to .mp4). Use ``with`` or ``close()`` in a ``finally``: the
    file written so far stays playable on q / Ctrl-C / stream end. Frames of another size are resized (counted)."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path).with_suffix(".mp4")
        self.fps = fps if math.isfinite(fps) and fps > 0 else FPS_FALLBACK
        self.size = (int(size[0]), int(size[1]))  # (w, h)
        self.frames = 0
        self.resized = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self._writer.isOpened():
            raise OSError(f"cannot open video writer for {self.path} (mp4v, {self.fps:.2f} FPS, size {self.size})")

    def write(self, im0: np.ndarray) -> None:
        if self._writer is None:
            raise ValueError(f"write to closed VideoSink {self.path}")
        if (im0.shape[1], im0.shape[0]) != self.size:
            if self.resized == 0:
                h, w = im0.shape[:2]
                LOGGER.warning(f"WARNING: {self.path}: frame size {w}x{h} != {self.size}, resizing (counted)")
            self.resized += 1
            im0 = cv2.resize(im0, self.size)
        self._writer.write(im0)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            extra = f" ({self.resized} resized)" if self.resized else ""
            LOGGER.info(f"wrote {self.frames} frames to {self.path}{extra}")

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class VideoSinks:
    """One ``VideoSink`` per batch slot; a slot's sink is replaced when its output path changes (next video)."""

    sinks: dict[int, VideoSink] = field(default_factory=dict)

    def write(self, slot: int, path: str | Path, im0: np.ndarray, fps: float, size: tuple[int, int]) -> None:
        sink = self.sinks.get(slot)
        if sink is None or sink.path != Path(path).with_suffix(".mp4"):
            if sink is not None:
                sink.close()
            sink = self.sinks[slot] = VideoSink(path, fps, size)
        sink.write(im0)

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        self.sinks.clear()

    def __enter__(self) -> VideoSinks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
