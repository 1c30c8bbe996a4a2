"""Dynamic Soft Label Assigner (NanoDet-Plus), batched: no loop over images or ground truths, no host sync.

Shape shorthand: B batch, N predictions (priors) per image, G padded ground truths per image, nc classes.
Boxes are ``xyxy`` in input pixels. Priors are ``(N, 4)`` rows ``[px, py, stride_x, stride_y]``; ``(px, py)``
is the point tested against the gt boxes and measured by the soft centre prior, as the head decodes from it
(NanoDet-Plus: the cell's top-left corner, no +0.5).

Rules follow NanoDet's ``DynamicSoftLabelAssigner`` (nanodet/model/head/assigner/dsl_assigner.py, main
be9b4a9), and give the same assignments up to the order among equal costs (below;
bench/crosscheck_reference.py runs both):
- valid priors: the point lies strictly inside any gt of the image; only they compete, and a valid prior may
  go to any gt of the image (there is no per-pair geometric condition);
- soft label = one-hot(gt class) x IoU(prediction, gt); cls cost = sum over all classes of
  BCE(score, soft label) x |soft label - sigmoid(score)|^2; cost = cls cost + iou_factor x -log(IoU + 1e-7);
- dynamic k = max(1, int(sum of the gt's top-``topk`` IoUs over valid priors)) (top-min(topk, n_valid));
  each gt takes its k cheapest valid priors; a prior claimed by several gts goes to the gt of minimum cost
  over all of the image's gts (first index on ties).
Equal costs do occur (a gt that no valid prediction overlaps: every cost is 3 x -log(1e-7) plus a cls cost
that float32 absorbs when the scores are low, as at init), so the order among them is fixed here: the lower
prior index first, on any device. NanoDet's ``torch.topk`` gives that on CPU for k = 1 over >= 64 valid
priors (partial_sort); otherwise torch leaves the order unspecified (CPU nth_element, CUDA).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from utils.assigners.base import Assignment, _check_gt, batched_box_iou
from utils.assigners.simota import _check_predictions, _resolve_claims, _simota_dynamic_k

DSL_IOU_EPS = 1e-7  # NanoDet: iou_cost = -log(IoU + 1e-7)
_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps its logs here
SOFT_CENTER_MAX_EXPONENT = 30.0  # caps 10^(d - r) at 1e30: a far valid pair stays finite, below the invalid (inf)


def _dsl_valid(priors: Tensor, gt_boxes: Tensor, gt_mask: Tensor) -> Tensor:
    """``(B, N)`` bool: the prior point lies strictly inside any valid gt box. NanoDet tests
    ``min(px - x1, py - y1, x2 - px, y2 - py) > 0``; for floats ``a - b > 0`` is exactly ``a > b``."""
    px, py = priors[:, 0], priors[:, 1]  # (N,)
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each (B, G, 1)
    inside = (px > x1).logical_and_(py > y1).logical_and_(x2 > px).logical_and_(y2 > py)  # (B, G, N)
    return inside.logical_and_(gt_mask[..., None]).any(dim=1)


def _score_terms(pred_cls_logits: Tensor, pred_obj_logits: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Per class ``(B, N, nc)`` fp32: p, BCE(score, 0) and z, with BCE(score, s) = BCE(score, 0) - s z.

    Logits (NanoDet): p = sigmoid(x), BCE(x, 0) = softplus(x), z = x. Probabilities p = sigmoid(cls) x
    sigmoid(obj): torch's BCE with its logs clamped at -100, z = log p - log(1 - p).
    """
    if pred_obj_logits is None:
        z = pred_cls_logits.float()
        return z.sigmoid(), F.softplus(z), z
    prob = pred_cls_logits.float().sigmoid().mul_(pred_obj_logits.float().sigmoid())
    log_p, log_1mp = prob.log().clamp_(min=_LOG_MIN), torch.log1p(-prob).clamp_(min=_LOG_MIN)
    return prob, log_1mp.neg(), log_p.sub_(log_1mp)


def _dsl_cls_cost(pred_cls_logits: Tensor, pred_obj_logits: Tensor | None, gt_labels: Tensor, iou: Tensor) -> Tensor:
    """``(B, G, N)``: sum over classes of BCE(score, soft label) x |soft label - p|^2, soft label = one-hot(gt
    class) x IoU, in fp32. Scores are the cls logits (as NanoDet), or with ``pred_obj_logits`` the probability
    p = sigmoid(cls) x sigmoid(obj) (BCE on probabilities).

    Without the ``(B, G, N, nc)`` tensor: every class but the gt's has soft label 0, so the sum over classes
    of BCE(score, 0) x p^2 is shared by all gts, and a gt of class c swaps its c-th term for the soft-label
    one. The swap is set to exactly 0 where IoU = 0, so gts then tie exactly, as they do in NanoDet.
    """
    prob, bce0, z = _score_terms(pred_cls_logits, pred_obj_logits)  # each (B, N, nc)
    negative = bce0 * prob.square()
    batch_idx = torch.arange(gt_labels.shape[0], device=gt_labels.device)[:, None]  # (B, 1)
    try:  # each (B, G, N): the gt class's column per gt
        z_gt = z.transpose(1, 2)[batch_idx, gt_labels]
    except IndexError as err:  # CPU; a CUDA device asserts instead
        raise ValueError(f"gt_labels hold a class outside [0, nc={z.shape[-1]}) "
                         f"(nc from pred_cls_logits): {err}") from err
    prob_gt, bce0_gt, negative_gt = (t.transpose(1, 2)[batch_idx, gt_labels] for t in (prob, bce0, negative))
    swap = torch.sub(bce0_gt, z_gt.mul_(iou), out=z_gt)  # BCE(score, IoU)
    swap.mul_(torch.sub(iou, prob_gt, out=prob_gt).square_()).sub_(negative_gt)
    swap.masked_fill_(iou == 0, 0.0)  # soft label 0: exactly no swap
    return swap.add_(negative.sum(dim=-1)[:, None, :])


