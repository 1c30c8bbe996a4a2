"""Generalized Focal Loss primitives (GFL, arXiv 2006.04388; NanoDet-Plus's head): QFL and DFL, and the
integral box coder they work with.

Shape shorthand: M samples (priors, or prior x side for DFL), nc classes, R = reg_max (bins 0..R per side).
Distances are [left, top, right, bottom] from a prior point; in bins unless a name says px.

The coder (``integral``, ``distance2bbox``, ``bbox2distance``) lives in ``utils.boxes`` with the other box
coders (one decode for loss and eval) and is re-exported here. The losses return one value per sample with no
reduction: the criterion normalises (NanoDet: QFL by the number of positives, DFL by 4 x the sum of weights).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou_loss

from utils.assigners import Assignment, assigner_from
from utils.boxes import bbox2distance, distance2bbox, FlatCells, gfl_decode, integral
from utils.losses.common import pad_targets

__all__ = ["GFLLoss", "bbox2distance", "distance2bbox", "distribution_focal_loss", "integral", "quality_focal_loss"]


def _check_qfl_inputs(logits: Tensor, labels: Tensor, scores: Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (M, nc), got shape {tuple(logits.shape)}")
    if tuple(labels.shape) != logits.shape[:1] or labels.is_floating_point():
        raise ValueError(f"labels must be an integer (M,) = ({logits.shape[0]},) tensor (-1 = background), "
                         f"got {labels.dtype} of shape {tuple(labels.shape)}")
    if tuple(scores.shape) != logits.shape[:1]:
        raise ValueError(f"scores must be (M,) = ({logits.shape[0]},) IoU targets, got shape {tuple(scores.shape)}")


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """QFL per sample, summed over classes: ``(M, nc)`` logits, ``(M,)`` labels (-1 = background), ``(M,)``
    soft targets (the IoU of a positive's box with its gt) -> ``(M,)``, in fp32.

    Every class of a background row and every non-target class of a positive: BCE(x, 0) x sigmoid(x)^beta;
    the target class of a positive: BCE(x, score) x |score - sigmoid(x)|^beta (NanoDet's ``quality_focal_loss``).
    """
    _check_qfl_inputs(logits, labels, scores)
    logits = logits.float()
    prob = logits.sigmoid()
    loss = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    loss = loss * prob.pow(beta)  # (M, nc): every entry as a negative
    positive = labels >= 0
    target = labels.clamp(min=0).long()[:, None]  # (M, 1)
    scores = scores.float()
    logit_t, prob_t = logits.gather(1, target).squeeze(1), prob.gather(1, target).squeeze(1)  # (M,)
    loss_t = F.binary_cross_entropy_with_logits(logit_t, scores, reduction="none") * (scores - prob_t).abs().pow(beta)
    loss_t = loss_t.where(positive, loss.gather(1, target).squeeze(1))  # background rows keep their negative
    return loss.scatter(1, target, loss_t[:, None]).sum(dim=1)


def distribution_focal_loss(dist_logits: Tensor, target: Tensor) -> Tensor:
    """DFL: ``(M, R + 1)`` bin logits and ``(M,)`` target distances in bins, in [0, R] -> ``(M,)``.

    Cross-entropy on the two bins around the target, weighted linearly by nearness: for t between bins
    l = floor(t) and l + 1, (l + 1 - t) x CE(l) + (t - l) x CE(l + 1) (NanoDet's ``distribution_focal_loss``;
    t = R exactly is CE(R) alone, where NanoDet would index bin R + 1).
    """
    if dist_logits.ndim != 2 or dist_logits.shape[1] < 2:
        raise ValueError(f"dist_logits must be (M, reg_max + 1) with reg_max >= 1, got {tuple(dist_logits.shape)}")
    if tuple(target.shape) != dist_logits.shape[:1]:
        raise ValueError(f"target must be (M,) = ({dist_logits.shape[0]},) distances in bins, "
                         f"got shape {tuple(target.shape)}")
    reg_max = dist_logits.shape[1] - 1
    target = target.float()
    left = target.long()  # floor, targets being >= 0
    weight_left = (left + 1).float() - target
    weight_right = target - left.float()
    log_prob = F.log_softmax(dist_logits.float(), dim=1)  # (M, R + 1)
    ce_left = -log_prob.gather(1, left[:, None]).squeeze(1)
    ce_right = -log_prob.gather(1, (left + 1).clamp(max=reg_max)[:, None]).squeeze(1)
    return ce_left * weight_left + ce_right * weight_right


# ---------------------------------------------------------------------------------------------
# The criterion of the GFL head (NanoDet-Plus)
# ---------------------------------------------------------------------------------------------
GFL_NOMINAL_BATCH = 64  # as YOLOX_NOMINAL_BATCH: items = per-positive terms / 64, so the gradient accumulated
# over 64 images is NanoDet's per-positive mean
QFL_BETA, QFL_WEIGHT, DFL_WEIGHT, GIOU_WEIGHT = 2.0, 1.0, 0.25, 2.0  # nanodet-plus-m_320.yml
DFL_EPS = 0.1  # DFL targets clamped to [0, reg_max - 0.1]


class GFLLoss:
    """NanoDet-Plus's loss for ``GFLHead``: the positives are picked once per batch by the head's assigner
    (DSLA by default; its options from the row and the hyp, ``utils.assigners.assigner_from``) on the AGM's
    detached predictions (on the head's own without an AGM), and the same assignment trains the main head and
    the AGM, whose terms are summed.

    Per head, over the batch: qfl = QFL(beta 2) over all priors and classes, target the assigner's soft target
    (``matched_iou``: the IoU; TAL's normalised alignment) on the gt class, / positives; giou = 2 x GIoU loss on positives weighted by their detached max class score, / the
    weights' sum (>= 1); dfl = 0.25 x DFL of the four sides' distances in bins (clamped to [0, reg_max -
    0.1]), same weights, / (4 x the weights' sum). Items are these / 64 (see ``GFL_NOMINAL_BATCH``), total =
    sum(items) x batch size. Everything is computed densely with masks: no host sync but ``pad_targets``'s.
    """

    def __init__(self, nc: int, strides: Tensor | list[float], reg_max: int = 7, assigner: str = "dsl",
                 aux: bool = True, hyp: dict | None = None, assigner_options: dict | None = None):
        self.nc, self.reg_max, self.aux = nc, reg_max, aux
        self.strides = [float(s) for s in strides]
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"GFLLoss: strides must be positive, got {self.strides} (was the model initialised?)")
        self.assigner_name, self.assigner = assigner, assigner_from(assigner, hyp, assigner_options)
        self.loss_names = ("qfl", "dfl", "giou") + (("aux_qfl", "aux_dfl", "aux_giou") if aux else ())
        self.priors = FlatCells(self.strides, "corner")  # cell corners (N, 2) px, strides (N, 1)

    def on_epoch(self, state) -> None:
        """Nothing epoch-switched in the loss (the AGM's detach lives in the head)."""

    def flatten(self, maps: list[Tensor]) -> Tensor:
        """Per level ``(B, C, ny, nx)`` -> ``(B, N, C)`` float32, levels in order."""
        no = self.nc + 4 * (self.reg_max + 1)
        if len(maps) != len(self.strides):
            raise ValueError(f"GFLLoss: {len(maps)} output levels for {len(self.strides)} strides")
        for i, p in enumerate(maps):
            if p.ndim != 4 or p.shape[1] != no:
                raise ValueError(f"GFLLoss: level {i} output has shape {tuple(p.shape)}, expected (B, {no}, ny, nx)")
        return torch.cat([p.flatten(2) for p in maps], 2).transpose(1, 2).float()

    def __call__(self, out, targets: Tensor) -> tuple[Tensor, Tensor]:
        """out: the head's ``GFLOutput`` (or its per-level main maps); targets (M, 6) -> (total, items)."""
        main_maps, aux_maps = (out.main, out.aux) if hasattr(out, "main") else (out, None)
        if self.aux and aux_maps is None:
            raise ValueError("GFLLoss: built for a head with an AGM but got no AGM outputs (is the model in "
                             "training mode, and does the YAML set aux_from?)")
        points, stride = self.priors(main_maps)
        main = self.flatten(main_maps)
        ny, nx = main_maps[0].shape[2:4]
        gt = pad_targets(targets.to(main.device), main.shape[0], nx * self.strides[0], ny * self.strides[0])
        gt_boxes = box_convert(gt.boxes, "cxcywh", "xyxy")
        main_box = gfl_decode(main[..., self.nc:], points, stride, self.reg_max)
        heads = [(main, main_box)]
        if self.aux:
            aux = self.flatten(aux_maps)
            heads.append((aux, gfl_decode(aux[..., self.nc:], points, stride, self.reg_max)))
        guide, guide_box = heads[-1]
        assigned = self.assigner(guide_box.detach(), guide[..., :self.nc].detach(), None,
                                 torch.cat((points, stride, stride), 1), gt_boxes, gt.labels, gt.mask)
        items = torch.cat([self.terms(p, box, points, stride, gt_boxes, gt.labels, assigned) for p, box in heads])
        items = items / GFL_NOMINAL_BATCH
        return items.sum() * main.shape[0], items.detach()

    def terms(self, pred: Tensor, pred_box: Tensor, points: Tensor, stride: Tensor, gt_boxes: Tensor,
              gt_labels: Tensor, assigned: Assignment) -> Tensor:
        """``(3,)`` weighted [qfl, dfl, giou] of one head (NanoDet's ``_get_loss_from_assign``)."""
        fg = assigned.fg_mask  # (B, N)
        idx = assigned.assigned_gt.clamp(min=0)
        labels = torch.where(fg, gt_labels.gather(1, idx), -1)
        cls = pred[..., :self.nc]
        qfl = quality_focal_loss(cls.reshape(-1, self.nc), labels.reshape(-1), assigned.matched_iou.reshape(-1),
                                 QFL_BETA).sum() / assigned.num_fg.clamp(min=1)
        weight = cls.detach().sigmoid().amax(-1) * fg  # (B, N), 0 off the positives
        weight_sum = weight.sum().clamp(min=1.0)
        box_t = gt_boxes.gather(1, idx[..., None].expand(-1, -1, 4))  # (B, N, 4) xyxy
        giou = (generalized_box_iou_loss(pred_box, box_t, reduction="none") * weight).sum() / weight_sum
        dist_t = (bbox2distance(points, box_t) / stride).clamp(min=0, max=self.reg_max - DFL_EPS)  # (B, N, 4) bins
        dfl = distribution_focal_loss(pred[..., self.nc:].reshape(-1, self.reg_max + 1), dist_t.reshape(-1))
        dfl = (dfl.view(weight.shape + (4,)) * weight[..., None]).sum() / (4 * weight_sum)
        return torch.stack((QFL_WEIGHT * qfl, DFL_WEIGHT * dfl, GIOU_WEIGHT * giou))
