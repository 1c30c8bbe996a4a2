"""torchvision detectors' criteria (FasterRCNNHead, FCOSHead, RetinaNetHead): torchvision computes the losses inside
the detector (matching, sampling and the loss terms are part of its training forward), so the criterion only names
and reduces them.

Reduction: torchvision's detection reference (references/detection/README.md) trains Faster R-CNN at lr 0.02 per 16
images, FCOS and RetinaNet at 0.01 per 16 -- 0.08 and 0.04 per 64 by the linear scaling rule -- on per-batch mean
losses. YOLOv5's pipeline applies lr0 = 0.01 to the gradient accumulated over a nominal 64 images of ``total =
sum(items) x batch size``. With items = torchvision's terms / ``item_scale``, item_scale = 0.01 x 64 / (torchvision's
lr per 64 images) (8 for Faster R-CNN, 16 for FCOS and RetinaNet), that accumulated gradient is 64 / item_scale x
the mean-loss gradient, and a step at lr0 0.01 (0.01 x 64 / item_scale = torchvision's lr per 64 images, times the
mean-loss gradient) is torchvision's step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

YOLO_LR0, NOMINAL_BATCH = 0.01, 64  # YOLOv5's hyp.scratch lr0 and nominal batch


def item_scale(lr_per_16_images: float) -> float:
    """YOLOv5's lr0 x nominal batch / torchvision's lr per 64 images (its reference's lr is per 16 images)."""
    return YOLO_LR0 * NOMINAL_BATCH / (lr_per_16_images * 64 / 16)


RCNN_ITEM_SCALE = item_scale(0.02)  # 8
DENSE_ITEM_SCALE = item_scale(0.01)  # 16: FCOS and RetinaNet
# our name -> torchvision's loss-dict key
RCNN_TERMS = {"rpn_obj": "loss_objectness", "rpn_box": "loss_rpn_box_reg",
              "roi_cls": "loss_classifier", "roi_box": "loss_box_reg"}
FCOS_TERMS = {"cls": "classification", "box": "bbox_regression", "ctr": "bbox_ctrness"}
RETINANET_TERMS = {"cls": "classification", "box": "bbox_regression"}


@dataclass
class TVOutput:
    """A torchvision detector row's training output: torchvision's loss dict and the batch size."""

    losses: dict[str, Tensor]
    batch: int


class TVLoss:
    """``(TVOutput, targets) -> (total, items)``; items are torchvision's terms (``terms``: our name -> its key) /
    ``scale``."""

    def __init__(self, terms: dict[str, str], scale: float):
        self.terms, self.scale = dict(terms), scale
        self.loss_names = tuple(terms)

    def __call__(self, out: TVOutput, targets: Tensor) -> tuple[Tensor, Tensor]:
        missing = [tv for tv in self.terms.values() if tv not in out.losses]
        if missing:
            raise ValueError(f"TVLoss: torchvision's loss dict lacks {missing}; got {sorted(out.losses)}")
        items = torch.stack([out.losses[tv] for tv in self.terms.values()]) / self.scale
        return items.sum() * out.batch, items.detach()

    def on_epoch(self, state) -> None:
        """Nothing is epoch-switched."""
