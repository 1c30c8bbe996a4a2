"""What the torchvision detector rows share (models/heads/rcnn.py: Faster R-CNN; models/heads/tv_dense.py: FCOS and
RetinaNet). Each row builds torchvision's own modules through the detector's constructor, over a stand-in for the
backbone (``ChannelsStandIn``), and leaves out its ``GeneralizedRCNNTransform``: our letterboxed batches go in as they
are (the ImageNet normalisation lives in the ``TVTrunk`` row, models/tv.py).

``TorchvisionHead`` is the glue between the head contract (models/heads/base.py) and torchvision's detector API: the
batch as torchvision's ``ImageList`` (its size only), our ``(M, 6)`` normalised targets as torchvision's per-image
``{boxes (xyxy px), labels}``, torchvision's per-image detections as the common ``(B, K, 5 + nc)`` layout, and the
criterion that names and reduces torchvision's loss dict (utils/losses/tv.py). Its contract flags hold for every
torchvision detector:

- ``needs_targets``: torchvision matches (and samples) inside the detector, with targets, in its training forward; the
  row's training forward calls torchvision's own loss code and returns its loss dict.
- ``suppressed``: torchvision's postprocessing gives final detections (score threshold, top-k, NMS per class, at most
  ``detections_per_img`` per image).
- ``val_loss = False``: torchvision computes no loss in eval.
- ``dynamic_export = False``: torchvision's postprocessing loops over the images of the batch in Python and its
  anchor generator reads the input size, so a traced graph holds the batch size and the input size.

Shape shorthand: B batch, H x W the input, M targets, K detections per image.
"""
from __future__ import annotations

import difflib
import logging
from typing import ClassVar

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_convert

from models.heads.base import Head
from utils.losses.tv import TVLoss

LOGGER = logging.getLogger("headzoo.tv")


class ChannelsStandIn(nn.Module):
    """Stands in for the backbone while a torchvision detector's constructor builds its heads (it reads
    ``out_channels``)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels


def check_options(head: str, options: dict | None, known: dict) -> dict:
    """A row's options dict, each name one of ``known`` (unknown names fail with the nearest known one)."""
    options = dict(options or {})
    for k in options:
        if k not in known:
            near = difflib.get_close_matches(str(k), list(known), n=1)
            raise ValueError(f"{head}: unknown option '{k}'" + (f" (did you mean '{near[0]}'?)" if near
                             else f"; known: {', '.join(known)}"))
    return options


def anchor_generator(head: str, sizes: list, ratios: list, nl: int) -> AnchorGenerator:
    """torchvision's ``AnchorGenerator`` from per-level size lists (pixels) and aspect ratios (one list for every
    level, or one per level)."""
    ratios = ratios if ratios and isinstance(ratios[0], (list, tuple)) else [ratios] * len(sizes)
    if len(sizes) != nl or len(ratios) != nl:
        raise ValueError(f"{head}: {len(sizes)} anchor size lists and {len(ratios)} aspect-ratio lists "
                         f"for {nl} input levels; give one per level")
    return AnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios))


class TorchvisionHead(Head):
    """The shared part of the torchvision detector rows (see the module docstring). A subclass builds its modules,
    sets ``detections_per_img``, and names its loss terms (``loss_terms``: our name -> torchvision's loss-dict key,
    ``loss_scale``: utils/losses/tv.py); ``label_offset`` is torchvision's label of our class 0."""

    needs_targets = True
    suppressed = True
    val_loss = False
    dynamic_export = False
    label_offset: int = 0
    loss_terms: ClassVar[dict[str, str]] = {}
    loss_scale: float = 1.0

    def __init__(self, nc: int, ch: list[int] | tuple[int, ...]):
        super().__init__()
        name = type(self).__name__
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ValueError(f"{name}: nc must be a positive integer, got {nc!r}")
        if not ch or len(set(ch)) != 1:
            raise ValueError(f"{name}: its input maps must all have the same width (an FPN), got ch={ch!r}")
        self.nc, self.nl, self.no = nc, len(ch), nc + 5
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.level_strides: list[float] = []
        self.detections_per_img = 100
        self.export = False
        self._dropped_boxes = 0

    def initialize(self, stride: Tensor) -> None:
        """The strides of the input levels (``level_strides``; ``stride`` as the model's grid strides)."""
        if stride.numel() != self.nl:
            raise ValueError(f"{type(self).__name__}: {stride.numel()} strides for {self.nl} levels")
        self.level_strides = [float(s) for s in stride]
        self.stride = stride.to(torch.float32)

    def _images(self, features: list[Tensor]) -> ImageList:
        """The batch as torchvision's ImageList of the batch's (letterboxed) size. The image tensor itself is never
        read (anchor generators read its shape): an empty stand-in."""
        f0 = features[0]
        h, w = int(f0.shape[-2] * self.level_strides[0]), int(f0.shape[-1] * self.level_strides[0])
        return ImageList(f0.new_empty((f0.shape[0], 0, h, w)), [(h, w)] * f0.shape[0])

    def _targets(self, targets: Tensor, images: ImageList) -> list[dict[str, Tensor]]:
        """``(M, 6)`` [image, class, cx, cy, w, h] normalised -> per image {boxes xyxy px, labels}. Boxes with no area
        (which torchvision's box coders cannot encode) are dropped and counted in a warning."""
        (h, w), batch = images.image_sizes[0], len(images.image_sizes)
        boxes = box_convert(targets[:, 2:6] * targets.new_tensor([w, h, w, h]), "cxcywh", "xyxy")
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not bool(ok.all()):
            self._dropped_boxes += int((~ok).sum())
            LOGGER.warning(f"{type(self).__name__}: dropped {int((~ok).sum())} zero-area target boxes "
                           f"({self._dropped_boxes} so far)")
        image, labels = targets[:, 0].long(), targets[:, 1].long() + self.label_offset
        return [{"boxes": boxes[ok & (image == i)], "labels": labels[ok & (image == i)]} for i in range(batch)]

    def decode(self, raw: list[dict[str, Tensor]]) -> Tensor:
        """Per-image detections -> ``(B, K, 5 + nc)``: cxcywh px, 1.0, the detection's score at its class and 0
        elsewhere; K = ``detections_per_img`` rows per image, padding rows all 0."""
        rows = []
        for det in raw:
            boxes, scores, labels = det["boxes"], det["scores"], det["labels"] - self.label_offset
            n = boxes.shape[0]
            cls = torch.zeros((n, self.nc), dtype=boxes.dtype, device=boxes.device)
            cls.scatter_(1, labels[:, None], scores[:, None])
            out = torch.cat((box_convert(boxes, "xyxy", "cxcywh"), torch.ones_like(scores)[:, None], cls), 1)
            pad = out.new_zeros((self.detections_per_img, self.no))
            rows.append(torch.cat((out, pad))[:self.detections_per_img])
        return torch.stack(rows)

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0) -> TVLoss:
        """torchvision's losses as named items (``label_smoothing`` and the YOLO gains do not apply)."""
        if label_smoothing:
            LOGGER.warning(f"{type(self).__name__}: --label-smoothing is ignored (torchvision's losses are used as "
                           f"they are)")
        return TVLoss(self.loss_terms, self.loss_scale)
