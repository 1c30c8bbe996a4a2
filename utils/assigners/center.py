"""Centre sampling (FCOS), a static geometric assigner."""
from __future__ import annotations

import torch
from torch import Tensor

from utils.assigners.base import Assignment, _check_gt, batched_box_iou


@torch.no_grad()
def center_assign(
    pred_boxes: Tensor,
    pred_cls_logits: Tensor,
    pred_obj_logits: Tensor | None,
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    *,
    center_radius: float = 1.5,
) -> Assignment:
    """FCOS's centre sampling: a prior is a positive of a gt when its centre lies inside the gt box and
    within ``center_radius`` strides of the gt centre on both axes; a prior inside several gts takes the
    one of smallest area (FCOS's ambiguity rule). The predictions do not move the assignment; they only
    give the quality target (IoU of the prediction with its gt). Arguments as ``simota_assign``.
    """
    if pred_boxes.ndim != 3 or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be (B, N, 4) xyxy, got shape {tuple(pred_boxes.shape)}")
    batch, num_priors = pred_boxes.shape[:2]
    if tuple(priors.shape) != (num_priors, 4):
        raise ValueError(f"priors must be (N, 4) = ({num_priors}, 4) [cx, cy, sx, sy], got {tuple(priors.shape)}")
    _check_gt(gt_boxes, gt_labels, gt_mask, batch)
    if not center_radius > 0:
        raise ValueError(f"center_radius must be > 0, got {center_radius}")
    device = pred_boxes.device
    if gt_boxes.shape[1] == 0:
        background = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        return Assignment(background, torch.zeros((batch, num_priors), device=device),
                          torch.zeros((), dtype=torch.long, device=device))
    gt_boxes, priors = gt_boxes.float(), priors.float()
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5  # (B, G, 2)
    half_wh = (gt_boxes[..., 2:] - gt_boxes[..., :2]) * 0.5
    dx = (priors[:, 0] - centre[..., 0, None]).abs()  # (B, G, N)
    dy = (priors[:, 1] - centre[..., 1, None]).abs()
    inside = ((dx < half_wh[..., 0, None]) & (dy < half_wh[..., 1, None])
              & (dx < priors[:, 2] * center_radius) & (dy < priors[:, 3] * center_radius) & gt_mask[..., None])
    area = (half_wh[..., 0] * half_wh[..., 1])[..., None].expand_as(dx)  # (B, G, N)
    area = torch.where(inside, area, torch.full_like(area, float("inf")))
    best_area, best_gt = area.min(dim=1)  # (B, N)
    fg = torch.isfinite(best_area)
    assigned_gt = torch.where(fg, best_gt, torch.full_like(best_gt, -1))
    iou = batched_box_iou(gt_boxes, pred_boxes.float())  # (B, G, N)
    matched_iou = iou.gather(1, best_gt[:, None, :]).squeeze(1) * fg
    return Assignment(assigned_gt, matched_iou, fg.sum())
