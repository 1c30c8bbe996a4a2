"""Box formats, grids and the box coders shared by heads and losses.

Shape shorthand:
    B: batch size      N: predictions per image      M: boxes
    na: anchors per level   ny, nx: feature map height and width
Box formats follow torchvision.ops.box_convert: ``xyxy`` corners, ``cxcywh`` centre and size
(YOLO files call it ``xywh``); a trailing ``n`` means normalised by image width and height.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_convert


def make_grid(nx: int, ny: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Cell indices ``(ny, nx, 2)`` holding ``(x, y)`` of each cell's top-left corner in grid units."""
    y = torch.arange(ny, device=device, dtype=dtype)
    x = torch.arange(nx, device=device, dtype=dtype)
    yv, xv = torch.meshgrid(y, x, indexing="ij")
    return torch.stack((xv, yv), dim=-1)


def decode_yolov5(t_xy: Tensor, t_wh: Tensor, cell_xy: Tensor | float, anchor_wh: Tensor) -> tuple[Tensor, Tensor]:
    """YOLOv5's anchor box coder: raw logits -> box centre and size, in the units of ``cell_xy`` and
    ``anchor_wh`` (grid units for the loss, pixels after multiplying by the stride).

    xy = 2 * sigmoid(t_xy) - 0.5 + cell, wh = (2 * sigmoid(t_wh))^2 * anchor.
    """
    xy = t_xy.sigmoid() * 2.0 - 0.5 + cell_xy
    wh = (t_wh.sigmoid() * 2.0) ** 2 * anchor_wh
    return xy, wh
