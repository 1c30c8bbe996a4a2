"""NanoDet-Plus-m's trunk and neck as multi-output YAML rows: ``ShuffleNetV2`` (torchvision's trunk without conv5
and fc) returns the stride 8/16/32 maps; ``GhostPAN`` takes that list and returns ``len(ch) + num_extra_level`` maps.
Both list their output widths in ``out_channels``.

Sources: NanoDet (RangiLyu/nanodet) ``nanodet/model/backbone/shufflenetv2.py``, ``nanodet/model/fpn/ghost_pan.py``,
``nanodet/model/backbone/ghostnet.py`` and ``config/nanodet-plus-m_320.yml``; parameter counts checked against them
(tests/test_backbones.py).

Shape shorthand: B batch, C channels, H x W the input, stride s levels H/s x W/s.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from models.common import Conv, DWSConv

LOGGER = logging.getLogger("headzoo.backbones")

LEAKY_SLOPE = 0.1  # NanoDet's act_layers("LeakyReLU"): nn.LeakyReLU(negative_slope=0.1)
SHUFFLENET_BUILDERS = {  # width -> torchvision builder (always called with weights=None: nothing is downloaded)
    "0.5x": torchvision.models.shufflenet_v2_x0_5,
    "1.0x": torchvision.models.shufflenet_v2_x1_0,
    "1.5x": torchvision.models.shufflenet_v2_x1_5,
    "2.0x": torchvision.models.shufflenet_v2_x2_0,
}
SHUFFLENET_ACTS = ("leaky", "relu")


def leaky() -> nn.Module:
    return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)


# ---------------------------------------------------------------------------------------------
# ShuffleNetV2 trunk
# ---------------------------------------------------------------------------------------------
@dataclass
class WeightsReport:
    """What ``load_state_dict_file`` did: keys ``loaded``; ``skipped`` (in the file, not in the module, e.g. conv5
    and fc); ``mismatched`` (in both, other shape); ``missing`` (in the module only: left as built)."""
    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def few(keys: list[str]) -> str:
            return f" ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})" if keys else ""
        return (f"{self.path}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}{few(self.skipped)}, "
                f"shape mismatch {len(self.mismatched)}{few(self.mismatched)}, "
                f"missing {len(self.missing)}{few(self.missing)}")


CHECKPOINT_WEIGHTS = "<checkpoint>"  # a row's weights argument when a checkpoint rebuilds it: pretrained, load nothing


def load_row_weights(module: nn.Module, weights: str | Path | None, what: str) -> WeightsReport | None:
    """A row's ``weights`` argument: None (random initialisation), ``CHECKPOINT_WEIGHTS`` (a checkpoint rebuilding
    the model brings the tensors: the file named at training time need not exist here) or a local file to load."""
    if weights is None or weights == CHECKPOINT_WEIGHTS:
        return None
    report = load_state_dict_file(module, weights)
    LOGGER.info(f"{what}: {report.summary()}")
    return report


def load_state_dict_file(module: nn.Module, path: str | Path) -> WeightsReport:
    """Load the tensors of a local state_dict file (e.g. torchvision's ``shufflenetv2_x1-5666bf0f80.pth``) whose
    keys ``module`` has; keys it lacks are skipped and reported. A shape mismatch (another width) is an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state_dict (a dict of tensors), got {type(sd).__name__}")
    own = module.state_dict()
    report = WeightsReport(str(path))
    for k, v in sd.items():
        if k not in own:
            report.skipped.append(k)
        elif v.shape != own[k].shape:
            report.mismatched.append(f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}")
        else:
            report.loaded.append(k)
    # torchvision's 2018 files predate BatchNorm's num_batches_tracked: its absence is not worth reporting
    report.missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if report.mismatched or not report.loaded:
        raise ValueError(f"{path} does not fit {type(module).__name__}: {report.summary()}")
    module.load_state_dict({k: sd[k] for k in report.loaded}, strict=False)
    return report


class ShuffleNetV2(nn.Module):
    """torchvision's ShuffleNetV2 trunk (conv1, maxpool, stage2-4; NanoDet-Plus drops conv5 and fc) -> the three
    stage outputs [(B, out_channels[i], H/s, W/s) for s in 8, 16, 32]; [116, 232, 464] channels at 1.0x.

    act: "leaky" (NanoDet-Plus: every ReLU becomes LeakyReLU(0.1)) or "relu" (torchvision's).
    weights: optional local torchvision state_dict file; what it loaded is in ``weights_report``.
    Child names are torchvision's, so its ImageNet state_dicts load by name.
    """

    def __init__(self, c1: int = 3, width: str = "1.0x", weights: str | Path | None = None, act: str = "leaky"):
        super().__init__()
        if c1 != 3:
            raise ValueError(f"ShuffleNetV2 takes RGB input (c1=3), got c1={c1}")
        if width not in SHUFFLENET_BUILDERS:
            raise ValueError(f"ShuffleNetV2 width {width!r} is not one of {', '.join(SHUFFLENET_BUILDERS)}")
        if act not in SHUFFLENET_ACTS:
            raise ValueError(f"ShuffleNetV2 act {act!r} is not one of {', '.join(SHUFFLENET_ACTS)}")
        tv = SHUFFLENET_BUILDERS[width](weights=None)
        self.conv1, self.maxpool = tv.conv1, tv.maxpool
        self.stage2, self.stage3, self.stage4 = tv.stage2, tv.stage3, tv.stage4
        self.out_channels = list(tv._stage_out_channels[1:4])
        if act == "leaky":
            _replace_relu(self)
        self.weights_report = load_row_weights(self, weights, f"ShuffleNetV2 {width}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.conv1(x))  # (B, 24, H/4, W/4)
        p3 = self.stage2(x)
        p4 = self.stage3(p3)
        return [p3, p4, self.stage4(p4)]


def _replace_relu(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, leaky())
        else:
            _replace_relu(child)


# ---------------------------------------------------------------------------------------------
# Ghost-PAN
# ---------------------------------------------------------------------------------------------
class GhostModule(nn.Module):
    """GhostNet's module at ratio 2: a 1x1 Conv makes half the channels, a depthwise 3x3 Conv ("cheap operation")
    makes the other half from them; act=False leaves both linear."""

    def __init__(self, c1: int, c2: int, act: bool = True):
        super().__init__()
        self.c2 = c2
        c_ = math.ceil(c2 / 2)
        self.primary_conv = Conv(c1, c_, 1, act=leaky() if act else False)
        self.cheap_operation = Conv(c_, c_, 3, g=c_, act=leaky() if act else False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat((x1, self.cheap_operation(x1)), 1)[:, :self.c2]


class GhostBottleneck(nn.Module):
    """GhostNet's stride-1 bottleneck without squeeze-excitation, as GhostPAN uses it: GhostModule (act) ->
    GhostModule (linear), plus the input, or a linear depthwise-separable k x k projection of it when c1 != c2."""

    def __init__(self, c1: int, c_: int, c2: int, k: int = 5):
        super().__init__()
        self.ghost1 = GhostModule(c1, c_, act=True)
        self.ghost2 = GhostModule(c_, c2, act=False)
        self.shortcut = nn.Identity() if c1 == c2 else DWSConv(c1, c2, k, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBlocks(nn.Module):
    """num_blocks GhostBottlenecks (c1 -> c2, then c2 -> c2) of width int(c2 * expand); use_res adds a 1x1
    projection of the input (a biased conv and LeakyReLU, no BatchNorm, as NanoDet's)."""

    def __init__(self, c1: int, c2: int, expand: float = 1, k: int = 5, num_blocks: int = 1, use_res: bool = False):
        super().__init__()
        self.use_res = use_res
        if use_res:
            self.reduce_conv = nn.Sequential(nn.Conv2d(c1, c2, 1), leaky())  # NanoDet: biased conv + act, no BN
        c_ = int(c2 * expand)
        self.blocks = nn.Sequential(*(GhostBottleneck(c1 if i == 0 else c2, c_, c2, k) for i in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(x)
        return out + self.reduce_conv(x) if self.use_res else out


class GhostPAN(nn.Module):
    """NanoDet-Plus's Ghost-PAN: [(B, ch[i], H/s_i, W/s_i)] -> [(B, c2, H/s, W/s)] for the input strides plus
    num_extra_level more, each twice the last (8, 16, 32 -> 8, 16, 32, 64). LeakyReLU(0.1) throughout.

    1x1 Conv reduce per input; top-down: bilinear 2x upsample, concat, GhostBlocks; bottom-up: depthwise-separable
    k x k stride-2 downsample, concat, GhostBlocks; extra level: stride-2 depthwise-separable conv of the top reduced
    input plus one of the top output (further levels chain both paths).
    """

    def __init__(self, ch: list[int], c2: int = 96, k: int = 5, num_extra_level: int = 1, expand: float = 1,
                 num_blocks: int = 1, use_res: bool = False):
        super().__init__()
        if not isinstance(ch, (list, tuple)) or len(ch) < 2:
            raise ValueError(f"GhostPAN needs a list of at least two input widths, got ch={ch!r}")
        if num_extra_level < 0 or num_blocks < 1:
            raise ValueError(f"GhostPAN needs num_extra_level >= 0 and num_blocks >= 1, got {num_extra_level}, "
                             f"{num_blocks}")
        self.ch = list(ch)
        self.out_channels = [c2] * (len(ch) + num_extra_level)
        n = len(ch)

        def blocks() -> GhostBlocks:
            return GhostBlocks(2 * c2, c2, expand, k, num_blocks, use_res)

        def down() -> DWSConv:
            return DWSConv(c2, c2, k, 2, act=leaky())

        self.reduce_layers = nn.ModuleList(Conv(c, c2, 1, act=leaky()) for c in ch)
        self.top_down_blocks = nn.ModuleList(blocks() for _ in range(n - 1))
        self.downsamples = nn.ModuleList(down() for _ in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(blocks() for _ in range(n - 1))
        self.extra_lvl_in_conv = nn.ModuleList(down() for _ in range(num_extra_level))
        self.extra_lvl_out_conv = nn.ModuleList(down() for _ in range(num_extra_level))

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(x) != len(self.ch):
            raise ValueError(f"GhostPAN was built for {len(self.ch)} inputs {self.ch}, got {len(x)}")
        feats = [reduce(f) for f, reduce in zip(x, self.reduce_layers)]  # each (B, c2, H/s, W/s)
        inner = self._top_down(feats)
        outs = self._bottom_up(inner)
        top = feats[-1]
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            # NanoDet feeds every extra level's conv_in from feats[-1], which only fits the first extra level
            top = conv_in(top)
            outs.append(top + conv_out(outs[-1]))
        return outs

    def _top_down(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        inner = [feats[-1]]
        for block, low in zip(self.top_down_blocks, reversed(feats[:-1])):
            # size= equals NanoDet's scale_factor=2 when the sizes halve exactly, and also fits odd sizes
            up = F.interpolate(inner[0], size=low.shape[-2:], mode="bilinear", align_corners=False)
            inner.insert(0, block(torch.cat((up, low), 1)))
        return inner

    def _bottom_up(self, inner: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = [inner[0]]
        for down, block, high in zip(self.downsamples, self.bottom_up_blocks, inner[1:]):
            outs.append(block(torch.cat((down(outs[-1]), high), 1)))
        return outs
