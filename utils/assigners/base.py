"""What every assigner shares: the result contract (``Assignment``) and the batched helpers.

Shape shorthand: B batch, N predictions (priors) per image, G padded ground truths per image, nc classes.
Boxes are ``xyxy`` in input pixels unless a name says otherwise.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def _check_gt(gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, batch: int) -> None:
    """Raise ValueError naming the argument whose shape does not fit ``(B, G, ...)``."""
    if gt_boxes.ndim != 3 or gt_boxes.shape[0] != batch or gt_boxes.shape[2] != 4:
        raise ValueError(f"gt_boxes must be (B={batch}, G, 4) xyxy, got shape {tuple(gt_boxes.shape)}")
    num_gt = gt_boxes.shape[1]
    if tuple(gt_labels.shape) != (batch, num_gt):
        raise ValueError(f"gt_labels must be (B, G) = {(batch, num_gt)}, got shape {tuple(gt_labels.shape)}")
    if tuple(gt_mask.shape) != (batch, num_gt) or gt_mask.dtype != torch.bool:
        raise ValueError(
            f"gt_mask must be a bool (B, G) = {(batch, num_gt)} tensor, "
            f"got {gt_mask.dtype} of shape {tuple(gt_mask.shape)}"
        )


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU within each image: ``(B, M, 4)`` x ``(B, N, 4)`` xyxy -> ``(B, M, N)``.

    Disjoint boxes give 0; a zero union (two empty boxes) gives 0, not NaN.
    """
    a_x1, a_y1, a_x2, a_y2 = (boxes1[..., i, None] for i in range(4))  # each (B, M, 1)
    b_x1, b_y1, b_x2, b_y2 = (boxes2[..., i].contiguous()[..., None, :] for i in range(4))  # each (B, 1, N)
    inter_w = torch.minimum(a_x2, b_x2).sub_(torch.maximum(a_x1, b_x1)).clamp_(min=0)
    inter_h = torch.minimum(a_y2, b_y2).sub_(torch.maximum(a_y1, b_y1)).clamp_(min=0)
    inter = inter_w.mul_(inter_h)  # (B, M, N)
    area1 = (a_x2 - a_x1) * (a_y2 - a_y1)  # (B, M, 1)
    area2 = (b_x2 - b_x1) * (b_y2 - b_y1)  # (B, 1, N)
    union = (area1 + area2).sub_(inter).clamp_(min=torch.finfo(inter.dtype).tiny)
    return inter.div_(union)


class Assignment(NamedTuple):
    """The one result contract of every assigner here (what a loss reads).

    assigned_gt: (B, N) long, index into the padded G axis, -1 = background.
    matched_iou: (B, N) float32, the soft class target of the prediction, 0 for background: the IoU of the
        prediction with its assigned gt (SimOTA, centre sampling, DSLA), or TAL's normalised alignment metric
        t x (max IoU) / (max t) over its gt's positives, which is at most that gt's best (C)IoU. A loss trains the
        assigned class towards it (and may weight its box terms by it); it is not an IoU for every assigner.
    num_fg: () long tensor, positives in the whole batch (kept on device, no host sync).
    """

    assigned_gt: Tensor
    matched_iou: Tensor
    num_fg: Tensor

    @property
    def fg_mask(self) -> Tensor:
        """(B, N) bool, True where a prediction is a positive."""
        return self.assigned_gt >= 0