def _soft_center_cost(priors: Tensor, gt_boxes: Tensor, soft_center_radius: float) -> Tensor:
    """``(B, G, N)``: RTMDet's soft centre prior 10^(|prior point - gt centre| / stride_x - radius)
    (mmyolo ``BatchDynamicSoftLabelAssigner``), the exponent capped at ``SOFT_CENTER_MAX_EXPONENT``."""
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2.0  # (B, G, 2)
    dx = priors[:, 0] - centre[..., 0, None]  # (B, G, N)
    dy = priors[:, 1] - centre[..., 1, None]
    exponent = torch.hypot(dx, dy).div_(priors[:, 2]).sub_(soft_center_radius)
    return torch.pow(10.0, exponent.clamp_(max=SOFT_CENTER_MAX_EXPONENT))


def _cheapest_first(cost: Tensor, max_k: int) -> Tensor:
    """``(B, G, max_k)`` indices of each row's ``max_k`` smallest costs, in increasing cost, the lower prior
    index first among equal costs: ``topk`` on distinct int64 keys, the float32 bits mapped to an int of the
    same order (negative floats: all but the sign bit flipped) in the high bits, the prior index in the low."""
    num_priors = cost.shape[-1]
    bits = cost.float().contiguous().view(torch.int32)
    flip = (bits >> 31).bitwise_and_(0x7FFFFFFF)  # 0 for +, 0x7FFFFFFF for - (arithmetic shift)
    key = flip.bitwise_xor_(bits).long().bitwise_left_shift_(max(num_priors - 1, 1).bit_length())
    key.bitwise_or_(torch.arange(num_priors, device=cost.device))
    return key.topk(min(max_k, num_priors), dim=-1, largest=False).indices


def _check_dsl_options(topk: int, iou_factor: float, soft_center_radius: float) -> None:
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if not iou_factor >= 0:
        raise ValueError(f"iou_factor must be >= 0, got {iou_factor}")
    if not soft_center_radius >= 0:
        raise ValueError(f"soft_center_radius must be >= 0 (0 = off), got {soft_center_radius}")


@torch.no_grad()
def dsl_assign(
    pred_boxes: Tensor,
    pred_cls_logits: Tensor,
    pred_obj_logits: Tensor | None,
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    *,
    topk: int = 13,
    iou_factor: float = 3.0,
    soft_center_radius: float = 0.0,
) -> Assignment:
    """NanoDet-Plus's Dynamic Soft Label Assigner (rules in the module docstring), batched.

    pred_boxes (B, N, 4) xyxy px, pred_cls_logits (B, N, nc), pred_obj_logits (B, N[, 1]) or None,
    priors (N, 4) [px, py, sx, sy] px, gt_boxes (B, G, 4) xyxy px, gt_labels (B, G) long in [0, nc)
    where valid, gt_mask (B, G) bool (False = padding).

    ``pred_obj_logits`` None (a GFL head): the class score is sigmoid(cls), NanoDet's rule. Given (a YOLOX
    head assigned by DSLA, our extension): the class score is p = sigmoid(cls) x sigmoid(obj) and the cls
    cost is BCE on probabilities. ``soft_center_radius`` > 0 (our extension, off by default) adds RTMDet's
    soft centre prior 10^(|prior point - gt centre| / stride_x - soft_center_radius) to every pair's cost
    (mmyolo ``BatchDynamicSoftLabelAssigner``, radius 3.0 there; RTMDet's other changes -- gt-class-only cls
    cost, invalid priors at cost 1e8 -- are not taken). Invalid priors are never assigned.
    """
    _check_predictions(pred_boxes, pred_cls_logits, pred_obj_logits, priors)
    _check_gt(gt_boxes, gt_labels, gt_mask, pred_boxes.shape[0])
    _check_dsl_options(topk, iou_factor, soft_center_radius)
    batch, num_priors = pred_boxes.shape[:2]
    device = pred_boxes.device
    if gt_boxes.shape[1] == 0:
        background = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        return Assignment(background, torch.zeros((batch, num_priors), device=device),
                          torch.zeros((), dtype=torch.long, device=device))

    gt_boxes, priors = gt_boxes.float(), priors.float()
    valid = _dsl_valid(priors, gt_boxes, gt_mask)  # (B, N)
    iou = batched_box_iou(gt_boxes, pred_boxes.float())  # (B, G, N)
    labels = gt_labels.long().masked_fill(~gt_mask, 0)  # padding rows may hold any label
    obj = None if pred_obj_logits is None else pred_obj_logits.reshape(batch, num_priors, 1)
    cost = _dsl_cls_cost(pred_cls_logits, obj, labels, iou)
    cost.add_(iou.add(DSL_IOU_EPS).log_(), alpha=-iou_factor)
    if soft_center_radius > 0:
        cost.add_(_soft_center_cost(priors, gt_boxes, soft_center_radius))
    cost.masked_fill_(~valid[:, None, :], float("inf")).masked_fill_(~gt_mask[..., None], float("inf"))

    dynamic_k = _simota_dynamic_k(iou, valid, gt_mask, topk)  # (B, G), <= n_valid: only finite costs taken
    assigned_gt = _resolve_claims(cost, _cheapest_first(cost, topk), dynamic_k)
    fg = assigned_gt >= 0
    matched_iou = iou.gather(1, assigned_gt.clamp(min=0)[:, None, :]).squeeze(1) * fg
    return Assignment(assigned_gt, matched_iou, fg.sum())
