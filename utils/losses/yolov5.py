"""YOLOv5 v7.0's loss for the anchor heads (``Detect``, ``DetectDcoupleHead``), with its own target builder
(YOLOv5's shape matching; see utils/assigners for why it keeps its own contract).

Shape shorthand: bs batch, na anchors per level, ny/nx feature size, no = 5 + nc, M targets,
P positives (target x anchor x cell matches) on one level.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from utils.boxes import bbox_iou, decode_yolov5
from utils.losses.common import BCELogits, smooth_bce

# neighbour cells a target may also be assigned to: itself, left, up, right, down (offset 0.5)
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32)



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
