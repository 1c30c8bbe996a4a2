"""YOLOv8 / YOLO11's loss (Ultralytics' ``v8DetectionLoss``) for ``V8Head``: BCE classes against the assigner's soft
targets, CIoU and DFL on the positives weighted by them; the Task-Aligned Assigner by default.

Shape shorthand: B batch, N cells over all levels, G ground truths per image (padded), nc classes, R = reg_max
(bins per box side, 16: distances 0..15 in strides). Boxes in the loss are ``xyxy`` in grid units (strides), as
Ultralytics computes them; the assigner sees them in pixels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert

from utils.assigners import Assignment, assigner_from
from utils.boxes import bbox2distance, bbox_iou, distance2bbox, FlatCells, integral
from utils.losses.common import PaddedTargets, pad_targets
from utils.losses.gfl import distribution_focal_loss

# Ultralytics' default gains (ultralytics/cfg/default.yaml: box 7.5, cls 0.5, dfl 1.5), as hyp keys of their own:
# YOLOv5's ``box``/``cls`` keys mean other gains of another loss, and one hyp file serves every arm of a comparison
V8_GAINS = {"v8_box": 7.5, "v8_cls": 0.5, "v8_dfl": 1.5}
V8_GAIN_RANGES = {"v8_box": (1, 1.0, 20.0), "v8_cls": (1, 0.2, 4.0), "v8_dfl": (1, 0.4, 6.0)}  # --evolve
V8_DFL_MARGIN = 0.01  # DFL targets clamped to [0, R - 1 - 0.01] (Ultralytics)


class V8Loss:
    """Ultralytics' ``v8DetectionLoss`` for ``V8Head``; the head's assigner (TAL by default, its options from the
    row and the hyp, ``utils.assigners.assigner_from``) picks the positives on detached predictions: class
    probabilities, boxes in pixels, priors at the cell centres.

    With t the assigner's soft class target of a positive (``Assignment.matched_iou``: TAL's normalised alignment)
    and T = max(1, sum of t over the batch): cls = BCE of every cell's class logits against one-hot(gt class) x t
    (0 off the positives), summed, / T; box = sum over positives of (1 - CIoU) x t / T; dfl = sum over positives
    of the mean over the four sides of DFL(distance to the gt side in strides, clamped to [0, R - 1.01]) x t / T.
    Items are these times the gains ``v8_box`` 7.5, ``v8_cls`` 0.5, ``v8_dfl`` 1.5 (hyp keys).

    Reduction: Ultralytics returns these items and back-propagates their sum x batch size, with lr 0.01 (SGD) set
    for gradients accumulated over a nominal 64 images -- YOLOv5's convention, which train.py follows
    (``total = sum(items) * bs``, accumulation to 64). So nothing is rescaled here (unlike ``YOLOXLoss`` and
    ``GFLLoss``, whose references take a per-positive mean per step of 64 images). Computed densely with masks:
    no host sync but ``pad_targets``'s.
    """

    loss_names = ("box", "cls", "dfl")

    def __init__(self, nc: int, strides: Tensor | list[float], reg_max: int = 16, hyp: dict | None = None,
                 assigner: str = "tal", assigner_options: dict | None = None):
        self.nc, self.reg_max = nc, reg_max
        self.strides = [float(s) for s in strides]
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"V8Loss: strides must be positive, got {self.strides} (was the model initialised?)")
        hyp = hyp or {}
        self.gains = torch.tensor([float(hyp.get(k, v)) for k, v in V8_GAINS.items()])  # box, cls, dfl
        self.assigner_name, self.assigner = assigner, assigner_from(assigner, hyp, assigner_options)
        self.anchors = FlatCells(self.strides, "centre")  # cell centres (N, 2) grid units, strides (N, 1)

    def on_epoch(self, state) -> None:
        """Nothing epoch-switched in the loss."""

    def flatten(self, maps: list[Tensor]) -> Tensor:
        """Per level ``(B, 4R + nc, ny, nx)`` -> ``(B, N, 4R + nc)`` float32, levels in order."""
        no = 4 * self.reg_max + self.nc
        if len(maps) != len(self.strides):
            raise ValueError(f"V8Loss: {len(maps)} output levels for {len(self.strides)} strides")
        for i, p in enumerate(maps):
            if p.ndim != 4 or p.shape[1] != no:
                raise ValueError(f"V8Loss: level {i} output has shape {tuple(p.shape)}, expected (B, {no}, ny, nx)")
        return torch.cat([p.flatten(2) for p in maps], 2).transpose(1, 2).float()

    def __call__(self, maps: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """maps: the head's per-level outputs; targets (M, 6) normalised -> (total, items (3,))."""
        pred = self.flatten(maps)  # (B, N, 4R + nc)
        anchors, stride = self.anchors(maps)
        box_logits, cls_logits = pred.split((4 * self.reg_max, self.nc), -1)
        pred_box = distance2bbox(anchors, integral(box_logits, self.reg_max - 1))  # (B, N, 4) xyxy grid units
        ny, nx = maps[0].shape[2:4]
        gt = pad_targets(targets.to(pred.device), pred.shape[0], nx * self.strides[0], ny * self.strides[0])
        gt_boxes = box_convert(gt.boxes, "cxcywh", "xyxy")
        priors = torch.cat((anchors * stride, stride, stride), 1)  # (N, 4) [cx, cy, sx, sy] px
        assigned = self.assigner(pred_box.detach() * stride, cls_logits.detach(), None, priors, gt_boxes,
                                 gt.labels, gt.mask)
        items = self.terms(box_logits, cls_logits, pred_box, anchors, stride, gt_boxes, gt, assigned)
        items = items * self.gains.to(items.device)
        return items.sum() * pred.shape[0], items.detach()

    def terms(self, box_logits: Tensor, cls_logits: Tensor, pred_box: Tensor, anchors: Tensor, stride: Tensor,
              gt_boxes: Tensor, gt: PaddedTargets, assigned: Assignment) -> Tensor:
        """``(3,)`` [box, cls, dfl] before the gains, over all cells with the positive mask (no data-dependent
        indexing, so no host sync)."""
        fg = assigned.fg_mask  # (B, N)
        idx = assigned.assigned_gt.clamp(min=0)  # background rows read gt 0 and are masked
        score = torch.where(fg, assigned.matched_iou, 0.0)  # (B, N) soft class target t
        score_sum = score.sum().clamp(min=1.0)
        cls_target = F.one_hot(gt.labels.gather(1, idx), self.nc).float() * score[..., None]  # (B, N, nc)
        cls = F.binary_cross_entropy_with_logits(cls_logits, cls_target, reduction="sum") / score_sum
        box_t = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4)) / stride  # (B, N, 4) xyxy grid units
        ciou = bbox_iou(pred_box, box_t, xywh=False, CIoU=True).squeeze(-1)  # (B, N)
        box = torch.where(fg, (1.0 - ciou) * score, 0.0).sum() / score_sum
        dist_t = bbox2distance(anchors, box_t, self.reg_max - 1, V8_DFL_MARGIN)  # (B, N, 4) in strides
        dfl = distribution_focal_loss(box_logits.reshape(-1, self.reg_max), dist_t.reshape(-1))
        dfl = torch.where(fg, dfl.view(fg.shape + (4,)).mean(-1) * score, 0.0).sum() / score_sum
        return torch.stack((box, cls, dfl))
