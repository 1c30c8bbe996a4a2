"""Faster R-CNN (torchvision) as a head row: the two-stage baseline on the same data, metrics and tools.

The row builds torchvision's own ``RegionProposalNetwork`` and ``RoIHeads`` (anchor generator, RPN head, box
coder, matchers, samplers, MultiScaleRoIAlign, TwoMLPHead, FastRCNNPredictor) through ``FasterRCNN.__init__``
itself, so every default and every parameter is torchvision's; only its ``GeneralizedRCNNTransform`` is left
out: our letterboxed batches go in as they are (the ImageNet normalisation lives in the ``TVTrunk`` row).

Through the head contract (models/heads/base.py): ``needs_targets`` (the training forward turns our ``(M, 6)``
normalised targets into torchvision's per-image ``{boxes (xyxy px), labels (1..nc)}`` and returns torchvision's
loss dict); ``suppressed`` (eval gives final detections, NMS done per class inside ``RoIHeads``); ``val_loss =
False`` (torchvision computes no loss in eval). ``decode`` lays the detections out as the common ``(B, K, 5 +
nc)``: cxcywh px, objectness 1.0, the detection's score at its class and 0 elsewhere, K =
``box_detections_per_img`` rows per image, padding rows all 0.

Shape shorthand: B batch, H x W the input, nl levels, K detections per image.
"""
from __future__ import annotations

import difflib
import inspect
import logging
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, box_convert

from models.heads.base import Head
from utils.losses.rcnn import RCNNLoss, RCNNOutput

LOGGER = logging.getLogger("headzoo.rcnn")

# torchvision's FasterRCNN keyword arguments a YAML row may set, with torchvision's defaults
_MODULE_ARGS = {"rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head", "box_predictor"}
TV_OPTIONS = {k: p.default for k, p in inspect.signature(FasterRCNN.__init__).parameters.items()
              if k.startswith(("rpn_", "box_", "bbox_")) and k not in _MODULE_ARGS}
ROI_OPTIONS = {"roi_levels": None, "roi_output_size": 7, "roi_sampling_ratio": 2}  # torchvision's MultiScaleRoIAlign


