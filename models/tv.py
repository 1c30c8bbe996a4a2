"""torchvision trunks and FPN as multi-output YAML rows, and torchvision detector state_dicts in our row names.

``TVTrunk`` wraps a torchvision classification model (ResNet, MobileNetV3, ShuffleNetV2; always built with
``weights=None``: nothing is downloaded) and returns the outputs of the stages it is asked for; ``TVFPN`` wraps
``torchvision.ops.FeaturePyramidNetwork`` (optionally with torchvision's extra levels) over a list of
maps. Together they are torchvision's ``BackboneWithFPN`` split into two rows (child names ``body`` and ``fpn``
kept), so a detector YAML holds torchvision's exact modules and parameter counts, and the same trunk can sit
under any head (``models/r50-fpn-decoupled.yaml``, ``models/mnv3-yolox.yaml``).

Sources: torchvision ``models/detection/backbone_utils.py`` (``_resnet_fpn_extractor``, ``_mobilenet_extractor``:
stage lists, trainable-layer rule, FrozenBatchNorm2d with pretrained weights), ``models/detection/faster_rcnn.py``,
``fcos.py`` and ``retinanet.py`` (their P3-P7 pyramid: ``LastLevelP6P7``).

Shape shorthand: B batch, H x W the input, stride s maps (B, C, H/s, W/s).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from models.backbones import load_row_weights

try:  # torchvision's renaming of RetinaNet head keys saved before its version 2 (retinanet_resnet50_fpn_coco-eeacb38b.pth)
    from torchvision.models.detection.retinanet import _v1_to_v2_weights
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _v1_to_v2_weights = None

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's detection transform
TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
          "wide_resnet50_2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
          "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
# the extra levels above the FPN: LastLevelMaxPool (torchvision's Faster R-CNN: P6 max-pooled from P5), LastLevelP6P7
# (its FCOS and RetinaNet: P6 and P7 by stride-2 3x3 convs from P5; its RetinaNet v2: from C5, "p6p7c5"), or none
FPN_EXTRA = {"pool": 1, "p6p7": 2, "p6p7c5": 2, "none": 0}


def _family(name: str) -> str:
    return "mobilenet" if name.startswith("mobilenet") else "shufflenet" if name.startswith("shufflenet") else "resnet"


def _stages(name: str, net: nn.Module) -> tuple[nn.Module, list[str], list[int], list[str]]:
    """A classification model -> (module whose children run in order, the child name ending each stage, that
    stage's width, the child names of each stage in the order torchvision's trainable-layer rule frees them)."""
    family = _family(name)
    if family == "resnet":  # stages 0-4: conv1 (stride 2, with maxpool: 4), layer1 (4) ... layer4 (32)
        ends = ["maxpool", "layer1", "layer2", "layer3", "layer4"]
        c1 = net.inplanes // 8  # torchvision's in_channels_stage2: layer1's width
        widths = [net.conv1.out_channels, c1, c1 * 2, c1 * 4, c1 * 8]
        train_order = ["layer4", "layer3", "layer2", "layer1", "conv1", "bn1"]
        return net, ends, widths, train_order
    if family == "mobilenet":  # stage k ends at the block before the k-th strided block (torchvision's C0..Cn)
        body = net.features
        idx = [0] + [i for i, b in enumerate(body) if getattr(b, "_is_cn", False)] + [len(body) - 1]
        widths = [body[i].out_channels for i in idx]
        return body, [str(i) for i in idx], widths, [str(i) for i in range(len(body))][::-1]
    ends = ["maxpool", "stage2", "stage3", "stage4", "conv5"]  # shufflenet: strides 4, 8, 16, 32, 32
    return net, ends, list(net._stage_out_channels), ["conv5", "stage4", "stage3", "stage2", "conv1"]


class TVTrunk(nn.Module):
    """A torchvision classification trunk -> the maps of stages ``returned``, ``out_channels`` their widths.

    name: one of ``TRUNKS``. returned: stage indices (ResNet 1-4 = layer1-4 at strides 4-32, torchvision's default
    [1, 2, 3, 4]; MobileNetV3 0-5 = torchvision's C0..C5, default [4, 5] (strides 16, 32); ShuffleNetV2 1-3 =
    stage2-4, default [1, 2, 3]). trainable: torchvision's ``trainable_backbone_layers`` (stages counted from the
    top that train; default all without weights, 3 with them). weights: a local torchvision classification
    state_dict (e.g. ``resnet50-0676ba61.pth``); with it BatchNorm becomes FrozenBatchNorm2d, as torchvision does
    for pretrained trunks. normalize: ImageNet mean/std inside the row (torchvision's detection transform; our
    batches come in as 0-1 RGB).
    """

    def __init__(self, c1: int = 3, name: str = "resnet50", returned: list[int] | None = None,
                 trainable: int | None = None, weights: str | Path | None = None, normalize: bool = True):
        super().__init__()
        if c1 != 3:
            raise ValueError(f"TVTrunk takes RGB input (c1=3), got c1={c1}")
        if name not in TRUNKS:
            raise ValueError(f"TVTrunk: unknown trunk {name!r}; one of {', '.join(TRUNKS)}")
        family = _family(name)
        # torchvision's detection builders pass norm_layer explicitly (plain BatchNorm2d: eps 1e-5, not MobileNetV3's
        # own 1e-3), FrozenBatchNorm2d under pretrained weights; ShuffleNetV2 takes no norm_layer
        norm_layer = FrozenBatchNorm2d if weights is not None else nn.BatchNorm2d
        norm = {} if family == "shufflenet" else {"norm_layer": norm_layer}
        net = getattr(torchvision.models, name)(weights=None, **norm)
        self.weights_report = load_row_weights(net, weights, f"TVTrunk {name}")
        body, ends, widths, train_order = _stages(name, net)
        default = {"resnet": [1, 2, 3, 4], "mobilenet": [len(ends) - 2, len(ends) - 1], "shufflenet": [1, 2, 3]}
        returned = list(default[family] if returned is None else returned)
        lo = 1 if family != "mobilenet" else 0
        if not returned or any(not isinstance(k, int) or not lo <= k < len(ends) for k in returned) \
                or returned != sorted(set(returned)):
            raise ValueError(f"TVTrunk {name}: returned must be increasing stage indices in {lo}..{len(ends) - 1}, "
                             f"got {returned}")
        self._freeze(body, name, ends, trainable, weights is not None, train_order)
        self.body = IntermediateLayerGetter(body, {ends[k]: str(v) for v, k in enumerate(returned)})
        self.frozen = tuple(f"body.{n}" for n, p in self.body.named_parameters() if not p.requires_grad)
        self.out_channels = [widths[k] for k in returned]
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _freeze(body: nn.Module, name: str, ends: list[str], trainable: int | None, pretrained: bool,
                train_order: list[str]) -> None:
        """torchvision's rule: the top ``trainable`` of the ``len(ends)`` stages train; the rest are frozen."""
        n_stages = len(ends)
        if trainable is None:
            trainable = 3 if pretrained else n_stages  # torchvision's _validate_trainable_layers
        if isinstance(trainable, bool) or not isinstance(trainable, int) or not 0 <= trainable <= n_stages:
            raise ValueError(f"TVTrunk {name}: trainable must be 0..{n_stages}, got {trainable!r}")
        if _family(name) == "mobilenet":  # blocks from the first block of the lowest trained stage on
            first = len(body) if trainable == 0 else int(ends[n_stages - trainable])
            train = {str(i) for i in range(first, len(body))}
        else:  # ResNet: all 5 stages also free bn1 (torchvision)
            train = set(train_order[:trainable] + (train_order[5:] if trainable == 5 else []))
        for n, p in body.named_parameters():
            if n.split(".")[0] not in train:
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.normalize:
            x = (x - self.mean) / self.std
        return list(self.body(x).values())


