"""Losses: primitive terms and one criterion per head family.

A criterion is built by its head with everything it needs passed explicitly (nc, anchors, strides,
hyperparameters) and satisfies ``models.heads.base.Criterion``: ``criterion(raw, targets) -> (total, items)``
where ``items`` is a detached 1-D tensor of the named terms in ``criterion.loss_names`` (these become the
results.csv columns) and ``total`` = sum(items) x batch size (YOLOv5's reduction), the tensor to
back-propagate; ``on_epoch(state)`` is called at the start of every epoch.

Shape shorthand: bs batch, na anchors per level, ny/nx feature size, no = 5 + nc, M targets,
P positives (target x anchor x cell matches) on one level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import box_convert, sigmoid_focal_loss

from utils.assigners import Assignment, get_assigner
from utils.boxes import bbox_iou, decode_yolov5, decode_yolox, encode_yolox, make_grid

# neighbour cells a target may also be assigned to: itself, left, up, right, down (offset 0.5)
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets with label smoothing ``eps``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class BCELogits(nn.Module):
    """BCE-with-logits (mean), or YOLOv5's focal variant when ``gamma > 0`` (alpha 0.25)."""

    def __init__(self, pos_weight: float = 1.0, gamma: float = 0.0, alpha: float = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha
        self.bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))

    def forward(self, pred: Tensor, true: Tensor) -> Tensor:
        if self.gamma > 0:
            return sigmoid_focal_loss(pred, true, alpha=self.alpha, gamma=self.gamma, reduction="mean")
        return self.bce(pred, true)


@dataclass
class LevelTargets:
    """Positives of one level: indices into ``(bs, na, ny, nx)`` and their targets."""
    b: Tensor        # (P,) image index
    a: Tensor        # (P,) anchor index
    gj: Tensor       # (P,) cell row
    gi: Tensor       # (P,) cell column
    box: Tensor      # (P, 4) xy offset from the cell, wh, grid units
    cls: Tensor      # (P,) class
    anchor: Tensor   # (P, 2) matched anchor wh, grid units


def build_yolov5_targets(targets: Tensor, shapes: list[tuple[int, int]], anchors: Tensor, anchor_t: float,
                         g: float = 0.5) -> list[LevelTargets]:
    """YOLOv5's shape matching: a target goes to every anchor whose wh ratio is within ``anchor_t`` on both
    sides, in its own cell and the two neighbouring cells nearest its centre (offset ``g``).

    targets: (M, 6) ``[image, class, cx, cy, w, h]`` normalised; shapes: per level (ny, nx);
    anchors: (nl, na, 2) grid units.
    """
    na, nt = anchors.shape[1], targets.shape[0]
    device = targets.device
    ai = torch.arange(na, device=device, dtype=targets.dtype).view(na, 1).expand(na, nt)
    t_all = torch.cat((targets.unsqueeze(0).expand(na, nt, 6), ai[..., None]), 2)  # (na, M, 7)
    off = _NEIGHBOURS.to(device=device, dtype=targets.dtype) * g
    out = []
    for i, (ny, nx) in enumerate(shapes):
        gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], device=device, dtype=targets.dtype)
        t = t_all * gain  # to grid units
        r = t[..., 4:6] / anchors[i][:, None]  # (na, M, 2) wh ratio
        t = t[torch.max(r, 1 / r).max(2)[0] < anchor_t]  # (K, 7)
        gxy = t[:, 2:4]
        gxi = gain[[2, 3]] - gxy  # distance from the right / bottom edge
        j, k = ((gxy % 1 < g) & (gxy > 1)).T
        l, m = ((gxi % 1 < g) & (gxi > 1)).T
        keep = torch.stack((torch.ones_like(j), j, k, l, m))  # (5, K)
        t = t.unsqueeze(0).expand(5, -1, -1)[keep]
        offsets = (torch.zeros_like(gxy)[None] + off[:, None])[keep]
        gxy = t[:, 2:4]
        gij = (gxy - offsets).long()
        gi, gj = gij[:, 0].clamp(0, nx - 1), gij[:, 1].clamp(0, ny - 1)
        a = t[:, 6].long()
        out.append(LevelTargets(b=t[:, 0].long(), a=a, gj=gj, gi=gi,
                                box=torch.cat((gxy - torch.stack((gi, gj), 1), t[:, 4:6]), 1),
                                cls=t[:, 1].long(), anchor=anchors[i][a]))
    return out


