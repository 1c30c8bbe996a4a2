"""Faster R-CNN's criterion: torchvision computes the four losses inside its RPN and RoI heads (proposal sampling
is part of the forward), so the criterion only names and reduces them.

Reduction: torchvision trains Faster R-CNN at lr 0.02 per 16 images (its detection reference), 0.08 per 64 by the
linear scaling rule, on per-batch mean losses. YOLOv5's pipeline applies lr0 = 0.01 to the gradient accumulated
over a nominal 64 images of ``total = sum(items) x batch size``. With items = torchvision's terms / 8
(``RCNN_ITEM_SCALE``), that accumulated gradient is 8 x the mean-loss gradient, and a step at lr0 0.01 is
torchvision's step (0.08 x the mean-loss gradient per 64 images).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RCNN_ITEM_SCALE = 0.01 * 64 / 0.08  # 8: YOLOv5's lr0 x nominal batch / torchvision's lr per 64 images
RCNN_TERMS = {"rpn_obj": "loss_objectness", "rpn_box": "loss_rpn_box_reg",
              "roi_cls": "loss_classifier", "roi_box": "loss_box_reg"}  # our name -> torchvision's


@dataclass
class RCNNOutput:
    """FasterRCNNHead's training output: torchvision's loss dict and the batch size."""

    losses: dict[str, Tensor]
    batch: int


class RCNNLoss:
    """``(RCNNOutput, targets) -> (total, items)``; items are torchvision's four terms / ``RCNN_ITEM_SCALE``."""

    loss_names = tuple(RCNN_TERMS)

    def __call__(self, out: RCNNOutput, targets: Tensor) -> tuple[Tensor, Tensor]:
        missing = [tv for tv in RCNN_TERMS.values() if tv not in out.losses]
        if missing:
            raise ValueError(f"RCNNLoss: torchvision's loss dict lacks {missing}; got {sorted(out.losses)}")
        items = torch.stack([out.losses[tv] for tv in RCNN_TERMS.values()]) / RCNN_ITEM_SCALE
        return items.sum() * out.batch, items.detach()

    def on_epoch(self, state) -> None:
        """Nothing is epoch-switched."""
