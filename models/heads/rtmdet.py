"""RTMDet's head (MMDetection 3.3.0 ``RTMDetSepBNHead``, configs/rtmdet): anchor-free, no objectness, decoupled
cls and reg towers whose convolutions all levels share while each level keeps its own BatchNorm.

Per level: a cls tower and a reg tower of ``stacked`` 3x3 ``SepBNConv`` (conv shared across levels, BN + SiLU per
level), then per level (not shared) a ``pred_kernel`` conv to ``nc`` class logits and one to 4 box distances
[left, top, right, bottom] in strides from the prior point, the cell's top-left corner (``MlvlPointGenerator``
offset 0). ``exp_on_reg`` (RTMDet-m/l/x) takes exp of the distances; RTMDet-tiny/s use them as they are.
Decoding (``decode_distance``, the one the loss uses too): distance x stride from the point.

Common layout of ``decode``: cxcywh pixels, 1.0 in the objectness slot (the class score is trained to be the
localisation quality, QFL's IoU target), the class probabilities.

Shape shorthand: B batch, nl levels, ny/nx feature height/width, N = sum of ny * nx.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from models.cspnext import SepBNConv
from models.heads.base import Head
from utils.assigners import assigner_hyp_keys, parse_assigner
from utils.boxes import GridCache, decode_distance
from utils.losses.rtmdet import RTMDET_LOSS_WEIGHTS, RTMDetLoss

CLS_PRIOR = 0.01  # MMDetection's bias_init_with_prob(0.01)
INIT_STD = 0.01  # normal_init(std=0.01) of every conv in the head
RTMDET_ASSIGNER = {"name": "dsl", "soft_center_radius": 3.0}  # DynamicSoftLabelAssigner(topk=13): iou_weight 3.0,
# soft_center_radius 3.0 (its defaults); our dsl's topk and iou_factor defaults are the same


class RTMDetHead(Head):
    """YAML: ``[[26, 27, 28], 1, RTMDetHead, [nc, 256, 2, False, True, 1, {name: dsl, soft_center_radius: 3.0}]]``
    -- ``feat`` tower width (scaled by width_multiple: 256 x 0.375 = 96 for RTMDet-tiny), ``stacked`` convs per
    tower, ``exp_on_reg``, ``share_conv`` (False: a conv per level too), ``pred_kernel``, ``assigner``
    (``utils.assigners.ASSIGNERS``, alone or with options; None: RTMDet's, DSLA with the soft centre prior).
    """

    channel_args = (1,)
    hyp_ranges: ClassVar[dict[str, tuple[float, float, float]]] = {
        "rtmdet_qfl": (1, 0.2, 4.0), "rtmdet_giou": (1, 0.4, 8.0)}
    hyp_keys = tuple(RTMDET_LOSS_WEIGHTS) + assigner_hyp_keys()  # the row may name any assigner

    def __init__(self, nc: int = 80, feat: int = 256, stacked: int = 2, exp_on_reg: bool = False,
                 share_conv: bool = True, pred_kernel: int = 1, assigner: str | dict | None = None,
                 ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        for name, v in (("nc", nc), ("feat", feat), ("stacked", stacked), ("pred_kernel", pred_kernel)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= 1, got {v!r}")
        for name, v in (("exp_on_reg", exp_on_reg), ("share_conv", share_conv)):
            if type(v) is not bool:  # 1 or a string is a mistake here, not a flag
                raise ValueError(f"{type(self).__name__}: {name} must be true or false, got {v!r}")
        if not ch or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"{type(self).__name__}: needs the input channels of its feature maps, got ch={ch!r}")
        if share_conv and len(set(ch)) > 1:
            raise ValueError(f"{type(self).__name__}: share_conv needs inputs of one width, got ch={list(ch)}")
        self.assigner, self.assigner_options = parse_assigner(RTMDET_ASSIGNER if assigner is None else assigner)
        self.nc, self.nl, self.no, self.exp_on_reg = nc, len(ch), nc + 4, exp_on_reg
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export = False
        self._grid = GridCache(self.nl)

        def tower() -> nn.ModuleList:
            return nn.ModuleList(SepBNConv(ch[0] if i == 0 else feat, feat, self.nl, 3, share_conv)
                                 for i in range(stacked))
        self.cls_convs, self.reg_convs = tower(), tower()
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat, nc, pred_kernel, padding=pred_kernel // 2) for _ in ch)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat, 4, pred_kernel, padding=pred_kernel // 2) for _ in ch)

    def initialize(self, stride: Tensor) -> None:
        """Strides, and MMDetection's init: every conv normal(0, 0.01) with zero bias, cls bias -4.595."""
        if stride.numel() != self.nl:
            raise ValueError(f"{type(self).__name__}: {stride.numel()} strides for {self.nl} levels")
        self.stride = stride.to(torch.float32)
        self._grid.clear()
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, INIT_STD)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            for conv in self.rtm_cls:
                conv.bias.fill_(-math.log((1 - CLS_PRIOR) / CLS_PRIOR))

    def forward(self, features: list[Tensor], targets: Tensor | None = None) -> list[Tensor]:
        """Per level ``(B, nc + 4, ny, nx)``: class logits, then the raw distances (training and eval alike)."""
        out = []
        for i, x in enumerate(features):
            cls_feat = reg_feat = x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat, i)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat, i)
            out.append(torch.cat((self.rtm_cls[i](cls_feat), self.rtm_reg[i](reg_feat)), 1))
        return out

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Per level ``(B, nc + 4, ny, nx)`` -> ``(B, N, 5 + nc)``: cxcywh pixels, 1.0, class probabilities."""
        out = []
        for i, p in enumerate(raw):
            bs, _, ny, nx = p.shape
            p = p.permute(0, 2, 3, 1).reshape(bs, ny * nx, self.no)
            stride = self.stride[i].to(p.dtype)
            points = self._grid(i, nx, ny, p, self.export).view(-1, 2) * stride  # (ny*nx, 2)
            box = decode_distance(p[..., self.nc:], points, stride, self.exp_on_reg)  # xyxy
            cxcywh = torch.cat(((box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]), -1)
            out.append(torch.cat((cxcywh, torch.ones_like(p[..., :1]), p[..., :self.nc].sigmoid()), -1))
        return torch.cat(out, 1)

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> RTMDetLoss:
        """QFL + GIoU with the row's assigner (``imgsz`` and ``label_smoothing`` unused, as in RTMDet)."""
        return RTMDetLoss(self.nc, self.stride, self.exp_on_reg, hyp, self.assigner, self.assigner_options)

    def _apply(self, fn, recurse=True):
        self._grid.clear()  # cached grids follow the module to its new device/dtype
        return super()._apply(fn, recurse)
