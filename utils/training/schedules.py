"""Schedules of a training run: the cosine LR ramp (--cos-lr) and --multi-scale's per-batch image size."""
from __future__ import annotations

import math

import numpy as np

MULTI_SCALE = (0.5, 1.5)  # --multi-scale: batch size range as a fraction of imgsz (YOLOv5)
MULTI_SCALE_TAG = 0x4D53  # seed-sequence tag: these draws never share an item's stream


def one_cycle(y1: float = 0.0, y2: float = 1.0, steps: int = 100):
    """Cosine ramp from y1 to y2 over ``steps``."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def multi_scale_size(imgsz: int, gs: int, seed: int, epoch: int, batch: int) -> int:
    """--multi-scale: batch ``batch`` of ``epoch`` trains at a size drawn uniformly from [0.5, 1.5] x imgsz and
    floored to a multiple of the max stride ``gs`` (at least ``gs``), from (seed, epoch, batch) alone."""
    rng = np.random.default_rng([seed, epoch, batch, MULTI_SCALE_TAG])
    sz = int(rng.integers(int(imgsz * MULTI_SCALE[0]), int(imgsz * MULTI_SCALE[1]) + gs))
    return max(sz // gs * gs, gs)
