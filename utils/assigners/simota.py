"""SimOTA (YOLOX), batched: no loop over images or ground truths, no host sync."""
from __future__ import annotations

import torch
from torch import Tensor

from utils.assigners.base import Assignment, _check_gt, batched_box_iou

SIMOTA_PENALTY_BOX_AND_CENTER = 1e5  # YOLOX <= 0.3.0 / paper: pair not (in gt box AND in its centre region)
SIMOTA_PENALTY_CENTER_ONLY = 1e6  # YOLOX main since PR #1589: pair not in the gt's centre square
SIMOTA_RADIUS_BOX_AND_CENTER = 2.5  # YOLOX <= 0.3.0: centre region of 2.5 strides
SIMOTA_RADIUS_CENTER_ONLY = 1.5  # YOLOX main: centre square of 1.5 strides
_CLS_LOG_MIN = -100.0  # torch's binary_cross_entropy clamps its logs here; SimOTA's cost used that BCE


def _simota_geometry(
    priors: Tensor, gt_boxes: Tensor, gt_mask: Tensor, center_radius: float, center_only: bool
) -> tuple[Tensor, Tensor]:
    """Candidate cells ``(B, N)`` and the per-pair geometric condition ``(B, G, N)``.

    A prior centre is in a box or a centre square when strictly inside it (YOLOX's ``> 0``), tested
    as ``|prior - gt centre| < half size`` per axis.
    Default: candidates lie in any gt box or any gt centre square; a pair passes when the prior is
    in that gt's box and its centre square. ``center_only``: both are the centre square alone.
    """
    half_wh = (gt_boxes[..., 2:] - gt_boxes[..., :2]) * 0.5  # (B, G, 2)
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5
    centre = centre.masked_fill(~gt_mask[..., None], float("inf"))  # padding: no prior is near it
    dist_x = (priors[:, 0] - centre[..., 0, None]).abs_()  # (B, G, N)
    dist_y = (priors[:, 1] - centre[..., 1, None]).abs_()
    in_center = (dist_x < priors[:, 2] * center_radius) & (dist_y < priors[:, 3] * center_radius)
    if center_only:
        return in_center.any(dim=1), in_center
    in_box = (dist_x < half_wh[..., 0, None]) & (dist_y < half_wh[..., 1, None])  # (B, G, N)
    candidate = (in_box | in_center).any(dim=1)  # (B, N)
    return candidate, in_box.logical_and_(in_center)


def _simota_cls_cost(pred_cls_logits: Tensor, pred_obj_logits: Tensor | None, gt_labels: Tensor) -> Tensor:
    """``(B, G, N)``: BCE of sqrt(sigmoid(cls) * sigmoid(obj)) against each gt's one-hot, summed over
    classes, in fp32; of sigmoid(cls) alone when ``pred_obj_logits`` is None.

    Computed without the ``(B, G, N, nc)`` tensor: the sum over classes of BCE(p, 0) is shared by all
    gts, and a gt of class c swaps its c-th term for BCE(p_c, 1).
    """
    score = pred_cls_logits.float().sigmoid()  # (B, N, nc)
    if pred_obj_logits is not None:
        score = score.mul_(pred_obj_logits.float().sigmoid()).sqrt_()
    neg_log_p = score.log().clamp_(min=_CLS_LOG_MIN).neg_()  # BCE(p, 1)
    neg_log_1mp = torch.log1p(-score).clamp_(min=_CLS_LOG_MIN).neg_()  # BCE(p, 0)
    all_negative = neg_log_1mp.sum(dim=-1)  # (B, N)
    swap = (neg_log_p - neg_log_1mp).transpose(1, 2).contiguous()  # (B, nc, N)
    batch_idx = torch.arange(gt_labels.shape[0], device=gt_labels.device)[:, None]  # (B, 1)
    try:
        per_gt = swap[batch_idx, gt_labels]  # (B, G, N)
    except IndexError as err:  # CPU; a CUDA device asserts instead
        raise ValueError(f"gt_labels hold a class outside [0, nc={swap.shape[1]}) "
                         f"(nc from pred_cls_logits): {err}") from err
    return per_gt.add_(all_negative[:, None, :])


