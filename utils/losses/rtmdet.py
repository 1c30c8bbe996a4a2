"""RTMDet's criterion (MMDetection 3.3.0 ``RTMDetHead.loss_by_feat``, configs/rtmdet): quality focal loss over every
prior and class, GIoU on the positives, positives picked by the Dynamic Soft Label Assigner with RTMDet's soft centre
prior. The primitives are the GFL family's (``quality_focal_loss``) and torchvision's (``generalized_box_iou_loss``).

Shape shorthand: B batch, N priors (points) over all levels, G padded ground truths per image, nc classes.
Boxes are ``xyxy`` in input pixels; prior points are each cell's top-left corner (MMDetection's
``MlvlPointGenerator(offset=0)``).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss

from utils.assigners import Assignment, assigner_from
from utils.boxes import decode_distance, FlatCells
from utils.losses.common import pad_targets
from utils.losses.gfl import GFL_NOMINAL_BATCH, quality_focal_loss

RTMDET_QFL_BETA = 2.0  # rtmdet_l_8xb32-300e_coco.py: QualityFocalLoss(beta=2.0, loss_weight=1.0)
RTMDET_LOSS_WEIGHTS = {"rtmdet_qfl": 1.0, "rtmdet_giou": 2.0}  # QFL 1.0, GIoULoss(loss_weight=2.0); hyp keys
_SAFE_BOX = (0.0, 0.0, 1.0, 1.0)  # stands in for the non-positives' boxes: their GIoU is never NaN, then weighted 0


class RTMDetLoss:
    """RTMDet's loss for ``RTMDetHead``.

    Over the batch: qfl = QFL(beta 2) over all priors and classes, the target the assigned IoU on the gt class;
    giou = GIoU loss on the positives weighted by that IoU; both / the sum of the positives' IoUs (>= 1), as
    MMDetection's ``avg_factor``; weights 1.0 and 2.0 (hyp keys ``rtmdet_qfl``, ``rtmdet_giou``). Items are these
    / 64 (``GFL_NOMINAL_BATCH``: the gradient accumulated over 64 images is the per-batch loss above), total =
    sum(items) x batch size. The assigner sees the detached predictions. No host sync but ``pad_targets``'s.
    """

    loss_names = ("qfl", "giou")

    def __init__(self, nc: int, strides: Tensor | list[float], exp_on_reg: bool = False, hyp: dict | None = None,
                 assigner: str = "dsl", assigner_options: dict | None = None):
        self.nc, self.exp_on_reg = nc, exp_on_reg
        self.strides = [float(s) for s in strides]
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"RTMDetLoss: strides must be positive, got {self.strides} (was the model initialised?)")
        hyp = hyp or {}
        self.qfl_weight, self.giou_weight = (float(hyp.get(k, v)) for k, v in RTMDET_LOSS_WEIGHTS.items())
        self.assigner = assigner_from(assigner, hyp, assigner_options)
        self.priors = FlatCells(self.strides, "corner")  # cell corners (N, 2) px, strides (N, 1)

    def on_epoch(self, state) -> None:
        """Nothing epoch-switched."""

    def flatten(self, maps: list[Tensor]) -> Tensor:
        """Per level ``(B, nc + 4, ny, nx)`` -> ``(B, N, nc + 4)`` float32, levels in order."""
        if len(maps) != len(self.strides):
            raise ValueError(f"RTMDetLoss: {len(maps)} output levels for {len(self.strides)} strides")
        for i, p in enumerate(maps):
            if p.ndim != 4 or p.shape[1] != self.nc + 4:
                raise ValueError(f"RTMDetLoss: level {i} output has shape {tuple(p.shape)}, "
                                 f"expected (B, {self.nc + 4}, ny, nx)")
        return torch.cat([p.flatten(2) for p in maps], 2).transpose(1, 2).float()

    def __call__(self, maps: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """maps: the head's per-level outputs; targets (M, 6) -> (total, items)."""
        points, stride = self.priors(maps)
        pred = self.flatten(maps)
        ny, nx = maps[0].shape[2:4]
        gt = pad_targets(targets.to(pred.device), pred.shape[0], nx * self.strides[0], ny * self.strides[0])
        gt_boxes = box_convert(gt.boxes, "cxcywh", "xyxy")
        cls = pred[..., :self.nc]
        pred_box = decode_distance(pred[..., self.nc:], points, stride, self.exp_on_reg)
        assigned = self.assigner(pred_box.detach(), cls.detach(), None, torch.cat((points, stride, stride), 1),
                                 gt_boxes, gt.labels, gt.mask)
        items = self.terms(cls, pred_box, gt_boxes, gt.labels, assigned) / GFL_NOMINAL_BATCH
        return items.sum() * pred.shape[0], items.detach()

    def terms(self, cls: Tensor, pred_box: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
              assigned: Assignment) -> Tensor:
        """``(2,)`` weighted [qfl, giou] (MMDetection's ``loss_by_feat`` summed over levels)."""
        fg = assigned.fg_mask  # (B, N)
        idx = assigned.assigned_gt.clamp(min=0)
        labels = torch.where(fg, gt_labels.gather(1, idx), -1)
        iou = assigned.matched_iou * fg  # (B, N), 0 off the positives
        norm = iou.sum().clamp(min=1.0)
        qfl = quality_focal_loss(cls.reshape(-1, self.nc), labels.reshape(-1), iou.reshape(-1), RTMDET_QFL_BETA)
        box_t = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4))  # (B, N, 4)
        safe = pred_box.new_tensor(_SAFE_BOX)
        giou = generalized_box_iou_loss(torch.where(fg[..., None], pred_box, safe),
                                        torch.where(fg[..., None], box_t, safe), reduction="none")
        return torch.stack((self.qfl_weight * qfl.sum() / norm, self.giou_weight * (giou * iou).sum() / norm))
