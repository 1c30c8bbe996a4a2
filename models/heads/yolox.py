"""Anchor-free decoupled head (YOLOX): one prediction per grid cell.

Per level, YOLOX's decoupled branches (``DecoupledHead`` with na = 1: 1x1 stem, two 3x3 convs on a cls
branch and on a reg branch, obj from the reg branch; the 3x3 convs depthwise-separable for Nano) give
raw outputs ``(bs, 1, ny, nx, no)`` with channels ``[reg(4), obj(1), cls(nc)]``, the same in training
and eval. ``decode`` applies ``utils.boxes.decode_yolox`` -- the coder the loss uses too --
xy = (t_xy + cell) * stride, wh = exp(t_wh) * stride, and sigmoids obj and cls.

Shape shorthand: bs batch, nl levels, ny/nx feature height/width, no = 5 + nc, N = sum of ny * nx.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.common import DWSConv
from models.heads.base import Head
from models.heads.detect import DecoupledHead
from utils.assigners import assigner_hyp_keys, parse_assigner
from utils.boxes import GridCache, decode_yolox
from utils.losses import YOLOXLoss


def _level(c1: int, hidden: int, nc: int, depthwise: bool) -> DecoupledHead:
    """One level's branches; ``depthwise`` swaps the 3x3 convs for YOLOX's DWConv (Nano)."""
    level = DecoupledHead(c1, hidden, nc, na=1)
    if depthwise:
        level.cls_convs = nn.Sequential(DWSConv(hidden, hidden, 3, 1), DWSConv(hidden, hidden, 3, 1))
        level.reg_convs = nn.Sequential(DWSConv(hidden, hidden, 3, 1), DWSConv(hidden, hidden, 3, 1))
    return level


class YOLOXHead(Head):
    """YOLOX's anchor-free decoupled head; its criterion is ``utils.losses.YOLOXLoss`` (SimOTA).

    YAML: ``[[17, 20, 23], 1, YOLOXHead, [nc, 256, False, simota]]`` -- ``hidden`` is the stem width at
    width_multiple 1.0 (parse_model scales it, YOLOX: int(256 * width)); ``depthwise`` selects the
    depthwise-separable 3x3 convs (YOLOX-Nano); ``assigner`` names the label assigner
    (``utils.assigners.ASSIGNERS``: ``simota``, the paper's and the default, ``center``, ``dsl`` or ``tal``), alone
    or with options (``{name: simota, center_radius: 3.0}``; the hyp's ``simota_center_radius`` alike). ``dsl``
    and ``tal`` score a prediction by sigmoid(cls) x sigmoid(obj), the score the head ranks detections by.
    """

    channel_args = (1,)
    hyp_keys = assigner_hyp_keys()  # the row may name any assigner
    na = 1  # predictions per cell

    def __init__(self, nc: int = 80, hidden: int = 256, depthwise: bool = False, assigner: str | dict = "simota",
                 ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        if not isinstance(depthwise, bool):
            raise ValueError(f"YOLOXHead: 'depthwise' must be true or false, got {depthwise!r}; write the YAML "
                             "args as [nc, hidden, depthwise], e.g. [nc, 256, False]")
        if not ch or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"YOLOXHead: needs the input channels of its feature maps, got ch={ch!r}")
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"YOLOXHead: nc must be a positive integer, got {nc!r}")
        self.nc, self.no, self.nl = nc, nc + 5, len(ch)
        self.assigner, self.assigner_options = parse_assigner(assigner)  # a bad name/option fails in the row
        self.hidden, self.depthwise = hidden, depthwise
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export = False
        self._grid = GridCache(self.nl)
        self.m = nn.ModuleList(_level(c, hidden, nc, depthwise) for c in ch)

    def forward(self, features: list[Tensor], targets: Tensor | None = None) -> list[Tensor]:
        """Raw outputs per level, ``(bs, 1, ny, nx, no)``: ``[t_xy, t_wh, obj logit, cls logits]``."""
        return [m(x) for m, x in zip(self.m, features)]

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Raw outputs -> ``(bs, N, no)``: cxcywh pixels, objectness and class probabilities."""
        out = []
        for i, p in enumerate(raw):
            bs, _, ny, nx, _ = p.shape
            grid = self._grid(i, nx, ny, p, self.export)
            xy, wh = decode_yolox(p[..., 0:2], p[..., 2:4], grid, self.stride[i].to(p.dtype))
            out.append(torch.cat((xy, wh, p[..., 4:].sigmoid()), -1).view(bs, -1, self.no))
        return torch.cat(out, 1)

    def initialize(self, stride: Tensor) -> None:
        """Set strides and the cls/obj bias priors."""
        if stride.numel() != self.nl:
            raise ValueError(f"YOLOXHead: {stride.numel()} strides for {self.nl} levels")
        self.stride = stride.to(torch.float32)
        self._grid.clear()
        self._initialize_biases()

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> YOLOXLoss:
        """YOLOX's loss with the row's assigner; ``imgsz`` is unused (YOLOX normalises by the number of positives)."""
        return YOLOXLoss(self.nc, self.stride, hyp, label_smoothing, self.assigner, self.assigner_options)

    @torch.no_grad()
    def _initialize_biases(self, prior: float = 0.01) -> None:
        """cls and obj biases to -log((1 - p) / p) with p = 0.01 (YOLOX); reg biases keep their default."""
        for level in self.m:
            for conv in (level.cls_preds, level.obj_preds):
                conv.bias.fill_(-math.log((1 - prior) / prior))

    def _apply(self, fn, recurse=True):
        self._grid.clear()  # cached grids follow the module to its new device/dtype
        return super()._apply(fn, recurse)