class YOLOv5Loss:
    """YOLOv5 v7.0's loss for anchor-based heads (``Detect``, ``DetectDcoupleHead``).

    Box: 1 - CIoU of the decoded positive; objectness: BCE on every cell against the detached, clamped IoU
    of its positive (0 elsewhere), weighted per level; class: BCE on positives (only when nc > 1).
    Gains are scaled by the number of levels, classes and the image size as YOLOv5's train.py does.
    """

    loss_names = ("box", "obj", "cls")

    def __init__(self, nc: int, anchors: Tensor, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0):
        nl = anchors.shape[0]
        self.nc, self.anchors = nc, anchors.detach()
        self.anchor_t = float(hyp["anchor_t"])
        self.box_gain = hyp["box"] * 3 / nl
        self.cls_gain = hyp["cls"] * nc / 80 * 3 / nl
        self.obj_gain = hyp["obj"] * (imgsz / 640) ** 2 * 3 / nl
        self.balance = {3: [4.0, 1.0, 0.4]}.get(nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        self.cp, self.cn = smooth_bce(label_smoothing)
        gamma = float(hyp.get("fl_gamma", 0.0))
        self.bce_cls = BCELogits(hyp.get("cls_pw", 1.0), gamma)
        self.bce_obj = BCELogits(hyp.get("obj_pw", 1.0), gamma)

    def on_epoch(self, state) -> None:
        """YOLOv5's loss does not change over a run."""

    def __call__(self, raw: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """raw: per level (bs, na, ny, nx, no) logits; targets: (M, 6) normalised -> (total, items (3,))."""
        device = raw[0].device
        self.bce_cls.to(device), self.bce_obj.to(device)
        anchors = self.anchors.to(device)
        levels = build_yolov5_targets(targets.to(device), [p.shape[2:4] for p in raw], anchors, self.anchor_t)
        lbox = lobj = lcls = torch.zeros((), device=device)
        for p, t, balance in zip(raw, levels, self.balance):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=device)  # (bs, na, ny, nx)
            if t.b.shape[0]:
                pos = p[t.b, t.a, t.gj, t.gi]  # (P, no)
                xy, wh = decode_yolov5(pos[:, 0:2], pos[:, 2:4], 0.0, t.anchor)
                iou = bbox_iou(torch.cat((xy, wh), 1), t.box, CIoU=True).squeeze(-1)
                lbox = lbox + (1.0 - iou).mean()
                tobj[t.b, t.a, t.gj, t.gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    tc = torch.full_like(pos[:, 5:], self.cn)
                    tc[torch.arange(tc.shape[0], device=device), t.cls] = self.cp
                    lcls = lcls + self.bce_cls(pos[:, 5:], tc)
            lobj = lobj + self.bce_obj(p[..., 4], tobj) * balance
        items = torch.stack((lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain))
        return items.sum() * raw[0].shape[0], items.detach()


# ---------------------------------------------------------------------------------------------
# YOLOX: anchor-free decoupled head, SimOTA assignment
# Shape shorthand: B batch, N cells over all levels, G ground truths per image (padded), nc classes.
# ---------------------------------------------------------------------------------------------
YOLOX_NOMINAL_BATCH = 64  # YOLOX's lr (0.01) is set for a mean-per-positive loss over 64 images
YOLOX_IOU_WEIGHT = 5.0


class PaddedTargets(NamedTuple):
    """Ground truths padded per image: boxes (B, G, 4) cxcywh px, labels (B, G) long, mask (B, G) bool."""
    boxes: Tensor
    labels: Tensor
    mask: Tensor


def pad_targets(targets: Tensor, batch_size: int, img_w: float, img_h: float) -> PaddedTargets:
    """(M, 6) ``[image, class, cx, cy, w, h]`` normalised -> per-image padded tensors in pixels.

    Rows are scattered to (image, rank within image) with no Python loop; G = the largest count in the
    batch (at least 1, so that an all-empty batch still has a fully masked row). Reading G is the one
    host sync: a padded shape depends on the data.
    """
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be (M, 6) [image, class, cx, cy, w, h], got shape {tuple(targets.shape)}")
    device, m = targets.device, targets.shape[0]
    img = targets[:, 0].long()
    counts = torch.zeros(batch_size, dtype=torch.long, device=device)
    try:
        counts.scatter_add_(0, img, torch.ones_like(img))
    except RuntimeError as e:  # CPU; CUDA asserts instead
        raise ValueError(f"targets hold an image index outside [0, {batch_size}): {e}") from None
    g = max(int(counts.max()), 1) if m else 1
    order = torch.sort(img, stable=True).indices
    img_sorted = img[order]
    first = counts.cumsum(0) - counts  # (B,) position of each image's first row in the sorted order
    rank = torch.arange(m, device=device) - first[img_sorted]
    scale = torch.tensor([img_w, img_h, img_w, img_h], device=device, dtype=torch.float32)
    boxes = torch.zeros((batch_size, g, 4), device=device)
    labels = torch.zeros((batch_size, g), dtype=torch.long, device=device)
    mask = torch.zeros((batch_size, g), dtype=torch.bool, device=device)
    boxes[img_sorted, rank] = targets[order, 2:6].float() * scale
    labels[img_sorted, rank] = targets[order, 1].long()
    mask[img_sorted, rank] = True
    return PaddedTargets(boxes, labels, mask)


class YOLOXLoss:
    """YOLOX's loss (paper / release 0.3.0) for ``YOLOXHead``.

    The head's assigner picks the positives: SimOTA by default (``utils.assigners.simota_assign``; hyp
    ``simota_center_only: true`` switches to YOLOX main's centre-only rule, radius 1.5), or any other
    name in ``utils.assigners.ASSIGNERS`` (the head's ``assigner`` YAML argument). Terms, each summed and divided by the number
    of positives in the batch (>= 1):
    iou = 5 * (1 - IoU^2) on positives; obj = BCE against the 0/1 positive mask on every cell;
    cls = BCE on positives against the one-hot class scaled by the assigned IoU; l1 = |raw - encoded gt|
    on positives, only in epochs without mosaic (``on_epoch``).

    Reduction: YOLOX applies lr 0.01 to this per-positive mean over 64 images; YOLOv5's pipeline applies
    lr 0.01 to the sum over a nominal 64 images of per-image items (``total = sum(items) * bs``, gradients
    accumulated to 64 images). So ``items`` = YOLOX's terms / 64: accumulated to 64 images the gradient
    is YOLOX's, and the logged items are of YOLOv5's size. YOLOv5's ``box``/``obj``/``cls`` gains belong
    to its own loss and are not used here.
    """

    loss_names = ("iou", "obj", "cls", "l1")

    def __init__(self, nc: int, strides: Tensor | list[float], hyp: dict, label_smoothing: float = 0.0,
                 assigner: str = "simota"):
        self.nc = nc
        self.assigner_name, self.assigner = assigner, get_assigner(assigner)
        self.strides = [float(s) for s in strides]
        if not self.strides or min(self.strides) <= 0:
            raise ValueError(f"YOLOXLoss: strides must be positive, got {self.strides} (was the model initialised?)")
        if assigner == "simota":
            center_only = bool(hyp.get("simota_center_only", False))
            radius = float(hyp.get("simota_center_radius", 1.5 if center_only else 2.5))
            self.assign_options = {"center_radius": radius, "center_only": center_only}
        else:
            self.assign_options = {}
        self.cp, self.cn = smooth_bce(label_smoothing)
        self.use_l1 = False
        self._cells: tuple | None = None  # (key, cell (N, 2), stride (N, 1))

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

    def cells(self, raw: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Cell indices ``(N, 2)`` and strides ``(N, 1)`` of the flattened cells, cached per feature size."""
        shapes = tuple(tuple(p.shape[2:4]) for p in raw)
        key = (shapes, raw[0].device)
        if self._cells is None or self._cells[0] != key:
            device = raw[0].device
            cell = torch.cat([make_grid(nx, ny, device).view(-1, 2) for ny, nx in shapes])
            stride = torch.cat([torch.full((ny * nx, 1), s, device=device)
                                for (ny, nx), s in zip(shapes, self.strides)])
            self._cells = (key, cell, stride)
        return self._cells[1], self._cells[2]

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
            priors, box_convert(gt.boxes, "cxcywh", "xyxy"), gt.labels, gt.mask, **self.assign_options)

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
