"""GFL head (NanoDet-Plus): integral box regression and quality-aware classification, no objectness; trained
with the Assign Guidance Module (AGM), a larger training-only head whose predictions pick the positives.

Per level, an unshared tower of ``stacked`` depthwise-separable blocks (``DWSConv``: dw k x k + BN + act, pw
1x1 + BN + act) of ``feat`` channels, then one 1x1 conv to ``nc + 4 * (reg_max + 1)`` channels: class logits,
then for each box side (left, top, right, bottom) logits over ``reg_max + 1`` distance bins. Decoding
(``gfl_decode``, the one the loss uses too): softmax over the bins, expectation x stride = the side's distance
from the prior point, the cell's top-left corner ``(x * stride, y * stride)`` (NanoDet: no +0.5).

Common layout of ``decode``: cxcywh pixels, then the objectness slot, which holds 1.0 (the head has no
objectness: its class score is trained to be the localisation quality, QFL's IoU target), then the class
probabilities. Val and detect rank by obj x cls = the class score, as NanoDet does.

AGM (``aux_from`` set): a copy of the neck rows ``aux_from`` .. (own weights, made at build time as NanoDet's
``deepcopy(fpn)``) re-run on the trunk outputs, and ``SimpleConvHead`` (shared across levels: 4 stacked 3x3
conv + GroupNorm(32) + LeakyReLU per cls and reg tower, 3x3 predictions, a learnable Scale per level on reg)
over the main and auxiliary neck maps concatenated per level. From epoch ``detach_epoch`` the auxiliary neck
reads detached trunk outputs and the main neck maps are detached before the concat: the AGM keeps guiding the
assignment but no longer trains the trunk. Training-only: absent from eval, val, detect, export and the deploy
parameter count. When the neck's levels differ in width (a YOLOv5 neck), a 1x1 conv + GroupNorm + LeakyReLU
per level first brings each concatenated map to the AGM's width (NanoDet's GhostPAN levels are all 96 wide, so
nanodet-plus-m.yaml has none).

Shape shorthand: B batch, nl levels, ny/nx feature height/width, R = reg_max, C = nc + 4 * (R + 1),
N = sum of ny * nx.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import NamedTuple

import torch
from torch import Tensor, nn

from models.common import DWSConv
from models.heads.base import EpochState, Head
from utils.assigners import assigner_hyp_keys, parse_assigner
from utils.boxes import GridCache, gfl_decode
from utils.losses.gfl import GFLLoss

CLS_PRIOR = 0.01  # NanoDet: cls bias -4.595 = -log((1 - 0.01) / 0.01)
AGM_GN_GROUPS = 32


class GFLOutput(NamedTuple):
    """The training forward's output: per level ``(B, C, ny, nx)`` raw maps of the main head and the AGM."""
    main: list[Tensor]
    aux: list[Tensor] | None