class _Channels(nn.Module):
    """Stands in for the backbone while FasterRCNN.__init__ builds the RPN and RoI heads (it reads out_channels)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels


class FasterRCNNHead(Head):
    """torchvision's Faster R-CNN RPN + RoI heads over the maps of an FPN row.

    YAML: ``[[-1], 1, FasterRCNNHead, [nc, anchor_sizes, aspect_ratios, options]]``. ``anchor_sizes``: per level a
    list of sizes in pixels (torchvision's ``AnchorGenerator``); ``aspect_ratios``: one list for every level, or
    one per level; ``options``: any of torchvision's ``FasterRCNN`` keyword arguments (``rpn_*``, ``box_*``,
    ``bbox_reg_weights``) plus ``roi_levels`` (how many of the first levels RoIAlign reads; default: all but the
    last when there are several, at most 4 -- torchvision's, whose extra pooled level is only for the RPN),
    ``roi_output_size`` and ``roi_sampling_ratio``. Unknown option names fail with the nearest known one.
    ``nc`` counts object classes; the background class is added inside.
    """

    needs_targets = True
    suppressed = True
    val_loss = False
    area_flops = False  # proposals and RoIs are counted per image, not per pixel
    dynamic_export = False  # torchvision's RPN traces the batch's size and count into the graph
    cpu_runtime = False  # ONNX Runtime 217 ms vs PyTorch 156 ms at 160 px (mnv3 FPN; bench/README.md, issue 15)

    def __init__(self, nc: int = 80, anchor_sizes: list | None = None, aspect_ratios: list | None = None,
                 options: dict | None = None, ch: list[int] | tuple[int, ...] = ()):
        super().__init__()
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"FasterRCNNHead: nc must be a positive integer, got {nc!r}")
        if not ch or len(set(ch)) != 1:
            raise ValueError(f"FasterRCNNHead: its input maps must all have the same width (an FPN), got ch={ch!r}")
        self.nc, self.nl, self.no = nc, len(ch), nc + 5
        opts = self._options(options)
        sizes = anchor_sizes if anchor_sizes is not None else [[32 * 2 ** i] for i in range(self.nl)]
        ratios = aspect_ratios if aspect_ratios is not None else [0.5, 1.0, 2.0]
        ratios = ratios if ratios and isinstance(ratios[0], (list, tuple)) else [ratios] * len(sizes)
        if len(sizes) != self.nl or len(ratios) != self.nl:
            raise ValueError(f"FasterRCNNHead: {len(sizes)} anchor size lists and {len(ratios)} aspect-ratio lists "
                             f"for {self.nl} input levels; give one per level")
        roi_levels = opts.pop("roi_levels")
        self.roi_levels = roi_levels if roi_levels is not None else (min(4, self.nl - 1) if self.nl > 1 else 1)
        if not 1 <= self.roi_levels <= self.nl:
            raise ValueError(f"FasterRCNNHead: roi_levels must be 1..{self.nl}, got {self.roi_levels}")
        pool = MultiScaleRoIAlign([str(i) for i in range(self.roi_levels)], opts.pop("roi_output_size"),
                                  opts.pop("roi_sampling_ratio"))
        anchors = AnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios))
        tv = FasterRCNN(_Channels(ch[0]), num_classes=nc + 1, rpn_anchor_generator=anchors, box_roi_pool=pool, **opts)
        self.rpn, self.roi_heads = tv.rpn, tv.roi_heads
        self.detections_per_img = self.roi_heads.detections_per_img
        self.register_buffer("stride", torch.zeros(self.roi_levels), persistent=False)
        self.level_strides: list[float] = []
        self.export = False
        self._dropped_boxes = 0

    @staticmethod
    def _options(options: dict | None) -> dict:
        known = TV_OPTIONS | ROI_OPTIONS
        options = dict(options or {})
        for k in options:
            if k not in known:
                near = difflib.get_close_matches(str(k), list(known), n=1)
                raise ValueError(f"FasterRCNNHead: unknown option '{k}'" + (f" (did you mean '{near[0]}'?)" if near
                                 else f"; known: {', '.join(known)}"))
        return {k: options.get(k, v) for k, v in known.items() if k in options or k in ROI_OPTIONS}

    def initialize(self, stride: Tensor) -> None:
        """Strides of the input levels; ``stride`` (the model's grid strides) lists the RoI levels only: the
        extra pooled level floors odd sizes and sets no constraint on the input size."""
        if stride.numel() != self.nl:
            raise ValueError(f"FasterRCNNHead: {stride.numel()} strides for {self.nl} levels")
        self.level_strides = [float(s) for s in stride]
        self.stride = stride[:self.roi_levels].to(torch.float32)

    # ------------------------------------------------------------------ forward
    def _inputs(self, features: list[Tensor]) -> tuple[OrderedDict, ImageList]:
        """Our maps -> torchvision's named feature dict and an ImageList of the batch's (letterboxed) size.
        The image tensor itself is never read (the anchor generator reads its shape): an empty stand-in."""
        f0 = features[0]
        h, w = int(f0.shape[-2] * self.level_strides[0]), int(f0.shape[-1] * self.level_strides[0])
        images = ImageList(f0.new_empty((f0.shape[0], 0, h, w)), [(h, w)] * f0.shape[0])
        return OrderedDict((str(i), x) for i, x in enumerate(features)), images

    def _targets(self, targets: Tensor, batch: int, h: int, w: int) -> list[dict[str, Tensor]]:
        """``(M, 6)`` [image, class, cx, cy, w, h] normalised -> per image {boxes xyxy px, labels 1..nc}.
        Boxes with no area (which torchvision's box coder cannot encode) are dropped and counted in a warning."""
        boxes = box_convert(targets[:, 2:6] * targets.new_tensor([w, h, w, h]), "cxcywh", "xyxy")
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not bool(ok.all()):
            self._dropped_boxes += int((~ok).sum())
            LOGGER.warning(f"FasterRCNNHead: dropped {int((~ok).sum())} zero-area target boxes "
                           f"({self._dropped_boxes} so far)")
        image, labels = targets[:, 0].long(), targets[:, 1].long() + 1
        return [{"boxes": boxes[ok & (image == i)], "labels": labels[ok & (image == i)]} for i in range(batch)]

    def forward(self, features: list[Tensor], targets: Tensor | None = None):
        """Training: ``RCNNOutput`` (torchvision's loss dict and the batch size). Training without targets (precise
        BN gathering statistics): the RPN head's raw outputs, unused. Eval: torchvision's per-image detections."""
        feats, images = self._inputs(features)
        if self.training:
            if targets is None:
                return self.rpn.head(list(feats.values()))
            h, w = images.image_sizes[0]
            tv_targets = self._targets(targets, len(images.image_sizes), h, w)
            proposals, rpn_losses = self.rpn(images, feats, tv_targets)
            _, roi_losses = self.roi_heads(feats, proposals, images.image_sizes, tv_targets)
            return RCNNOutput({**rpn_losses, **roi_losses}, len(images.image_sizes))
        proposals, _ = self.rpn(images, feats)
        detections, _ = self.roi_heads(feats, proposals, images.image_sizes)
        return detections

    def decode(self, raw: list[dict[str, Tensor]]) -> Tensor:
        """Per-image detections -> ``(B, K, 5 + nc)``: cxcywh px, 1.0, the score at the detection's class."""
        rows = []
        for det in raw:
            boxes, scores, labels = det["boxes"], det["scores"], det["labels"] - 1
            n = boxes.shape[0]
            cls = torch.zeros((n, self.nc), dtype=boxes.dtype, device=boxes.device)
            cls.scatter_(1, labels[:, None], scores[:, None])
            out = torch.cat((box_convert(boxes, "xyxy", "cxcywh"), torch.ones_like(scores)[:, None], cls), 1)
            pad = out.new_zeros((self.detections_per_img, self.no))
            rows.append(torch.cat((out, pad))[:self.detections_per_img])
        return torch.stack(rows)

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> RCNNLoss:
        """torchvision's losses as named items (``label_smoothing`` and the YOLO gains do not apply)."""
        if label_smoothing:
            LOGGER.warning("FasterRCNNHead: --label-smoothing is ignored (torchvision's cross-entropy is used as is)")
        return RCNNLoss()