def _simota_dynamic_k(iou: Tensor, candidate: Tensor, gt_mask: Tensor, candidate_topk: int) -> Tensor:
    """``(B, G)`` long: max(1, int(sum of the gt's top-min(topk, n_candidates) IoUs over candidate
    cells)); 0 for padding rows and for images without candidates."""
    topk = min(candidate_topk, iou.shape[-1])
    # Non-candidates count as IoU 0: they fill the top-k tail only when n_candidates < topk.
    iou_cand = iou.masked_fill(~candidate[:, None, :], 0.0)
    k = iou_cand.topk(topk, dim=-1).values.sum(dim=-1).int().clamp_(min=1).long()  # (B, G)
    return k.masked_fill_(~(gt_mask & candidate.any(dim=1, keepdim=True)), 0)


def _simota_match(cost: Tensor, dynamic_k: Tensor, max_k: int) -> Tensor:
    """``(B, N)`` long owner per cell, -1 when unclaimed: each gt claims its ``dynamic_k`` (<= max_k)
    cheapest cells (``torch.topk``'s order among equal costs), then ``_resolve_claims``."""
    max_k = min(max_k, cost.shape[-1])
    return _resolve_claims(cost, cost.topk(max_k, dim=-1, largest=False).indices, dynamic_k)


def _resolve_claims(cost: Tensor, cheapest: Tensor, dynamic_k: Tensor) -> Tensor:
    """``(B, N)`` long owner per cell, -1 when unclaimed.

    Each gt claims the first ``dynamic_k`` of its ``cheapest`` cells ``(B, G, max_k)``, cheapest first; a
    cell claimed by several gts goes to the gt of minimum cost for it over all of the image's gts (as
    YOLOX's dynamic_k_matching). Claims are counted by scatter on (B, G * max_k) indices, never as a
    (B, G, N) matrix.
    """
    batch, num_gt, num_priors = cost.shape
    max_k = cheapest.shape[-1]
    keep = torch.arange(max_k, device=cost.device) < dynamic_k[..., None]  # (B, G, max_k)
    cell = torch.where(keep, cheapest, num_priors).reshape(batch, -1)  # column N collects the dropped
    n_claims = torch.zeros((batch, num_priors + 1), dtype=torch.long, device=cost.device)
    n_claims.scatter_add_(1, cell, torch.ones_like(cell))
    claimer = torch.arange(num_gt, device=cost.device).repeat_interleave(max_k).expand(batch, -1)
    owner = torch.full_like(n_claims, -1).scatter_(1, cell, claimer)  # right wherever n_claims == 1
    n_claims, owner = n_claims[:, :num_priors], owner[:, :num_priors]  # (B, N)
    return torch.where(n_claims > 1, _argmin_over_gt(cost), owner)


def _argmin_over_gt(cost: Tensor) -> Tensor:
    """``cost.argmin(dim=1)`` for ``(B, G, N)`` (first index on ties), several times faster on CPU than
    torch's argmin over a middle dimension: min values first, then the smallest gt index holding them."""
    best = cost.amin(dim=1, keepdim=True)  # (B, 1, N)
    num_gt = cost.shape[1]
    gt_index = torch.arange(num_gt, device=cost.device, dtype=cost.dtype)[:, None]  # (G, 1)
    # fill G - 1: a NaN column (diverged predictions) still yields a valid index
    return torch.where(cost == best, gt_index, float(num_gt - 1)).amin(dim=1).long()  # (B, N)


def _check_predictions(pred_boxes: Tensor, pred_cls_logits: Tensor, pred_obj_logits: Tensor | None,
                       priors: Tensor) -> None:
    """Raise ValueError naming the first prediction or prior argument whose shape is wrong."""
    if pred_boxes.ndim != 3 or pred_boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be (B, N, 4) xyxy, got shape {tuple(pred_boxes.shape)}")
    batch, num_priors = pred_boxes.shape[:2]
    if pred_cls_logits.ndim != 3 or pred_cls_logits.shape[:2] != (batch, num_priors):
        raise ValueError(
            f"pred_cls_logits must be (B, N, nc) = ({batch}, {num_priors}, nc), "
            f"got shape {tuple(pred_cls_logits.shape)}"
        )
    if pred_obj_logits is not None and (pred_obj_logits.shape[:2] != (batch, num_priors)
                                        or pred_obj_logits.numel() != batch * num_priors):
        raise ValueError(
            f"pred_obj_logits must be (B, N) or (B, N, 1) = ({batch}, {num_priors}), "
            f"got shape {tuple(pred_obj_logits.shape)}"
        )
    if tuple(priors.shape) != (num_priors, 4):
        raise ValueError(f"priors must be (N, 4) = ({num_priors}, 4) [cx, cy, sx, sy], got {tuple(priors.shape)}")


