"""Anchor-based heads: YOLOv5's coupled ``Detect`` and the YOLOX-style decoupled ``DetectDcoupleHead``.

Both predict, per level and anchor, ``no = 5 + nc`` channels ``[tx, ty, tw, th, obj, cls...]`` laid
out as ``(bs, na, ny, nx, no)``, and share anchors, grids, decode and loss; they differ only in the
layers that produce those channels.

Shape shorthand: bs batch, na anchors per level, nl levels, ny/nx feature height/width, no = 5 + nc.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from models.common import Conv
from models.heads.base import Head
from utils.autoanchor import check_anchors
from utils.boxes import GridCache, decode_yolov5
from utils.losses import YOLOv5Loss


def _anchor_tensor(anchors: list | tuple, n_inputs: int) -> Tensor:
    """YAML anchors (per-level flat ``w,h`` lists) -> ``(nl, na, 2)`` pixels, validated."""
    if not isinstance(anchors, (list, tuple)) or not anchors:
        raise ValueError(f"anchors must be a non-empty list of per-level [w, h, ...] lists, got {anchors!r}")
    if len(anchors) != n_inputs:
        raise ValueError(f"{len(anchors)} anchor levels for {n_inputs} input feature maps: give one anchor "
                         f"list per input")
    sizes = {len(a) if isinstance(a, (list, tuple)) else -1 for a in anchors}
    if len(sizes) != 1 or (n := sizes.pop()) < 2 or n % 2:
        raise ValueError(f"each anchor level must hold the same even number of values (w, h pairs), "
                         f"got {anchors!r}")
    return torch.tensor(anchors, dtype=torch.float32).view(len(anchors), -1, 2)


class Detect(Head):
    """YOLOv5's coupled head: one 1x1 conv per level to ``na * (5 + nc)`` channels.

    Anchors are this family's business: the YAML's top-level ``anchors`` (or a count per level, fitted by
    AutoAnchor), the hyp keys ``anchors`` (override) and ``anchor_t`` (AutoAnchor and the loss's match).
    """

    yaml_keys = ("anchors",)
    # YOLOv5 v7.0's loss gains and anchor settings with their --evolve ranges, its table: (mutation gain, low, high);
    # iou_t is in YOLOv5's hyp files but read by neither its v7.0 loss nor this one (gain 0: never mutated)
    hyp_ranges: ClassVar[dict[str, tuple[float, float, float]]] = {
        "box": (1, 0.02, 0.2), "cls": (1, 0.2, 4.0), "cls_pw": (1, 0.5, 2.0), "obj": (1, 0.2, 4.0),
        "obj_pw": (1, 0.5, 2.0), "iou_t": (0, 0.1, 0.7), "anchor_t": (1, 2.0, 8.0), "anchors": (2, 2.0, 10.0),
        "fl_gamma": (0, 0.0, 2.0)}
    hyp_keys = tuple(hyp_ranges)

    def __init__(self, nc: int = 80, anchors: list | tuple = (), ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        anchors_px = _anchor_tensor(anchors, len(ch))
        self.nc = nc
        self.no = nc + 5
        self.nl, self.na = anchors_px.shape[:2]
        self.register_buffer("anchors", anchors_px)  # (nl, na, 2), grid units after initialize()
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export = False
        self._grid = GridCache(self.nl)
        self.m = self._build_levels(ch)

    def _build_levels(self, ch: list[int] | tuple[int, ...]) -> nn.ModuleList:
        return nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)

    def _predict_level(self, i: int, x: Tensor) -> Tensor:
        bs, _, ny, nx = x.shape
        return self.m[i](x).view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    @classmethod
    def yaml_args(cls, args: list, ctx) -> list:
        """``anchors`` as given (per-level ``w, h`` lists), or a count per level (placeholders for AutoAnchor)."""
        args = super().yaml_args(args, ctx)
        if isinstance(args[1], int) and not isinstance(args[1], bool):
            args[1] = [list(range(args[1] * 2))] * len(ctx.head_inputs)
        elif args[1] is None:
            raise ValueError("the head needs 'anchors' but the YAML has no top-level 'anchors' key")
        return args

    @classmethod
    def cfg_from_hyp(cls, cfg: dict, hyp: dict) -> dict:
        """YOLOv5's hyp key ``anchors`` (anchors per level) replaces the YAML's anchors."""
        if hyp.get("anchors"):
            cfg = {**cfg, "anchors": round(hyp["anchors"])}
        return cfg

    def transfer_exclude(self, hyp: dict, new_cfg: bool) -> tuple[str, ...]:
        """YOLOv5: anchors are not transferred into a new cfg or when the hyp sets new ones."""
        return ("anchor",) if new_cfg or hyp.get("anchors") else ()

    def forward(self, features: list[Tensor], targets: Tensor | None = None) -> list[Tensor]:
        """Raw logits per level, ``(bs, na, ny, nx, no)``."""
        return [self._predict_level(i, x) for i, x in enumerate(features)]

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Raw logits -> ``(bs, N, 5 + nc)``: cxcywh pixels, objectness and class probabilities."""
        out = []
        for i, p in enumerate(raw):
            bs, _, ny, nx, _ = p.shape
            grid = self._grid(i, nx, ny, p, self.export)
            anchor = self.anchors[i].to(p.dtype).view(1, self.na, 1, 1, 2)  # grid units
            xy, wh = decode_yolov5(p[..., 0:2], p[..., 2:4], grid, anchor)
            box = torch.cat((xy, wh), -1) * self.stride[i]
            out.append(torch.cat((box, p[..., 4:].sigmoid()), -1).view(bs, -1, self.no))
        return torch.cat(out, 1)

    def initialize(self, stride: Tensor) -> None:
        """Set strides, check anchor order, convert anchors to grid units and set bias priors."""
        self.stride = stride.to(self.anchors)
        area = self.anchors.prod(-1).mean(-1)  # mean anchor area per level, pixels
        if (area[-1] - area[0]).sign() != (self.stride[-1] - self.stride[0]).sign():
            self.anchors.copy_(self.anchors.flip(0))
        self.anchors /= self.stride.view(-1, 1, 1)
        self._grid.clear()
        self._initialize_biases()

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> YOLOv5Loss:
        return YOLOv5Loss(self.nc, self.anchors, hyp, imgsz, label_smoothing)

    @torch.no_grad()
    def fit_priors(self, label_wh: np.ndarray, hyp: dict) -> None:
        """AutoAnchor: refit the anchors (k-means + evolution) when they fit the labels poorly."""
        stride = self.stride.view(-1, 1, 1)
        new = check_anchors(label_wh, (self.anchors * stride).cpu().numpy(), float(hyp["anchor_t"]))
        if new is not None:
            self.anchors.copy_(torch.from_numpy(new).to(self.anchors) / stride)

    @torch.no_grad()
    def _initialize_biases(self) -> None:
        """YOLOv5's priors: ~8 objects per 640 image per level, class prior 0.6 / nc."""
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.view(self.na, -1)
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            b[:, 5:5 + self.nc] += math.log(0.6 / (self.nc - 0.99999))

    def _apply(self, fn, recurse=True):
        self._grid.clear()  # cached grids follow the module to its new device/dtype
        return super()._apply(fn, recurse)


NORMS = ("bn", "gn")
GN_GROUPS = 32  # NanoDet-Plus's GroupNorm(32) in its AGM head


def norm_conv(c1: int, c2: int, k: int, norm: str = "bn") -> Conv:
    """``Conv`` (conv, norm, SiLU) with BatchNorm ("bn") or GroupNorm(32) ("gn") as its norm layer. GroupNorm
    normalises each image on its own, so it has no running statistics to go stale (and is not folded by
    ``fuse``)."""
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} not understood: use one of {', '.join(NORMS)}")
    m = Conv(c1, c2, k, 1)
    if norm == "gn":
        if c2 % GN_GROUPS:
            raise ValueError(f"norm 'gn' (GroupNorm({GN_GROUPS})) needs channels divisible by {GN_GROUPS}, got {c2}")
        m.bn = nn.GroupNorm(GN_GROUPS, c2)
    return m


