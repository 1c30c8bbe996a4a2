"""Building blocks of YOLOv8, YOLO11 and YOLOv10 (Ultralytics' C2f, C3k, C3k2, C2PSA; SCDown, C2fCIB, PSA), as YAML
rows.

Written from the architecture, not from Ultralytics' code; the class and attribute names are Ultralytics' (the
state_dict keys ``model.2.cv1.conv.weight``, ``model.10.m.0.attn.qkv.conv.weight`` ... line up with theirs in
order and shape, which bench/crosscheck_ultralytics_models.py relies on to copy weights by position).

- ``C2f``: one 1x1 conv whose output is split in two halves; a chain of 3x3-3x3 bottlenecks grows from the
  second half, and every intermediate map is concatenated into the closing 1x1 conv (YOLOv8).
- ``C3k2``: the same split-and-stack trunk with YOLO11's inner blocks: a 3x3-3x3 bottleneck at half width, or
  with ``c3k`` a ``C3k`` (a C3 of two 3x3-3x3 bottlenecks). Ultralytics' parse_model turns ``c3k`` on in every
  C3k2 row of the m/l/x scales; the n/s YAMLs give it per row as written.
- ``C2PSA``: a split in two halves; one half passes through ``n`` position-sensitive attention blocks
  (multi-head self-attention over all positions, a depthwise 3x3 positional encoding on the values, then a
  1x1 feed-forward, both residual) before the two halves are joined (YOLO11's last backbone row).

- YOLOv10 (Wang et al. 2024, arXiv 2405.14458): ``SCDown`` downsamples with a 1x1 conv then a stride-2 depthwise
  conv (spatial-channel decoupled); ``C2fCIB`` is the C2f trunk with compact inverted blocks (``CIB``: depthwise 3x3,
  1x1 up to twice the width, depthwise 3x3 -- or with ``lk`` the large-kernel ``RepVGGDW``, depthwise 7x7 + 3x3 --
  1x1 down, depthwise 3x3); ``PSA`` is C2PSA's split with one attention block, written out.

Shape shorthand: B batch, C channels, H x W map, N = H * W positions, nh heads, kd key width, hd head width.
"""
from __future__ import annotations

import torch
from torch import nn

from models.common import Conv