class Scale(nn.Module):
    """A learnable scalar (init 1.0) multiplying its input (NanoDet's ``Scale``)."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _gn_block(c1: int, c2: int, k: int) -> nn.Sequential:
    """conv (no bias) + GroupNorm(32) + LeakyReLU(0.1): NanoDet's ConvModule with its GN config."""
    if c2 % AGM_GN_GROUPS:
        raise ValueError(f"the AGM's GroupNorm({AGM_GN_GROUPS}) needs widths divisible by {AGM_GN_GROUPS}, got {c2}")
    return nn.Sequential(nn.Conv2d(c1, c2, k, 1, k // 2, bias=False), nn.GroupNorm(AGM_GN_GROUPS, c2),
                         nn.LeakyReLU(0.1, inplace=True))


class SimpleConvHead(nn.Module):
    """NanoDet-Plus's AGM head, shared across levels: separate cls and reg towers of ``stacked`` 3x3
    conv + GN + LeakyReLU, 3x3 predictions, a Scale per level on the box logits."""

    def __init__(self, c1: int, feat: int, nc: int, reg_max: int, nl: int, stacked: int = 4):
        super().__init__()
        self.cls_convs = nn.Sequential(*(_gn_block(c1 if i == 0 else feat, feat, 3) for i in range(stacked)))
        self.reg_convs = nn.Sequential(*(_gn_block(c1 if i == 0 else feat, feat, 3) for i in range(stacked)))
        self.gfl_cls = nn.Conv2d(feat, nc, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(nl))

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.gfl_cls.bias.fill_(-math.log((1 - CLS_PRIOR) / CLS_PRIOR))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [torch.cat((self.gfl_cls(self.cls_convs(x)), scale(self.gfl_reg(self.reg_convs(x)))), 1)
                for x, scale in zip(features, self.scales)]


def _gather(f: int | list[int], x, y: list, first: int, detach: bool):
    """A copied neck row's input (as ``DetectionModel._gather``); trunk rows (< ``first``) detached if asked."""
    def get(j):
        v = x if j == -1 else y[j]
        if detach and j != -1 and j < first:
            v = [t.detach() for t in v] if isinstance(v, list) else v.detach()
        return v
    if isinstance(f, int):
        return get(f)
    out = []
    for j in f:
        v = get(j)
        out += v if isinstance(v, list) else [v]
    return out


class GFLHead(Head):
    """NanoDet-Plus's head; ``NanoDetPlusHead`` is the same class under NanoDet's name.

    YAML: ``[[17, 20, 23], 1, GFLHead, [nc, 96, 2, 5, 7, 10, dsl, 10, 96]]`` -- ``feat`` tower width (as
    given: not scaled by width_multiple), ``stacked`` tower blocks, ``k`` depthwise kernel, ``reg_max`` (bins -
    1), ``aux_from`` the first neck row the AGM copies (None: no AGM, the head assigns with its own
    predictions), ``assigner`` (``utils.assigners.ASSIGNERS``: ``dsl`` NanoDet's, or ``simota``, ``tal`` ...; alone or
    with options, ``{name: simota, center_radius: 3.0}``, or from the hyp, ``simota_center_radius``),
    ``detach_epoch``, ``aux_feat`` the AGM's width (default 2 x feat, NanoDet-Plus-m's 192: its input, the
    concatenated neck maps, is that wide; other widths get the 1x1 adapters).
    """

    val_loss = False  # the loss assigns with the AGM, which eval does not run: no like-for-like val loss
    train_only = ("aux_neck", "aux_adapt", "aux_head")
    hyp_keys = assigner_hyp_keys()  # the row may name any assigner

    def __init__(self, nc: int = 80, feat: int = 96, stacked: int = 2, k: int = 5, reg_max: int = 7,
                 aux_from: int | None = None, assigner: str | dict = "dsl", detach_epoch: int = 10,
                 aux_feat: int | None = None, ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        for name, v, lo in (("nc", nc, 1), ("feat", feat, 1), ("stacked", stacked, 1), ("k", k, 1),
                            ("reg_max", reg_max, 1), ("detach_epoch", detach_epoch, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= {lo}, got {v!r}")
        if not ch or not all(isinstance(c, int) and c > 0 for c in ch):
            raise ValueError(f"{type(self).__name__}: needs the input channels of its feature maps, got ch={ch!r}")
        self.assigner, self.assigner_options = parse_assigner(assigner)  # a bad name/option fails in the row
        self.nc, self.nl, self.reg_max, self.no = nc, len(ch), reg_max, nc + 4 * (reg_max + 1)
        self.feat, self.detach_epoch = feat, detach_epoch
        if aux_feat is not None and (isinstance(aux_feat, bool) or not isinstance(aux_feat, int) or aux_feat < 1):
            raise ValueError(f"{type(self).__name__}: aux_feat must be a positive integer or None, got {aux_feat!r}")
        self.aux_from, self.in_ch, self.aux_feat = aux_from, list(ch), aux_feat
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export = False
        self.detached = False
        self._grid = GridCache(self.nl)
        self.cls_convs = nn.ModuleList(
            nn.Sequential(*(DWSConv(c if i == 0 else feat, feat, k) for i in range(stacked))) for c in ch)
        self.gfl_cls = nn.ModuleList(nn.Conv2d(feat, self.no, 1) for _ in ch)
        self.aux_neck = self.aux_adapt = self.aux_head = None

    # ------------------------------------------------------------------ building
    def attach_neck(self, rows: list[nn.Module]) -> None:
        """The AGM: its own copy of the neck rows, per-level adapters when widths differ, SimpleConvHead."""
        self.aux_neck = nn.ModuleList(deepcopy(m) for m in rows)  # row attributes i, f, type come along
        dual = [2 * c for c in self.in_ch]
        width = self.aux_feat or 2 * self.feat  # NanoDet-Plus-m: 192 = 2 x 96
        same = len(set(dual)) == 1 and dual[0] == width
        self.aux_adapt = None if same else nn.ModuleList(_gn_block(c, width, 1) for c in dual)
        self.aux_head = SimpleConvHead(width, width, self.nc, self.reg_max, self.nl)

    def initialize(self, stride: Tensor) -> None:
        """Strides, and NanoDet's init: normal(0, 0.01) convs, cls bias -4.595 (AGM alike)."""
        if stride.numel() != self.nl:
            raise ValueError(f"{type(self).__name__}: {stride.numel()} strides for {self.nl} levels")
        self.stride = stride.to(torch.float32)
        self._grid.clear()
        with torch.no_grad():
            for m in [*self.cls_convs.modules(), *self.gfl_cls]:
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            for conv in self.gfl_cls:
                conv.bias[:self.nc] = -math.log((1 - CLS_PRIOR) / CLS_PRIOR)
        if self.aux_head is not None:
            self.aux_head.init_weights()

    # ------------------------------------------------------------------ forward
    def forward(self, features: list[Tensor], targets: Tensor | None = None,
                trunk: list | None = None) -> list[Tensor] | GFLOutput:
        """Eval: per level ``(B, C, ny, nx)`` main logits. Training: ``GFLOutput`` (the AGM's maps too when the
        model passes the trunk outputs)."""
        main = [head(tower(x)) for x, tower, head in zip(features, self.cls_convs, self.gfl_cls)]
        if not self.training:
            return main
        aux = None
        if trunk is not None and self.aux_head is not None:
            aux = self.aux_head(self._agm_inputs(features, trunk))
        return GFLOutput(main, aux)

    def _agm_inputs(self, features: list[Tensor], trunk: list) -> list[Tensor]:
        """Main and auxiliary neck maps concatenated per level (detached per ``detach_epoch``)."""
        y, first = list(trunk), self.aux_from
        x = y[first - 1].detach() if self.detached else y[first - 1]
        for m in self.aux_neck:
            x = m(_gather(m.f, x, y, first, self.detached))
            y[m.i] = x
        aux_features = _gather(self.f, x, y, first, False)
        dual = [torch.cat((f.detach() if self.detached else f, a), 1) for f, a in zip(features, aux_features)]
        if self.aux_adapt is not None:
            dual = [adapt(d) for adapt, d in zip(self.aux_adapt, dual)]
        return dual

    def decode(self, raw: list[Tensor]) -> Tensor:
        """Per level ``(B, C, ny, nx)`` -> ``(B, N, 5 + nc)``: cxcywh pixels, 1.0, class probabilities."""
        out = []
        for i, p in enumerate(raw):
            bs, _, ny, nx = p.shape
            p = p.permute(0, 2, 3, 1).reshape(bs, ny * nx, self.no)
            points = self._grid(i, nx, ny, p, self.export).view(-1, 2) * self.stride[i].to(p.dtype)  # (ny*nx, 2)
            box = gfl_decode(p[..., self.nc:], points, self.stride[i].to(p.dtype), self.reg_max)  # xyxy
            cxcywh = torch.cat(((box[..., :2] + box[..., 2:]) / 2, box[..., 2:] - box[..., :2]), -1)
            out.append(torch.cat((cxcywh, torch.ones_like(p[..., :1]), p[..., :self.nc].sigmoid()), -1))
        return torch.cat(out, 1)

    # ------------------------------------------------------------------ training
    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> GFLLoss:
        """QFL + DFL + GIoU for the main head and the AGM, assigned by the AGM's predictions (NanoDet-Plus)."""
        return GFLLoss(self.nc, self.stride, self.reg_max, self.assigner, aux=self.aux_head is not None, hyp=hyp,
                       assigner_options=self.assigner_options)

    def on_epoch(self, state: EpochState) -> None:
        """From ``detach_epoch`` on, the AGM stops sending gradients into the trunk."""
        self.detached = self.aux_head is not None and state.epoch >= self.detach_epoch

    def _apply(self, fn, recurse=True):
        self._grid.clear()  # cached grids follow the module to its new device/dtype
        return super()._apply(fn, recurse)


NanoDetPlusHead = GFLHead