def _check_simota_inputs(
    pred_boxes: Tensor, pred_cls_logits: Tensor, pred_obj_logits: Tensor | None, priors: Tensor,
    gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, center_radius: float, candidate_topk: int,
) -> None:
    """Raise ValueError naming the first argument whose shape or value is wrong."""
    _check_predictions(pred_boxes, pred_cls_logits, pred_obj_logits, priors)
    _check_gt(gt_boxes, gt_labels, gt_mask, pred_boxes.shape[0])
    if not center_radius > 0:
        raise ValueError(f"center_radius must be > 0, got {center_radius}")
    if candidate_topk < 1:
        raise ValueError(f"candidate_topk must be >= 1, got {candidate_topk}")


@torch.no_grad()
def simota_assign(
    pred_boxes: Tensor,
    pred_cls_logits: Tensor,
    pred_obj_logits: Tensor | None,
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    *,
    center_radius: float | None = None,
    candidate_topk: int = 10,
    iou_weight: float = 3.0,
    center_only: bool = False,
) -> Assignment:
    """YOLOX's SimOTA, batched: no loop over images or ground truths, no host sync.

    pred_boxes (B, N, 4) xyxy px, pred_cls_logits (B, N, nc), pred_obj_logits (B, N[, 1]) or None,
    priors (N, 4) [cx, cy, sx, sy] px, gt_boxes (B, G, 4) xyxy px, gt_labels (B, G) long in
    [0, nc) where valid, gt_mask (B, G) bool (False = padding).

    cls_cost = BCE(sqrt(sigmoid(cls) * sigmoid(obj)), one-hot) summed over classes (YOLOX), or
    BCE(sigmoid(cls), one-hot) when ``pred_obj_logits`` is None (a head without objectness);
    cost = cls_cost + iou_weight * -log(IoU + 1e-8) + penalty where the pair fails the geometry;
    dynamic k = max(1, int(sum of the top-``candidate_topk`` candidate IoUs)); each gt takes its k
    cheapest candidates; a cell claimed twice goes to its cheapest gt.
    Default: YOLOX <= 0.3.0 (paper) geometry with penalty 1e5, radius 2.5. ``center_only=True``: YOLOX main's
    centre-square-only geometry with penalty 1e6, radius 1.5. ``center_radius`` set: that radius with either.
    """
    if center_radius is None:
        center_radius = SIMOTA_RADIUS_CENTER_ONLY if center_only else SIMOTA_RADIUS_BOX_AND_CENTER
    _check_simota_inputs(pred_boxes, pred_cls_logits, pred_obj_logits, priors, gt_boxes, gt_labels,
                         gt_mask, center_radius, candidate_topk)
    batch, num_priors = pred_boxes.shape[:2]
    device = pred_boxes.device
    if gt_boxes.shape[1] == 0:
        background = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        return Assignment(background, torch.zeros((batch, num_priors), device=device),
                            torch.zeros((), dtype=torch.long, device=device))

    gt_boxes = gt_boxes.float()
    candidate, pair_ok = _simota_geometry(priors.float(), gt_boxes, gt_mask, center_radius, center_only)
    iou = batched_box_iou(gt_boxes, pred_boxes.float())  # (B, G, N)
    labels = gt_labels.long().masked_fill(~gt_mask, 0)  # padding rows may hold any label
    obj = None if pred_obj_logits is None else pred_obj_logits.reshape(batch, num_priors, 1)
    cost = _simota_cls_cost(pred_cls_logits, obj, labels)
    cost.add_(iou.add(1e-8).log_(), alpha=-iou_weight)
    penalty = SIMOTA_PENALTY_CENTER_ONLY if center_only else SIMOTA_PENALTY_BOX_AND_CENTER
    cost.add_(pair_ok.logical_not_(), alpha=penalty)  # bool -> +penalty where the geometry fails
    cost.masked_fill_(~candidate[:, None, :], float("inf")).masked_fill_(~gt_mask[..., None], float("inf"))

    dynamic_k = _simota_dynamic_k(iou, candidate, gt_mask, candidate_topk)
    assigned_gt = _simota_match(cost, dynamic_k, candidate_topk)
    fg = assigned_gt >= 0
    matched_iou = iou.gather(1, assigned_gt.clamp(min=0)[:, None, :]).squeeze(1) * fg
    return Assignment(assigned_gt, matched_iou, fg.sum())
