"""YOLOv8 / YOLO11 detection head (Ultralytics' ``Detect``): anchor-free, decoupled, no objectness, integral (DFL)
box regression; trained by ``utils.losses.V8Loss`` with the Task-Aligned Assigner.

Per level, a box branch ``cv2`` (3x3 Conv, 3x3 Conv, 1x1 Conv2d to 4 x reg_max) and a class branch ``cv3`` to nc
logits: YOLOv8's 3x3 Conv, 3x3 Conv, 1x1 Conv2d, or YOLO11's depthwise 3x3 Conv, 1x1 Conv, depthwise 3x3 Conv, 1x1
Conv, 1x1 Conv2d. Widths c2 = max(16, ch[0] // 4, 4 x reg_max) (box) and c3 = max(ch[0], min(nc, 100)) (class).
Module names (``cv2``, ``cv3``, ``dfl``) are Ultralytics', so its Detect state_dict loads as it is.

Decoding (the loss's too): per side a softmax over reg_max bins, its expectation (``utils.boxes.integral``) = the
distance in strides from the cell centre (cell + 0.5); box = centre -/+ distances, then x stride. Common layout of
``decode``: cxcywh pixels, 1.0 in the objectness slot (no objectness), class probabilities.

Shape shorthand: B batch, nl levels, ny/nx feature height/width, R = reg_max, C = 4R + nc, N = sum of ny * nx.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from models.common import Conv, DWConv
from models.heads.base import Head
from utils.assigners import assigner_hyp_keys, parse_assigner
from utils.boxes import GridCache, distance2bbox, integral
from utils.losses.v8 import V8_GAIN_RANGES, V8_GAINS, V8Loss

V8_VARIANTS = ("yolov8", "yolo11")  # the class branch: two 3x3 Convs, or YOLO11's depthwise-separable pairs
BOX_BIAS = 2.0  # Ultralytics' bias_init: every box logit 2.0
NOMINAL_IMGSZ, NOMINAL_OBJECTS = 640, 5  # Ultralytics' class bias: log(5 / nc / (640 / stride)^2)


class DFL(nn.Module):
    """The integral's bin values 0..R-1, held as Ultralytics holds them: the frozen weight of a 1x1 conv (counted in
    the parameters, trained never). ``project`` hands them to ``utils.boxes.integral``."""

    def __init__(self, bins: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1))

    @property
    def project(self) -> Tensor:
        return self.conv.weight.view(-1)


def _class_branch(c1: int, c3: int, nc: int, variant: str) -> nn.Sequential:
    if variant == "yolov8":
        return nn.Sequential(Conv(c1, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1))
    return nn.Sequential(nn.Sequential(DWConv(c1, c1, 3), Conv(c1, c3, 1)),
                         nn.Sequential(DWConv(c3, c3, 3), Conv(c3, c3, 1)), nn.Conv2d(c3, nc, 1))


class V8Head(Head):
    """Ultralytics' YOLOv8 / YOLO11 ``Detect`` head; its criterion is ``utils.losses.V8Loss``.

    YAML: ``[[15, 18, 21], 1, V8Head, [nc, 16, yolov8, tal]]`` -- ``reg_max`` (bins per box side), ``variant``
    (``yolov8`` or ``yolo11``: the class branch), ``assigner`` (``utils.assigners.ASSIGNERS``: ``tal``, the
    default, with options as ``{name: tal, topk: 13}`` or from the hyp, ``tal_topk``). Loss gains: hyp keys
    ``v8_box`` 7.5, ``v8_cls`` 0.5, ``v8_dfl`` 1.5 (Ultralytics' defaults when the hyp file has none).
    """

    hyp_ranges: ClassVar[dict[str, tuple[float, float, float]]] = dict(V8_GAIN_RANGES)
    hyp_keys = tuple(V8_GAINS) + assigner_hyp_keys()  # the row may name any assigner
    frozen = ("dfl.conv.weight",)  # the bin values: train.py keeps them without gradients
    loss_class: ClassVar[type] = V8Loss  # V10Head: V10Loss, the same arguments

    def __init__(self, nc: int = 80, reg_max: int = 16, variant: str = "yolov8", assigner: str | dict = "tal",
                 ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        head = type(self).__name__  # V8Head, or a subclass (V10Head)
        for name, v, lo in (("nc", nc, 1), ("reg_max", reg_max, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{head}: {name} must be an integer >= {lo}, got {v!r}")
        if variant not in V8_VARIANTS:
            raise ValueError(f"{head}: variant must be one of {', '.join(V8_VARIANTS)}, got {variant!r}; write the "
                             "YAML args as [nc, reg_max, variant, assigner], e.g. [nc, 16, yolov8, tal]")
        if not ch or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"{head}: needs the input channels of its feature maps, got ch={ch!r}")
        self.assigner, self.assigner_options = parse_assigner(assigner)  # a bad name/option fails in the row
        self.nc, self.nl, self.reg_max, self.variant = nc, len(ch), reg_max, variant
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export = False
        self._grid = GridCache(self.nl)
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for c in ch)
        self.cv3 = nn.ModuleList(_class_branch(c, c3, nc, variant) for c in ch)
        self.dfl = DFL(reg_max)

    def forward(self, features: list[Tensor], targets: Tensor | None = None) -> list[Tensor]:
        """Per level ``(B, 4R + nc, ny, nx)``: box logits (side-major: 4 sides x R bins), then class logits."""
        return self._maps(features, self.cv2, self.cv3)

    @staticmethod
    def _maps(features: list[Tensor], box_branches: nn.ModuleList, cls_branches: nn.ModuleList) -> list[Tensor]:
        return [torch.cat((box(x), cls(x)), 1) for x, box, cls in zip(features, box_branches, cls_branches)]

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Per level ``(B, C, ny, nx)`` -> ``(B, N, 5 + nc)``: cxcywh pixels, 1.0, class probabilities."""
        out = []
        for i, p in enumerate(raw):
            ny, nx = p.shape[2:4]
            p = p.flatten(2).transpose(1, 2)  # (B, ny * nx, C)
            anchors = self._grid(i, nx, ny, p, self.export).view(-1, 2) + 0.5  # cell centres, grid units
            box = distance2bbox(anchors, integral(p[..., :4 * self.reg_max], self.reg_max - 1, self.dfl.project))
            cxcywh = torch.cat(((box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]), -1)
            out.append(torch.cat((cxcywh * self.stride[i].to(p.dtype), torch.ones_like(p[..., :1]),
                                  p[..., 4 * self.reg_max:].sigmoid()), -1))
        return torch.cat(out, 1)

    def initialize(self, stride: Tensor) -> None:
        """Strides, and Ultralytics' bias init: box logits 2.0, class logits log(5 / nc / (640 / stride)^2)."""
        if stride.numel() != self.nl:
            raise ValueError(f"{type(self).__name__}: {stride.numel()} strides for {self.nl} levels")
        self.stride = stride.to(torch.float32)
        self._grid.clear()
        self._init_biases(self.cv2, self.cv3)

    @torch.no_grad()
    def _init_biases(self, box_branches: nn.ModuleList, cls_branches: nn.ModuleList) -> None:
        for box, cls, s in zip(box_branches, cls_branches, self.stride.tolist()):
            box[-1].bias.fill_(BOX_BIAS)
            cls[-1].bias.fill_(math.log(NOMINAL_OBJECTS / self.nc / (NOMINAL_IMGSZ / s) ** 2))

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> V8Loss:
        """Ultralytics' v8 loss with the row's assigner; ``imgsz`` is unused (its terms are normalised by the sum of
        the soft targets). Label smoothing has no place in it (Ultralytics has none): asking for it is an error."""
        if label_smoothing:
            raise ValueError(f"{type(self).__name__}: label smoothing ({label_smoothing}) is not part of the v8 loss, "
                             "whose class targets are already soft (TAL's alignment); train without --label-smoothing")
        return self.loss_class(self.nc, self.stride, self.reg_max, hyp, self.assigner, self.assigner_options)

    def _apply(self, fn, recurse=True):
        self._grid.clear()  # cached grids follow the module to its new device/dtype
        return super()._apply(fn, recurse)
