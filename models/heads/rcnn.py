"""Faster R-CNN (torchvision) as a head row: the two-stage baseline on the same data, metrics and tools.

The row builds torchvision's own ``RegionProposalNetwork`` and ``RoIHeads`` (anchor generator, RPN head, box
coder, matchers, samplers, MultiScaleRoIAlign, TwoMLPHead, FastRCNNPredictor) through ``FasterRCNN.__init__``
itself, so every default and every parameter is torchvision's; only its ``GeneralizedRCNNTransform`` is left
out (models/heads/tv_adapter.py: the glue every torchvision detector row shares, and its contract flags:
``needs_targets``, ``suppressed``, ``val_loss = False``, ``dynamic_export = False``).

Classes: ``nc`` counts object classes; torchvision's softmax classifier adds the background class (``num_classes =
nc + 1``, our class c is its label c + 1). The eval output is torchvision's per-image detections, NMS done per class
inside ``RoIHeads``; ``decode`` lays them out as the common ``(B, K, 5 + nc)``, K = ``box_detections_per_img``.

Shape shorthand: B batch, H x W the input, nl levels, K detections per image.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
import torchvision
from torch import Tensor
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, roi_align

try:  # MultiScaleRoIAlign's private helpers (torchvision 0.13 on); without them RoIAlignPool is torchvision's own
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _filter_input = None

from models.heads.tv_adapter import ChannelsStandIn, TorchvisionHead, anchor_generator, check_options
from utils.losses.tv import RCNN_ITEM_SCALE, RCNN_TERMS, TVOutput

# torchvision's FasterRCNN keyword arguments a YAML row may set, with torchvision's defaults
_MODULE_ARGS = {"rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head", "box_predictor"}
TV_OPTIONS = {k: p.default for k, p in inspect.signature(FasterRCNN.__init__).parameters.items()
              if k.startswith(("rpn_", "box_", "bbox_")) and k not in _MODULE_ARGS}
ROI_OPTIONS = {"roi_levels": None, "roi_output_size": 7, "roi_sampling_ratio": 2}  # torchvision's MultiScaleRoIAlign


class FasterRCNNHead(TorchvisionHead):
    """torchvision's Faster R-CNN RPN + RoI heads over the maps of an FPN row.

    YAML: ``[[-1], 1, FasterRCNNHead, [nc, anchor_sizes, aspect_ratios, options]]``. ``anchor_sizes``: per level a
    list of sizes in pixels (torchvision's ``AnchorGenerator``); ``aspect_ratios``: one list for every level, or
    one per level; ``options``: any of torchvision's ``FasterRCNN`` keyword arguments (``rpn_*``, ``box_*``,
    ``bbox_reg_weights``) plus ``roi_levels`` (how many of the first levels RoIAlign reads; default: all but the
    last when there are several, at most 4 -- torchvision's, whose extra pooled level is only for the RPN),
    ``roi_output_size`` and ``roi_sampling_ratio``. Unknown option names fail with the nearest known one.
    ``nc`` counts object classes; the background class is added inside.
    """

    area_flops = False  # proposals and RoIs are counted per image, not per pixel
    cpu_runtime = False  # ONNX Runtime 217 ms vs PyTorch 156 ms at 160 px (mnv3 FPN; bench/README.md, issue 15)
    label_offset = 1  # torchvision's label 0 is the background
    loss_terms, loss_scale = RCNN_TERMS, RCNN_ITEM_SCALE

    def __init__(self, nc: int = 80, anchor_sizes: list | None = None, aspect_ratios: list | None = None,
                 options: dict | None = None, ch: list[int] | tuple[int, ...] = ()):
        super().__init__(nc, ch)
        opts = {**ROI_OPTIONS, **check_options("FasterRCNNHead", options, TV_OPTIONS | ROI_OPTIONS)}
        sizes = anchor_sizes if anchor_sizes is not None else [[32 * 2 ** i] for i in range(self.nl)]
        anchors = anchor_generator("FasterRCNNHead", sizes, aspect_ratios or [0.5, 1.0, 2.0], self.nl)
        roi_levels = opts.pop("roi_levels")
        self.roi_levels = roi_levels if roi_levels is not None else (min(4, self.nl - 1) if self.nl > 1 else 1)
        if not 1 <= self.roi_levels <= self.nl:
            raise ValueError(f"FasterRCNNHead: roi_levels must be 1..{self.nl}, got {self.roi_levels}")
        pool = RoIAlignPool([str(i) for i in range(self.roi_levels)], opts.pop("roi_output_size"),
                            opts.pop("roi_sampling_ratio"))
        tv = FasterRCNN(ChannelsStandIn(ch[0]), num_classes=nc + 1, rpn_anchor_generator=anchors, box_roi_pool=pool,
                        **opts)
        self.rpn, self.roi_heads = tv.rpn, tv.roi_heads
        self.detections_per_img = self.roi_heads.detections_per_img

    def initialize(self, stride: Tensor) -> None:
        """Strides of the input levels; ``stride`` (the model's grid strides) lists the RoI levels only: the
        extra pooled level floors odd sizes and sets no constraint on the input size."""
        super().initialize(stride)
        self.stride = self.stride[:self.roi_levels]

    # ------------------------------------------------------------------ forward
    def _inputs(self, features: list[Tensor]) -> tuple[OrderedDict, ImageList]:
        """Our maps -> torchvision's named feature dict and the batch as an ImageList."""
        return OrderedDict((str(i), x) for i, x in enumerate(features)), self._images(features)

    def forward(self, features: list[Tensor], targets: Tensor | None = None):
        """Training: ``TVOutput`` (torchvision's loss dict and the batch size). Training without targets (precise
        BN gathering statistics): the RPN head's raw outputs, unused. Eval: torchvision's per-image detections."""
        feats, images = self._inputs(features)
        if self.training:
            if targets is None:
                return self.rpn.head(list(feats.values()))
            tv_targets = self._targets(targets, images)
            proposals, rpn_losses = self.rpn(images, feats, tv_targets)
            _, roi_losses = self.roi_heads(feats, proposals, images.image_sizes, tv_targets)
            return TVOutput({**rpn_losses, **roi_losses}, len(images.image_sizes))
        proposals, _ = self.rpn(images, feats)
        detections, _ = self.roi_heads(feats, proposals, images.image_sizes)
        return detections


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
