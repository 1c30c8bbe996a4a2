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
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, box_convert, roi_align

try:  # MultiScaleRoIAlign's private helpers (torchvision 0.13 on); without them RoIAlignPool is torchvision's own
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _filter_input = None

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
        pool = RoIAlignPool([str(i) for i in range(self.roi_levels)], opts.pop("roi_output_size"),
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


# ---------------------------------------------------------------------------------------------
# RoIAlign with a matmul backward for small maps on the CPU
# ---------------------------------------------------------------------------------------------
SEPARABLE_MAX_CELLS = 625  # H x W up to which the matmul backward runs (1.7x at 25x25, 11x at 5x5: bench/)


def _axis_weights(lo: Tensor, hi: Tensor, scale: float, bins: int, grid: int, size: int) -> Tensor:
    """(R, bins, size): along one axis, the weight of each map cell in each output bin — torchvision's RoIAlign
    sampling (aligned=False: RoI side >= 1 cell; ``grid`` points per bin; points beyond [-1, size] count 0, the
    rest clamped to the map and interpolated linearly), divided by ``grid``."""
    start = lo * scale
    bin_len = ((hi * scale - start).clamp(min=1.0) / bins)[:, None, None]  # (R, 1, 1)
    b = torch.arange(bins, dtype=lo.dtype, device=lo.device)[:, None]  # (bins, 1)
    k = torch.arange(grid, dtype=lo.dtype, device=lo.device) + 0.5  # (grid,)
    v = start[:, None, None] + b * bin_len + k * bin_len / grid  # (R, bins, grid) sample coordinates
    inside = ((v >= -1.0) & (v <= size)).to(lo.dtype)
    v = v.clamp(min=0.0)
    low = v.floor().long()
    edge = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(v), v - low.to(v.dtype))
    w = v.new_zeros(v.shape[0], bins, size)
    w.scatter_add_(2, low, (1.0 - frac) * inside / grid)
    w.scatter_add_(2, high, frac * inside / grid)
    return w


class _RoIAlignMatmulGrad(torch.autograd.Function):
    """torchvision's ``roi_align`` forward; its backward as two batched matmuls. Bilinear sampling is separable (a
    point's weight on cell (h, w) is wy(h) * wx(w), an out-of-map point zero on either axis), so the gradient of an
    RoI's map is Wy^T @ G @ Wx per channel: on small maps far faster on the CPU than torchvision's kernel, which
    loops over every channel, bin and sample point. aligned=False, a fixed sampling grid."""

    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, output_size: tuple[int, int], scale: float,
                sampling_ratio: int) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.geometry = (features.shape, output_size, scale, sampling_ratio)
        return roi_align(features, rois, output_size, scale, sampling_ratio)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        (b, c, h, w), (ph, pw), scale, grid = ctx.geometry
        wy = _axis_weights(rois[:, 2], rois[:, 4], scale, ph, grid, h)  # (R, PH, H)
        wx = _axis_weights(rois[:, 1], rois[:, 3], scale, pw, grid, w)  # (R, PW, W)
        image = rois[:, 0].long()
        grad_features = grad.new_zeros(b, h, c, w)
        step = max(1, 2 ** 24 // (c * max(h, ph) * w))  # RoIs at a time: their (n, H, C, W) part <= 64 MB in FP32
        for i in range(0, len(rois), step):
            j = slice(i, i + step)
            n = len(image[j])
            t = grad[j].reshape(n, c * ph, pw).bmm(wx[j])  # (n, C*PH, W): G @ Wx per RoI
            t = t.view(n, c, ph, w).transpose(1, 2).reshape(n, ph, c * w)  # (n, PH, C*W)
            t = wy[j].transpose(1, 2).bmm(t).view(n, h, c, w)  # (n, H, C, W): Wy^T @ G @ Wx
            grad_features.index_add_(0, image[j], t)
        return grad_features.permute(0, 2, 1, 3), None, None, None, None


class RoIAlignPool(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign — its level mapping and its ``roi_align`` forward, unchanged — with two
    savings: a CPU training backward on levels of <= SEPARABLE_MAX_CELLS cells through ``_RoIAlignMatmulGrad``
    (torchvision's ``_roi_align_backward`` was a third of a mnv3-FPN training step at 160 px), and a level that
    pools every RoI (mnv3-FPN's two levels share stride 32: always) returned as it is instead of copied into a
    zeroed (R, C, 7, 7) result. The output is torchvision's bit for bit; tracing and scripting (export) take
    torchvision's own path."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if _filter_input is None or torch.jit.is_scripting() or torchvision._is_tracing():
            return super().forward(x, boxes, image_shapes)
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)  # (R, 5) [image, x1, y1, x2, y2]
        levels = self.map_levels(boxes) if len(features) > 1 else rois.new_zeros(len(rois), dtype=torch.long)
        per_level = [torch.where(levels == level)[0] for level in range(len(features))]
        full = next((i for i, idx in enumerate(per_level) if len(idx) == len(rois)), None)
        if full is not None:  # one level pools every RoI (mnv3-FPN: always)
            return self._pool(features[full], rois, self.scales[full]).to(features[0].dtype)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for f, scale, idx in zip(features, self.scales, per_level):
            if len(idx):
                result[idx] = self._pool(f, rois[idx], scale).to(result.dtype)
        return result

    def _pool(self, f: Tensor, rois: Tensor, scale: float) -> Tensor:
        if (torch.is_grad_enabled() and f.requires_grad and f.device.type == "cpu" and self.sampling_ratio > 0
                and f.shape[-2] * f.shape[-1] <= SEPARABLE_MAX_CELLS):
            return _RoIAlignMatmulGrad.apply(f, rois, self.output_size, scale, self.sampling_ratio)
        return roi_align(f, rois, self.output_size, scale, self.sampling_ratio)