class TVFPN(nn.Module):
    """torchvision's FeaturePyramidNetwork over a list of maps -> ``len(ch)`` maps of ``c2`` channels, plus the
    extra levels ``extra`` names: "pool" (torchvision's Faster R-CNN: P6 max-pooled from the top map), "p6p7"
    (its FCOS and RetinaNet: ``LastLevelP6P7(c2, c2)``, P6 and P7 by stride-2 convs from the top FPN map),
    "p6p7c5" (its retinanet_resnet50_fpn_v2: ``LastLevelP6P7(ch[-1], c2)``, from the top input map) or "none"."""

    def __init__(self, ch: list[int] | int, c2: int = 256, extra: str = "pool"):
        super().__init__()
        ch = [ch] if isinstance(ch, int) else list(ch)
        if extra not in FPN_EXTRA:
            raise ValueError(f"TVFPN: extra {extra!r} is not one of {', '.join(FPN_EXTRA)}")
        blocks = {"pool": LastLevelMaxPool, "p6p7": lambda: LastLevelP6P7(c2, c2),
                  "p6p7c5": lambda: LastLevelP6P7(ch[-1], c2), "none": lambda: None}[extra]()
        self.fpn = FeaturePyramidNetwork(ch, c2, extra_blocks=blocks)
        self.out_channels = [c2] * (len(ch) + FPN_EXTRA[extra])

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        return list(self.fpn(OrderedDict((str(i), t) for i, t in enumerate(x))).values())