class BottleneckK(nn.Module):
    """Two convolutions of kernels ``k`` (``(3, 3)`` in C2f/C3k/C3k2; YOLOv5's Bottleneck is ``(1, 3)``) with a
    residual when ``shortcut`` and the widths agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple[int, int] = (3, 3),
                 e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3k(nn.Module):
    """YOLOv5's C3 layout (two 1x1 branches, bottlenecks on the first, a 1x1 over both) with k x k - k x k
    bottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, k: int = 3):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(BottleneckK(c_, c_, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SplitStack(nn.Module):
    """The C2f trunk: ``cv1`` (1x1, 2c channels) split into halves; ``blocks`` (each c -> c) chained from the
    second half; all 2 + len(blocks) maps concatenated into ``cv2`` (1x1 -> c2)."""

    def __init__(self, c1: int, c2: int, c: int, blocks: list[nn.Module]):
        super().__init__()
        self.c = c
        self.cv1 = Conv(c1, 2 * c, 1, 1)
        self.cv2 = Conv((2 + len(blocks)) * c, c2, 1)
        self.m = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            maps.append(block(maps[-1]))
        return self.cv2(torch.cat(maps, 1))


class C2f(SplitStack):
    """YOLOv8's CSP block: ``n`` full-width 3x3-3x3 bottlenecks (residual only with ``shortcut``: the backbone's
    rows pass True, the neck's leave the default False)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        c = int(c2 * e)
        super().__init__(c1, c2, c, [BottleneckK(c, c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n)])


class C3k2(SplitStack):
    """YOLO11's CSP block: ``n`` inner blocks, each a half-width 3x3-3x3 bottleneck or (``c3k``) a two-bottleneck
    ``C3k``; residuals on by default (the YAML's second argument is ``c3k``, not a shortcut flag)."""

    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, g: int = 1,
                 shortcut: bool = True):
        c = int(c2 * e)
        blocks = [C3k(c, c, 2, shortcut, g) if c3k else BottleneckK(c, c, shortcut, g) for _ in range(n)]
        super().__init__(c1, c2, c, blocks)


class Attention(nn.Module):
    """Multi-head self-attention over the positions of a map: one 1x1 conv gives per head a query and key of width
    kd = hd * attn_ratio and a value of width hd = dim / nh; a depthwise 3x3 conv of the values is added as
    positional encoding; a 1x1 projection closes. All three convs are BatchNorm'd and linear."""

    def __init__(self, dim: int, num_heads: int = 8, attn_ratio: float = 0.5):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"attention width {dim} must be a multiple of its number of heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        self.qkv = Conv(dim, dim + 2 * self.key_dim * num_heads, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kd, hd = self.key_dim, self.head_dim
        qkv = self.qkv(x).view(b, self.num_heads, 2 * kd + hd, h * w)
        q, k, v = qkv.split((kd, kd, hd), dim=2)  # (B, nh, kd | kd | hd, N)
        weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (B, nh, N query, N key)
        out = (v @ weights.transpose(-2, -1)).view(b, c, h, w)  # each query's weighted values
        return self.proj(out + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """Attention then a 1x1 feed-forward (c -> 2c -> c, the second linear), each added to its input."""

    def __init__(self, c: int, attn_ratio: float = 0.5, num_heads: int = 4, shortcut: bool = True):
        super().__init__()
        self.attn = Attention(c, num_heads=num_heads, attn_ratio=attn_ratio)
        self.ffn = nn.Sequential(Conv(c, 2 * c, 1), Conv(2 * c, c, 1, act=False))
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """``cv1`` (1x1) split into halves; ``n`` PSABlocks (one head per 64 channels, attention ratio 0.5) on the
    second; ``cv2`` (1x1) over both. Keeps the width: c2 must equal c1."""

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"{type(self).__name__} keeps the width: output channels {c2} must equal input channels "
                             f"{c1}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


class SCDown(nn.Module):
    """YOLOv10's downsampling: 1x1 conv to c2, then a depthwise k x k conv of stride s (linear)."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2):
        super().__init__()
        self.cv1 = Conv(c1, c2, 1, 1)
        self.cv2 = Conv(c2, c2, k, s, g=c2, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class RepVGGDW(nn.Module):
    """Depthwise 7x7 and 3x3 convs (both linear, BatchNorm'd) summed, then SiLU: YOLOv10's large-kernel branch.
    ``reparameterize()`` (``DetectionModel.fuse``, after the BatchNorms are folded) adds the 3x3 into the 7x7's
    centre: one conv, the same output."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = Conv(c, c, 7, 1, 3, g=c, act=False)
        self.conv1 = Conv(c, c, 3, 1, 1, g=c, act=False)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) if self.conv1 is None else self.conv(x) + self.conv1(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.conv1 is None:
            return
        for m in (self.conv, self.conv1):
            m.fuse()
        self.conv.conv.weight.add_(nn.functional.pad(self.conv1.conv.weight, [2, 2, 2, 2]))
        self.conv.conv.bias.add_(self.conv1.conv.bias)
        self.conv1 = None


class CIB(nn.Module):
    """Compact inverted block: depthwise 3x3, 1x1 to 2c (c = c2 * e), depthwise 3x3 (``lk``: ``RepVGGDW``), 1x1 to c2,
    depthwise 3x3; residual when ``shortcut`` and the widths agree."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, lk: bool = False):
        super().__init__()
        c_ = 2 * int(c2 * e)
        self.cv1 = nn.Sequential(Conv(c1, c1, 3, g=c1), Conv(c1, c_, 1),
                                 RepVGGDW(c_) if lk else Conv(c_, c_, 3, g=c_), Conv(c_, c2, 1), Conv(c2, c2, 3, g=c2))
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return x + y if self.add else y


class C2fCIB(SplitStack):
    """The C2f trunk with ``n`` full-width ``CIB`` blocks (YOLOv10's deeper stages)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, lk: bool = False, e: float = 0.5):
        c = int(c2 * e)
        super().__init__(c1, c2, c, [CIB(c, c, shortcut, e=1.0, lk=lk) for _ in range(n)])


class PSA(C2PSA):
    """YOLOv10's partial self-attention: C2PSA's split and join around one attention block written out (``attn``
    then ``ffn``, each residual, one head per 64 channels; Ultralytics' attribute names). Keeps the width."""

    def __init__(self, c1: int, c2: int, e: float = 0.5):
        super().__init__(c1, c2, 0, e)  # no PSABlock: ``m`` is empty
        self.attn = Attention(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1))
        self.ffn = nn.Sequential(Conv(self.c, 2 * self.c, 1), Conv(2 * self.c, self.c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        b = b + self.attn(b)
        return self.cv2(torch.cat((a, b + self.ffn(b)), 1))
