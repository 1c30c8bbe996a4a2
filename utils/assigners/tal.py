"""Task-Aligned Assigner (TOOD, arXiv 2108.07755; YOLOv8/YOLO11's assigner), batched: no loop over images or
ground truths, no host sync.

Shape shorthand: B batch, N predictions (priors) per image, G padded ground truths per image, nc classes.
Boxes are ``xyxy`` in input pixels. Priors are ``(N, 4)`` rows ``[cx, cy, stride_x, stride_y]``, the cell centres.

Rules, as Ultralytics' ``TaskAlignedAssigner`` (ultralytics/utils/tal.py, 8.4.190; bench/crosscheck_ultralytics.py
runs both):
- candidates of a gt: the priors whose centre lies strictly inside the gt box (by more than 1e-9 px); with
  ``min_size`` > 0, a side shorter than ``min_size`` px is first widened to it about the box centre (Ultralytics
  >= 8.4 does this with its second stride, 16 px for strides 8/16/32; TOOD and the YOLOv8/YOLO11 releases do not);
- alignment metric t = s^alpha x u^beta over the candidates (0 elsewhere): s the predicted probability of the gt's
  class, u the CIoU of the prediction with the gt clamped at 0 (Ultralytics; ``ciou=False``: the IoU, TOOD's);
- each gt takes the ``topk`` priors of largest t among all priors; those that are its candidates are its positives;
- a prior that several gts take goes to the gt whose box contains it with the largest u -- over every gt of the
  image that has it as a candidate, not only those that took it (on equal u, the one ``Tensor.max`` returns, as
  Ultralytics calls it: the first on CPU);
- soft class target of a positive: its t x (max u over its gt's positives) / (max t over them + 1e-9).
That target is the ``Assignment``'s ``matched_iou`` here (the soft class target of the contract; TOOD's normalised
alignment, at most the gt's best u), so every loss that trains its classes against ``matched_iou`` trains them
against it unchanged.

Where t ties at a gt's k-th place (common for zero metrics, e.g. a candidate whose prediction does not overlap),
which prior ``torch.topk`` returns is unspecified, here as in Ultralytics; the cross-check counts those cases.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from utils.assigners.base import Assignment, _check_gt, batched_box_iou
from utils.assigners.simota import _check_predictions

TAL_EPS = 1e-9  # Ultralytics: inside-the-box margin and the normaliser's epsilon
CIOU_EPS = 1e-7  # Ultralytics' bbox_iou eps (added to heights, the union and the enclosing diagonal)


def _tal_candidates(priors: Tensor, gt_boxes: Tensor, gt_mask: Tensor, min_size: float) -> Tensor:
    """``(B, G, N)`` bool: the prior centre lies inside the (valid) gt box by more than ``TAL_EPS``."""
    if min_size > 0:  # Ultralytics >= 8.4: through centre/size, a short side widened to min_size
        centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        size = gt_boxes[..., 2:] - gt_boxes[..., :2]
        size = torch.where((size < min_size) & gt_mask[..., None], torch.full_like(size, min_size), size) / 2
        gt_boxes = torch.cat((centre - size, centre + size), -1)
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    px, py = priors[:, 0], priors[:, 1]  # (N,)
    inside = ((px - x1) > TAL_EPS) & ((py - y1) > TAL_EPS) & ((x2 - px) > TAL_EPS) & ((y2 - py) > TAL_EPS)
    return inside & gt_mask[..., None]


def pairwise_ciou(gt_boxes: Tensor, pred_boxes: Tensor) -> Tensor:
    """CIoU of every gt with every prediction of its image: ``(B, G, 4)`` x ``(B, N, 4)`` xyxy -> ``(B, G, N)``,
    with Ultralytics' epsilons (``CIOU_EPS`` on heights, union and diagonal) and its order of operations (so the
    values are bit-identical to its ``bbox_iou(gt, pred, xywh=False, CIoU=True)``), the aspect term per box."""
    gx1, gy1, gx2, gy2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    px1, py1, px2, py2 = (pred_boxes[..., i].unsqueeze(1) for i in range(4))  # each (B, 1, N)
    gw, gh = gx2 - gx1, gy2 - gy1 + CIOU_EPS
    pw, ph = px2 - px1, py2 - py1 + CIOU_EPS
    inter = torch.minimum(gx2, px2).sub_(torch.maximum(gx1, px1)).clamp_(0)  # (B, G, N)
    inter.mul_(torch.minimum(gy2, py2).sub_(torch.maximum(gy1, py1)).clamp_(0))
    union = (gw * gh + pw * ph).sub_(inter).add_(CIOU_EPS)
    iou = inter.div_(union)
    c2 = torch.maximum(gx2, px2).sub_(torch.minimum(gx1, px1)).square_()  # enclosing box diagonal^2
    c2.add_(torch.maximum(gy2, py2).sub_(torch.minimum(gy1, py1)).square_()).add_(CIOU_EPS)
    rho2 = ((px1 + px2) - gx1).sub_(gx2).square_()  # 4 x centre distance^2
    rho2.add_(((py1 + py2) - gy1).sub_(gy2).square_()).div_(4)
    v = ((pw / ph).atan() - (gw / gh).atan()).square_().mul_(4 / math.pi ** 2)
    alpha = v / (1 - iou).add_(v).add_(CIOU_EPS)
    return iou.sub_(rho2.div_(c2).add_(alpha.mul_(v)))


def _gt_class_score(pred_cls_logits: Tensor, pred_obj_logits: Tensor | None, gt_labels: Tensor) -> Tensor:
    """``(B, G, N)`` fp32: each prediction's probability of each gt's class, sigmoid(cls) (x sigmoid(obj))."""
    prob = pred_cls_logits.float().sigmoid()
    if pred_obj_logits is not None:
        prob = prob * pred_obj_logits.float().sigmoid()
    batch_idx = torch.arange(gt_labels.shape[0], device=gt_labels.device)[:, None]  # (B, 1)
    try:
        return prob.transpose(1, 2)[batch_idx, gt_labels]
    except IndexError as err:  # CPU; a CUDA device asserts instead
        raise ValueError(f"gt_labels hold a class outside [0, nc={prob.shape[-1]}) "
                         f"(nc from pred_cls_logits): {err}") from err


def _check_tal_options(topk: int, alpha: float, beta: float, min_size: float) -> None:
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if not (alpha >= 0 and beta >= 0):
        raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    if not min_size >= 0:
        raise ValueError(f"min_size must be >= 0 px (0 = off), got {min_size}")


@torch.no_grad()
def tal_assign(
    pred_boxes: Tensor,
    pred_cls_logits: Tensor,
    pred_obj_logits: Tensor | None,
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    *,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    min_size: float = 0.0,
    ciou: bool = True,
) -> Assignment:
    """TOOD's Task-Aligned Assigner as Ultralytics runs it (rules in the module docstring), batched.

    pred_boxes (B, N, 4) xyxy px, pred_cls_logits (B, N, nc), pred_obj_logits (B, N[, 1]) or None,
    priors (N, 4) [cx, cy, sx, sy] px, gt_boxes (B, G, 4) xyxy px, gt_labels (B, G) long in [0, nc)
    where valid, gt_mask (B, G) bool (False = padding). ``matched_iou`` of the result is the normalised
    alignment (the soft class target), 0 for background.

    ``pred_obj_logits`` None (YOLOv8, GFL heads): s = sigmoid(cls). Given (a YOLOX head with TAL, our
    extension): s = sigmoid(cls) x sigmoid(obj), the score that head ranks its detections by.
    """
    _check_predictions(pred_boxes, pred_cls_logits, pred_obj_logits, priors)
    _check_gt(gt_boxes, gt_labels, gt_mask, pred_boxes.shape[0])
    _check_tal_options(topk, alpha, beta, min_size)
    batch, num_priors = pred_boxes.shape[:2]
    device = pred_boxes.device
    if gt_boxes.shape[1] == 0:
        background = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        return Assignment(background, torch.zeros((batch, num_priors), device=device),
                          torch.zeros((), dtype=torch.long, device=device))

    gt_boxes, pred_boxes = gt_boxes.float(), pred_boxes.float()
    candidate = _tal_candidates(priors.float(), gt_boxes, gt_mask, min_size)  # (B, G, N)
    overlap = pairwise_ciou(gt_boxes, pred_boxes).clamp_(0) if ciou else batched_box_iou(gt_boxes, pred_boxes)
    overlap.mul_(candidate)
    labels = gt_labels.long().masked_fill(~gt_mask, 0)  # padding rows may hold any label
    obj = None if pred_obj_logits is None else pred_obj_logits.reshape(batch, num_priors, 1)
    metric = _gt_class_score(pred_cls_logits, obj, labels).pow_(alpha).mul_(overlap.pow(beta)).mul_(candidate)

    top = metric.topk(min(topk, num_priors), dim=-1).indices  # (B, G, k)
    positive = torch.zeros_like(candidate).scatter_(-1, top, True).logical_and_(candidate)  # (B, G, N)
    contested = positive.sum(dim=1) > 1  # (B, N)
    best = overlap.max(dim=1).indices  # (B, N), over every gt that has the prior as a candidate
    sole = torch.zeros_like(positive).scatter_(1, best[:, None, :], True)
    positive = torch.where(contested[:, None, :], sole, positive)
    return _tal_result(positive, metric, overlap)


def _tal_result(positive: Tensor, metric: Tensor, overlap: Tensor) -> Assignment:
    """The Assignment of the final ``(B, G, N)`` positives; the soft target is the normalised alignment of each
    positive with its gt (``metric`` and ``overlap`` are consumed)."""
    fg = positive.any(dim=1)  # (B, N)
    owner = positive.byte().argmax(dim=1, keepdim=True)  # (B, 1, N): the one positive gt of a foreground prior
    best_metric = metric.mul_(positive).amax(dim=-1)  # (B, G) over each gt's positives
    best_overlap = overlap.mul_(positive).amax(dim=-1)
    own = metric.gather(1, owner).squeeze(1)  # (B, N), 0 off the foreground
    owner = owner.squeeze(1)
    target = own * best_overlap.gather(1, owner) / (best_metric.gather(1, owner) + TAL_EPS)
    return Assignment(torch.where(fg, owner, -1), target, fg.sum())