# torchvision detector key prefix -> (the row classes that hold those modules, prefix inside the row)
_TV_PREFIXES = {"backbone.body.": (("TVTrunk",), "body."), "backbone.fpn.": (("TVFPN",), "fpn."),
                "rpn.": (("FasterRCNNHead",), "rpn."), "roi_heads.": (("FasterRCNNHead",), "roi_heads."),
                "head.": (("FCOSHead", "RetinaNetHead"), "head.")}  # FCOS's / RetinaNet's head module
_DETECTOR_PREFIXES = ("backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.")  # a bare head. decides nothing


def is_torchvision_detector(sd: dict) -> bool:
    """A torchvision detection model's state_dict (keys under backbone./rpn./roi_heads.)."""
    return any(k.startswith(_DETECTOR_PREFIXES) for k in sd)


def torchvision_to_rows(sd: dict[str, Tensor], layers: nn.Sequential) -> dict[str, Tensor]:
    """Rename a torchvision detector's state_dict (``fasterrcnn_*``: backbone.body / backbone.fpn / rpn /
    roi_heads; ``fcos_*``, ``retinanet_*``: backbone.body / backbone.fpn / head) into the rows of a YAML model
    holding TVTrunk / TVFPN / FasterRCNNHead, FCOSHead or RetinaNetHead rows -> {model.<i>...: t}. Keys without
    such a row in ``layers`` are dropped (e.g. rpn./roi_heads. under a YOLO head). RetinaNet head keys of
    torchvision's version 1 (its COCO file: ``conv.<2i>``) take their version 2 names (``conv.<i>.0``), as torchvision
    renames them when it loads one."""
    rows = {}
    for m in layers:
        rows.setdefault(m.type, m.i)
    out = {}
    for k, v in sd.items():
        for prefix, (row_types, inner) in _TV_PREFIXES.items():
            row = next((rows[t] for t in row_types if t in rows), None)
            if k.startswith(prefix) and row is not None:
                out[f"model.{row}.{inner}{k[len(prefix):]}"] = v
                break
    if "RetinaNetHead" in rows and _v1_to_v2_weights is not None:  # what RetinaNet's own load_state_dict does
        for branch in ("classification_head", "regression_head"):
            _v1_to_v2_weights(out, f"model.{rows['RetinaNetHead']}.head.{branch}.")
    return out