class DecoupledHead(nn.Module):
    """One level of YOLOX's decoupled head with ``na`` anchors: 1x1 stem, then a cls branch and a reg
    branch of two 3x3 convs each; obj is predicted from the reg branch. ``norm``: "bn" (YOLOX) or "gn"."""

    def __init__(self, c1: int, hidden: int, nc: int, na: int, norm: str = "bn"):
        super().__init__()
        self.nc, self.na = nc, na
        self.stem = norm_conv(c1, hidden, 1, norm)
        self.cls_convs = nn.Sequential(norm_conv(hidden, hidden, 3, norm), norm_conv(hidden, hidden, 3, norm))
        self.reg_convs = nn.Sequential(norm_conv(hidden, hidden, 3, norm), norm_conv(hidden, hidden, 3, norm))
        self.cls_preds = nn.Conv2d(hidden, nc * na, 1)
        self.reg_preds = nn.Conv2d(hidden, 4 * na, 1)
        self.obj_preds = nn.Conv2d(hidden, na, 1)

    def forward(self, x: Tensor) -> Tensor:
        """-> ``(bs, na, ny, nx, 5 + nc)`` with each anchor's channels ``[reg(4), obj(1), cls(nc)]``."""
        bs, _, ny, nx = x.shape
        x = self.stem(x)
        c, r = self.cls_convs(x), self.reg_convs(x)
        reg = self.reg_preds(r).view(bs, self.na, 4, ny, nx)
        obj = self.obj_preds(r).view(bs, self.na, 1, ny, nx)
        cls = self.cls_preds(c).view(bs, self.na, self.nc, ny, nx)
        return torch.cat((reg, obj, cls), 2).permute(0, 1, 3, 4, 2).contiguous()


class DetectDcoupleHead(Detect):
    """Anchor-based decoupled head: ``Detect``'s anchors, grids, decode and loss with YOLOX's branches.

    ``hidden`` is the stem width at width_multiple 1.0 (YOLOX: 256); parse_model scales it. ``norm`` is the
    branches' normalisation: "bn" (YOLOX's BatchNorm, the default) or "gn" (GroupNorm(32), as NanoDet-Plus's
    AGM head), so a YAML row ``[nc, anchors, 256, gn]`` A/Bs the head's normalisation.
    """

    channel_args = (2,)

    def __init__(self, nc: int = 80, anchors: list | tuple = (), hidden: int = 256, norm: str = "bn",
                 ch: list[int] | tuple[int, ...] = ()):
        self.hidden, self.norm = hidden, norm
        super().__init__(nc, anchors, ch)

    def _build_levels(self, ch: list[int] | tuple[int, ...]) -> nn.ModuleList:
        return nn.ModuleList(DecoupledHead(c, self.hidden, self.nc, self.na, self.norm) for c in ch)

    def _predict_level(self, i: int, x: Tensor) -> Tensor:
        return self.m[i](x)

    @torch.no_grad()
    def _initialize_biases(self, prior: float = 0.01) -> None:
        """cls and obj biases to -log((1 - p) / p) (YOLOX, p = 0.01); reg biases stay 0."""
        for level in self.m:
            for conv in (level.cls_preds, level.obj_preds):
                conv.bias.fill_(-math.log((1 - prior) / prior))
