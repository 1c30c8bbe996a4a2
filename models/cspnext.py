"""RTMDet's blocks (Lyu et al. 2022, arXiv 2212.07784): the CSPNeXt backbone's and CSPNeXtPAFPN neck's CSP layer
with its large-kernel block and channel attention, and the head's convolution shared across levels with a
BatchNorm per level.

Sources: MMDetection 3.3.0 ``mmdet/models/layers/csp_layer.py`` (``CSPNeXtBlock``, ``CSPLayer``),
``mmdet/models/layers/se_layer.py`` (``ChannelAttention``), ``mmdet/models/dense_heads/rtmdet_head.py``
(``RTMDetSepBNHead``, ``share_conv=True``). Parameter counts checked against MMDetection's own modules
(bench/crosscheck_rtmdet.py). The CSPNeXt stem (three 3x3 convs), stage downsampling (3x3 stride 2) and SPP
bottleneck (pools 5/9/13, which ``SPPF`` with k=5 equals) are the existing ``Conv`` and ``SPPF`` rows.
"""
from __future__ import annotations

import torch
from torch import nn

from models.common import Conv, DWSConv


class ChannelAttention(nn.Module):
    """Global average pool -> 1x1 conv (with bias) -> hard sigmoid, the result scaling each input channel."""

    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(c, c, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(self.pool(x)))


class CSPNeXtBlock(nn.Module):
    """3x3 conv to ``c2 * e`` channels, then a depthwise-separable k x k (5: the "large kernel") to ``c2``, with a
    residual when ``shortcut`` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, k: int = 5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 3, 1)
        self.cv2 = DWSConv(c_, c2, k, 1)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSPNeXtLayer(nn.Module):
    """``C3`` with ``CSPNeXtBlock`` inside and, with ``attention``, ``ChannelAttention`` over the concatenated halves
    before the last 1x1 (MMDetection's ``CSPLayer(use_cspnext_block=True)``: in CSPNeXt's stages, not in its neck).

    YAML: ``[-1, 3, CSPNeXtLayer, [c2, shortcut, attention]]``; ``number`` is the count of blocks inside.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, attention: bool = False, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)  # main path (MMDetection's main_conv)
        self.cv2 = Conv(c1, c_, 1, 1)  # short path (short_conv)
        self.cv3 = Conv(2 * c_, c2, 1)  # final_conv
        self.m = nn.Sequential(*(CSPNeXtBlock(c_, c_, shortcut, e=1.0) for _ in range(n)))
        self.attention = ChannelAttention(2 * c_) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1)
        return self.cv3(y if self.attention is None else self.attention(y))


class SepBNConv(Conv):
    """A ``Conv`` run on every level of a head: one k x k convolution whose weights the ``nl`` levels share
    (``share``; else one per level), a BatchNorm per level, the activation. ``forward(x, level)``.

    A ``Conv`` so that the model's activation and ``DetectionModel.fuse`` reach it; ``fuse`` folds each level's
    BatchNorm into its own copy of the convolution (the shared weights then become ``nl`` fused ones).
    """

    def __init__(self, c1: int, c2: int, nl: int, k: int = 3, share: bool = True, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, 1, act=act)
        self.conv = nn.ModuleList([self.conv, *(nn.Conv2d(c1, c2, k, 1, k // 2, bias=False)
                                                for _ in range(0 if share else nl - 1))])
        self.bn = nn.ModuleList(nn.BatchNorm2d(c2) for _ in range(nl))

    def forward(self, x: torch.Tensor, level: int = 0) -> torch.Tensor:
        x = self.conv[level if len(self.conv) > 1 else 0](x)
        return self.act(x if self.bn is None else self.bn[level](x))

    @torch.no_grad()
    def fuse(self) -> None:
        if self.bn is None:
            return
        fused = []
        for level, bn in enumerate(self.bn):
            conv = self.conv[level if len(self.conv) > 1 else 0]
            fused.append(torch.nn.utils.fusion.fuse_conv_bn_eval(conv.eval(), bn.eval()))
        self.conv, self.bn = nn.ModuleList(fused), None
