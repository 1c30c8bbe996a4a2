"""YOLOX's loss for the anchor-free decoupled head (``YOLOXHead``): the head's assigner (SimOTA by default)
picks the positives.

Shape shorthand: B batch, N cells over all levels, G ground truths per image (padded), nc classes.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import box_convert

from utils.assigners import Assignment, assigner_from
from utils.boxes import bbox_iou, decode_yolox, encode_yolox, FlatCells
from utils.losses.common import PaddedTargets, pad_targets, smooth_bce

YOLOX_NOMINAL_BATCH = 64  # YOLOX's lr (0.01) is set for a mean-per-positive loss over 64 images
YOLOX_IOU_WEIGHT = 5.0


class YOLOXLoss:
    """YOLOX's loss (paper / release 0.3.0) for ``YOLOXHead``.

    The head's assigner picks the positives: SimOTA by default (``utils.assigners.simota_assign``; hyp
    ``simota_center_only: true`` switches to YOLOX main's centre-only rule, radius 1.5), or any other name in
    ``utils.assigners.ASSIGNERS`` (the head's ``assigner`` YAML argument), its options from the row
    (``assigner_options``) and the hyp (``utils.assigners.assigner_from``). Terms, each summed and divided by
    the number of positives in the batch (>= 1):
    iou = 5 * (1 - IoU^2) on positives; obj = BCE against the 0/1 positive mask on every cell;
    cls = BCE on positives against the one-hot class scaled by the assigner's soft target (``matched_iou``: the
    IoU, or TAL's normalised alignment); l1 = |raw - encoded gt|
    on positives, only in epochs without mosaic (``on_epoch``).

    Reduction: YOLOX applies lr 0.01 to this per-positive mean over 64 images; YOLOv5's pipeline applies
    lr 0.01 to the sum over a nominal 64 images of per-image items (``total = sum(items) * bs``, gradients
    accumulated to 64 images). So ``items`` = YOLOX's terms / 64: accumulated to 64 images the gradient
    is YOLOX's, and the logged items are of YOLOv5's size. YOLOv5's ``box``/``obj``/``cls`` gains belong
    to its own loss and are not used here.
    """

    loss_names = ("iou", "obj", "cls", "l1")

    def __init__(self, nc: int, strides: Tensor | list[float], hyp: dict, label_smoothing: float = 0.0,
                 assigner: str = "simota", assigner_options: dict | None = None):
        self.nc = nc
        self.assigner_name, self.assigner = assigner, assigner_from(assigner, hyp, assigner_options)
        self.strides = [float(s) for s in strides]
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"YOLOXLoss: strides must be positive, got {self.strides} (was the model initialised?)")
        self.cp, self.cn = smooth_bce(label_smoothing)
        self.use_l1 = False
        self.cells = FlatCells(self.strides)  # cell indices (N, 2), strides (N, 1)

    def on_epoch(self, state) -> None:
        """The L1 term is on while mosaic is off (YOLOX's last no-augmentation epochs)."""
        self.use_l1 = not state.mosaic

    def flatten(self, raw: list[Tensor]) -> Tensor:
        """Per-level ``(B, 1, ny, nx, 5 + nc)`` -> ``(B, N, 5 + nc)`` float32, levels in order."""
        if len(raw) != len(self.strides):
            raise ValueError(f"YOLOXLoss: {len(raw)} output levels for {len(self.strides)} strides")
        for i, p in enumerate(raw):
            if p.ndim != 5 or p.shape[1] != 1 or p.shape[-1] != 5 + self.nc:
                raise ValueError(f"YOLOXLoss: level {i} output has shape {tuple(p.shape)}, expected "
                                 f"(B, 1, ny, nx, {5 + self.nc})")
        return torch.cat([p.reshape(p.shape[0], -1, p.shape[-1]) for p in raw], 1).float()

    def __call__(self, raw: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """raw: per level (B, 1, ny, nx, 5 + nc); targets: (M, 6) normalised -> (total, items (4,))."""
        pred = self.flatten(raw)  # (B, N, no)
        cell, stride = self.cells(raw)
        pred_box = torch.cat(decode_yolox(pred[..., 0:2], pred[..., 2:4], cell, stride), -1)  # (B, N, 4) cxcywh
        ny, nx = raw[0].shape[2:4]
        gt = pad_targets(targets.to(pred.device), pred.shape[0], nx * self.strides[0], ny * self.strides[0])
        assigned = self.assign(pred, pred_box, cell, stride, gt)
        terms = self.terms(pred, pred_box, cell, stride, gt, assigned)
        items = terms / YOLOX_NOMINAL_BATCH
        return items.sum() * pred.shape[0], items.detach()

    def assign(self, pred: Tensor, pred_box: Tensor, cell: Tensor, stride: Tensor, gt: PaddedTargets) -> Assignment:
        """The head's assigner (SimOTA by default) on detached predictions; priors are the cell centres."""
        priors = torch.cat(((cell + 0.5) * stride, stride, stride), 1)  # (N, 4) [cx, cy, sx, sy]
        return self.assigner(
            box_convert(pred_box.detach(), "cxcywh", "xyxy"), pred[..., 5:].detach(), pred[..., 4:5].detach(),
            priors, box_convert(gt.boxes, "cxcywh", "xyxy"), gt.labels, gt.mask)

    def terms(self, pred: Tensor, pred_box: Tensor, cell: Tensor, stride: Tensor, gt: PaddedTargets,
              assigned: Assignment) -> Tensor:
        """``(4,)`` [5 * iou, obj, cls, l1], each summed and divided by the positives; computed densely
        over all cells with the positive mask (no data-dependent indexing, so no host sync)."""
        fg = assigned.fg_mask  # (B, N)
        num_fg = assigned.num_fg.clamp(min=1).float()
        idx = assigned.assigned_gt.clamp(min=0)  # (B, N), background rows read gt 0 and are masked
        gt_box = gt.boxes.gather(1, idx[..., None].expand(-1, -1, 4))  # (B, N, 4) cxcywh
        zero = pred.new_zeros(())
        iou = bbox_iou(pred_box, gt_box).squeeze(-1)  # (B, N)
        l_iou = torch.where(fg, 1.0 - iou.square(), zero).sum() * YOLOX_IOU_WEIGHT
        l_obj = F.binary_cross_entropy_with_logits(pred[..., 4], fg.float(), reduction="sum")
        one_hot = F.one_hot(gt.labels.gather(1, idx), self.nc).float()  # (B, N, nc)
        cls_target = (one_hot * (self.cp - self.cn) + self.cn) * assigned.matched_iou[..., None]
        bce_cls = F.binary_cross_entropy_with_logits(pred[..., 5:], cls_target, reduction="none").sum(-1)
        l_cls = torch.where(fg, bce_cls, zero).sum()
        l_l1 = zero
        if self.use_l1:
            t_xy, t_wh = encode_yolox(gt_box[..., 0:2], gt_box[..., 2:4], cell, stride)
            l1 = (pred[..., 0:4] - torch.cat((t_xy, t_wh), -1)).abs().sum(-1)
            l_l1 = torch.where(fg, l1, zero).sum()
        return torch.stack((l_iou, l_obj, l_cls, l_l1)) / num_fg
