"""A test-only detector family that exercises every clause of the head contract v2 (models/heads/base.py)
the three shipped heads do not: no objectness, a training-only auxiliary branch switched off by the epoch
hook, targets in the training forward, already-suppressed detections, an eval-incapable loss, and inputs
from a multi-output row. ``register()`` adds it to the module and head tables for one test."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.common import Conv
from models.heads.base import EpochState, Head
from utils.boxes import make_grid

TOY_YAML = {
    "nc": 3,
    "depth_multiple": 1.0,
    "width_multiple": 1.0,
    "backbone": [
        [-1, 1, "Conv", [16, 3, 2]],       # 0 /2
        [-1, 1, "Conv", [32, 3, 2]],       # 1 /4
        [-1, 1, "ToyPyramid", [32]],       # 2 -> [/8, /16]: a multi-output row
        [2, 1, "Select", [1]],             # 3 the /16 map
        [-1, 1, "Conv", [32, 1, 1]],       # 4 /16
    ],
    "head": [[[2, 4], 1, "ToyFinalHead", ["nc", 16, 1]]],  # three maps: row 2's two, row 4's one
}


class ToyPyramid(nn.Module):
    """One input -> two maps (stride x2 and x4 of its input). Brings its own BatchNorm settings (torch's
    defaults), which parse_model must leave alone."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.down1 = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())
        self.down2 = nn.Sequential(nn.Conv2d(c2, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())
        self.out_channels = [c2, c2]

    def forward(self, x: Tensor) -> list[Tensor]:
        a = self.down1(x)
        return [a, self.down2(a)]


class ToyLoss:
    """heat: BCE of the class maps against the head's centre heatmaps; box: L1 of log-distances at the
    centres; aux: the auxiliary branch's BCE while it is on (0 after)."""

    loss_names = ("heat", "box", "aux")

    def on_epoch(self, state: EpochState) -> None:
        pass

    def __call__(self, out: dict, targets: Tensor) -> tuple[Tensor, Tensor]:
        heat = box = torch.zeros((), device=targets.device)
        for p, (h, bt) in zip(out["preds"], out["assigned"]):
            heat = heat + F.binary_cross_entropy_with_logits(p[:, 4:], h)
            pos = h.amax(1, keepdim=True) > 0  # (B, 1, ny, nx)
            if pos.any():
                box = box + (p[:, :4] - bt).abs().masked_select(pos.expand_as(bt)).mean()
        aux = torch.zeros((), device=targets.device)
        if out["aux"] is not None:
            aux = F.binary_cross_entropy_with_logits(out["aux"], out["assigned"][0][0])
        items = torch.stack((heat, box * 0.1, aux))
        return items.sum() * out["preds"][0].shape[0], items.detach()


class ToyFinalHead(Head):
    """Per level a 3x3 conv and a 1x1 output conv to ``4 + nc`` (log l, t, r, b distances in strides, class
    logits); no objectness. Eval keeps only the local maxima of each class map (a 3x3 peak test, as
    CenterNet), so its detections are final. Training: an auxiliary branch on the first level, for the
    first ``aux_epochs`` epochs; the targets are turned into heatmaps inside the forward."""

    channel_args = (1,)
    needs_targets = True
    suppressed = True
    val_loss = False
    train_only = ("aux",)

    def __init__(self, nc: int = 3, hidden: int = 16, aux_epochs: int = 1, ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        self.nc, self.nl, self.no, self.aux_epochs = nc, len(ch), nc + 5, aux_epochs
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.export, self.aux_on = False, True
        self.m = nn.ModuleList(nn.Sequential(Conv(c, hidden, 3, 1), nn.Conv2d(hidden, 4 + nc, 1)) for c in ch)
        self.aux = nn.Sequential(Conv(ch[0], 64, 3, 1), Conv(64, 64, 3, 1), nn.Conv2d(64, nc, 1))

    def initialize(self, stride: Tensor) -> None:
        self.stride = stride.float()
        with torch.no_grad():
            for level in self.m:
                level[-1].bias[4:].fill_(-math.log(99))

    def on_epoch(self, state: EpochState) -> None:
        self.aux_on = state.epoch < self.aux_epochs

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> ToyLoss:
        return ToyLoss()

    def forward(self, features: list[Tensor], targets: Tensor | None = None):
        preds = [m(x) for m, x in zip(self.m, features)]
        if not self.training or targets is None:  # eval, or a statistics-only pass (precise BN)
            return preds
        aux = self.aux(features[0]) if self.aux_on and self.aux is not None else None
        return {"preds": preds, "aux": aux, "assigned": [self._assign(p, targets, s) for p, s in
                                                          zip(preds, self.stride.tolist())]}

    def _assign(self, p: Tensor, targets: Tensor, s: float) -> tuple[Tensor, Tensor]:
        """Centre cell of every target: one-hot class heatmap (B, nc, ny, nx), log-distance targets (B, 4, ...)."""
        bs, _, ny, nx = p.shape
        heat = torch.zeros(bs, self.nc, ny, nx, device=p.device)
        box = torch.zeros(bs, 4, ny, nx, device=p.device)
        if len(targets):
            b, c = targets[:, 0].long(), targets[:, 1].long()
            cx, cy = targets[:, 2] * nx, targets[:, 3] * ny
            w, h = targets[:, 4] * nx, targets[:, 5] * ny
            gi, gj = cx.long().clamp(0, nx - 1), cy.long().clamp(0, ny - 1)
            heat[b, c, gj, gi] = 1.0
            ltrb = torch.stack((gi + 0.5 - cx + w / 2, gj + 0.5 - cy + h / 2, cx + w / 2 - gi - 0.5,
                                cy + h / 2 - gj - 0.5), 1).clamp(min=0.05)
            box[b, :, gj, gi] = ltrb.log()
        return heat, box

    def decode(self, raw: list[Tensor]) -> Tensor:
        out = []
        for i, p in enumerate(raw):
            s = self.stride[i]
            bs, _, ny, nx = p.shape
            cls = p[:, 4:].sigmoid()
            cls = cls * (cls == F.max_pool2d(cls, 3, 1, 1))  # keep the peaks: final detections
            centre = (make_grid(nx, ny, p.device, p.dtype) + 0.5).permute(2, 0, 1)  # (2, ny, nx)
            d = p[:, :4].exp()
            x1y1, x2y2 = centre - d[:, :2], centre + d[:, 2:]
            box = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * s  # (B, 4, ny, nx) cxcywh px
            one = torch.ones_like(cls[:, :1])
            out.append(torch.cat((box, one, cls), 1).flatten(2).transpose(1, 2))
        return torch.cat(out, 1)


def register(monkeypatch) -> None:
    """Make the toy row and head usable in YAML for the duration of one test."""
    from models import yolo
    from models.heads import HEADS

    monkeypatch.setitem(yolo.MODULES, "ToyPyramid", yolo.Block(ToyPyramid, yolo.MULTI, own_init=True))
    monkeypatch.setitem(HEADS, "ToyFinalHead", ToyFinalHead)
