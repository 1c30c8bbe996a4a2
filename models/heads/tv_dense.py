"""torchvision's one-stage detectors, FCOS and RetinaNet, as head rows (the adapter of models/heads/rcnn.py).

Each row builds torchvision's detector through its own constructor (``FCOS.__init__`` / ``RetinaNet.__init__``) over a
stand-in backbone and keeps what lies above the backbone: torchvision's head module (``FCOSHead`` / ``RetinaNetHead``,
child name ``head``: torchvision's state_dict keys), its ``AnchorGenerator``, box coder, matcher and settings; the loss
and postprocessing are torchvision's own methods (``FCOS.compute_loss``, ``RetinaNet.postprocess_detections``, ...),
run on the row. Only ``GeneralizedRCNNTransform`` is left out (models/heads/tv_adapter.py: the shared glue and the
contract flags ``needs_targets``, ``suppressed``, ``val_loss = False``, ``dynamic_export = False``). Unlike Faster
R-CNN's, these rows keep the defaults ``area_flops`` (every level's convolutions scale with the input area; the
postprocessing counts no FLOPs) and ``cpu_runtime`` (ONNX Runtime runs them 2-3x faster than PyTorch on a CPU:
bench/README.md, "torchvision's FCOS and RetinaNet").

Classes. torchvision's FCOS and RetinaNet score each class with its own sigmoid (focal loss): there is no background
logit, and a target's label is the index of the logit it trains. Our classes 0..nc-1 are torchvision's labels 0..nc-1
and the row has ``num_classes = nc`` logits: what torchvision's classes do with a dataset labelled from 0. (Faster
R-CNN differs: its softmax needs a background logit, ``num_classes = nc + 1``.) torchvision's COCO models have
``num_classes = 91`` because their labels are COCO category ids, 1..90 with gaps: logit 0 ("__background__") and the
ten "N/A" ids never get a positive target. A COCO state_dict (``fcos_resnet50_fpn_coco-99b0c9b7.pth``,
``retinanet_resnet50_fpn_coco-eeacb38b.pth``) therefore loads as it is into ``nc: 91`` (our class k = COCO category
id k; names: torchvision's ``_COCO_CATEGORIES``), and parameter counts equal torchvision's at nc 91.

Strides: every input level's stride is one of the model's grid strides (8-128 on P3-P7): anchors sit on each level's
own grid only at input sizes divisible by the largest (torchvision's AnchorGenerator takes a level's stride as
input size // grid size, off for P6 / P7 when a size is not a multiple of 128).

Shape shorthand: B batch, A anchors per location (FCOS: 1), N = sum over levels of H_l x W_l x A, nc classes.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, ClassVar

from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead

from models.heads.tv_adapter import ChannelsStandIn, TorchvisionHead, anchor_generator, check_options
from utils.losses.tv import DENSE_ITEM_SCALE, FCOS_TERMS, RETINANET_TERMS, TVOutput

_NOT_OPTIONS = {"self", "backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std",
                "anchor_generator", "head", "proposal_matcher", "kwargs"}  # modules, or the left-out transform's


def _options(detector: type) -> dict:
    """The detector's keyword arguments a YAML row may set, with torchvision's defaults."""
    return {k: p.default for k, p in inspect.signature(detector.__init__).parameters.items() if k not in _NOT_OPTIONS}


class _OneStageHead(TorchvisionHead):
    """A torchvision one-stage detector without its backbone and transform (see the module docstring).
    ``detector`` is torchvision's class; ``kept`` the attributes of the built detector that its loss and
    postprocessing methods read, which run on the row as they are (``detector.postprocess_detections(self, ...)``)."""

    detector: ClassVar[type]
    kept: ClassVar[tuple[str, ...]] = ("head", "anchor_generator", "box_coder", "score_thresh", "nms_thresh",
                                       "detections_per_img", "topk_candidates")
    loss_scale = DENSE_ITEM_SCALE

    def _build(self, nc: int, sizes: list, ratios: list, options: dict | None, ch: list[int],
               head: Callable[[int], nn.Module] | None = None) -> None:
        """``head``: anchors per location -> the head module to use instead of the detector's default one."""
        name = type(self).__name__
        opts = check_options(name, options, _options(self.detector))
        anchors = anchor_generator(name, sizes, ratios, self.nl)
        counts = anchors.num_anchors_per_location()
        if len(set(counts)) != 1:
            raise ValueError(f"{name}: every level needs the same number of anchors per location (one head for all "
                             f"levels), got {counts}")
        if head is not None:
            opts["head"] = head(counts[0])
        tv = self.detector(ChannelsStandIn(ch[0]), num_classes=nc, anchor_generator=anchors, **opts)
        for k in self.kept:
            setattr(self, k, getattr(tv, k))

    def forward(self, features: list[Tensor], targets: Tensor | None = None):
        """Training: ``TVOutput`` (torchvision's loss dict and the batch size). Training without targets (precise BN
        gathering statistics): the head's outputs, unused. Eval: torchvision's per-image detections."""
        outputs = self.head(features)  # cls_logits (B, N, nc), bbox_regression (B, N, 4)[, bbox_ctrness (B, N, 1)]
        if self.training and targets is None:
            return outputs
        images = self._images(features)
        anchors = self.anchor_generator(images, features)  # per image (N, 4) xyxy px
        hw = [x.shape[-2] * x.shape[-1] for x in features]
        per_level = [n * (outputs["cls_logits"].shape[1] // sum(hw)) for n in hw]  # anchors per level
        if self.training:
            losses = self._losses(self._targets(targets, images), outputs, anchors, per_level)
            return TVOutput(losses, len(images.image_sizes))
        split = {k: list(v.split(per_level, 1)) for k, v in outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return self.detector.postprocess_detections(self, split, split_anchors, images.image_sizes)

    def _losses(self, targets: list[dict[str, Tensor]], outputs: dict[str, Tensor], anchors: list[Tensor],
                per_level: list[int]) -> dict[str, Tensor]:
        """torchvision's ``compute_loss`` (its matching, then its head's losses) run on the row."""
        raise NotImplementedError


class FCOSHead(_OneStageHead):
    """torchvision's FCOS above the backbone, over the maps of an FPN row.

    YAML: ``[[-1], 1, FCOSHead, [nc, anchor_sizes, options]]``. ``anchor_sizes``: per level one size in pixels, the
    level's stride (torchvision's rule; its scale ranges are 4-8 x that size); default torchvision's P3-P7 (8-128).
    ``options``: any of torchvision's ``FCOS`` keyword arguments (``center_sampling_radius``, ``score_thresh``,
    ``nms_thresh``, ``detections_per_img``, ``topk_candidates``). ``nc`` counts classes (no background logit)."""

    detector = FCOS
    kept = (*_OneStageHead.kept, "center_sampling_radius")
    loss_terms = FCOS_TERMS

    def __init__(self, nc: int = 80, anchor_sizes: list | None = None, options: dict | None = None,
                 ch: list[int] | tuple[int, ...] = ()):
        super().__init__(nc, ch)
        sizes = anchor_sizes if anchor_sizes is not None else [[8 * 2 ** i] for i in range(self.nl)]
        if any(len(s) != 1 for s in sizes):
            raise ValueError(f"FCOSHead: one anchor size per level (FCOS places one point per location), got {sizes}")
        self._build(nc, sizes, [1.0], options, ch)

    def _losses(self, targets, outputs, anchors, per_level):
        return FCOS.compute_loss(self, targets, outputs, anchors, per_level)


def _v2_head(c: int, nc: int) -> Callable[[int], nn.Module]:
    """torchvision's retinanet_resnet50_fpn_v2 head: GroupNorm(32) in the towers, GIoU box loss."""
    def build(anchors: int) -> nn.Module:
        head = TVRetinaNetHead(c, anchors, nc, norm_layer=partial(nn.GroupNorm, 32))
        head.regression_head._loss_type = "giou"
        return head
    return build


RETINANET_VERSIONS = {1: lambda c, nc: None, 2: _v2_head}  # None: the detector's default (version 1) head


def _retinanet_sizes(nl: int) -> list[list[int]]:
    """torchvision's RetinaNet anchors: on the level of base size s (32 x 2^i), s x 2^(0, 1/3, 2/3), floored."""
    return [[int(s * 2 ** (k / 3)) for k in range(3)] for s in (32 * 2 ** i for i in range(nl))]


class RetinaNetHead(_OneStageHead):
    """torchvision's RetinaNet above the backbone, over the maps of an FPN row.

    YAML: ``[[-1], 1, RetinaNetHead, [nc, anchor_sizes, aspect_ratios, options]]``. ``anchor_sizes``: per level a
    list of sizes in pixels (default torchvision's: 32-512 x 2^(0, 1/3, 2/3)); ``aspect_ratios``: one list for every
    level, or one per level (default 0.5, 1, 2); every level the same number of anchors. ``options``: any of
    torchvision's ``RetinaNet`` keyword arguments (``score_thresh``, ``nms_thresh``, ``detections_per_img``,
    ``fg_iou_thresh``, ``bg_iou_thresh``, ``topk_candidates``), and ``version``: 1 (default: torchvision's
    retinanet_resnet50_fpn head, plain convolutions, L1 box loss on the anchor deltas) or 2 (its
    retinanet_resnet50_fpn_v2 head: GroupNorm(32) after every tower convolution, GIoU box loss). ``nc`` counts
    classes (no background logit)."""

    detector = RetinaNet
    kept = (*_OneStageHead.kept, "proposal_matcher")
    loss_terms = RETINANET_TERMS

    def __init__(self, nc: int = 80, anchor_sizes: list | None = None, aspect_ratios: list | None = None,
                 options: dict | None = None, ch: list[int] | tuple[int, ...] = ()):
        super().__init__(nc, ch)
        sizes = anchor_sizes if anchor_sizes is not None else _retinanet_sizes(self.nl)
        options = dict(options or {})
        version = options.pop("version", 1)
        if isinstance(version, bool) or version not in RETINANET_VERSIONS:
            raise ValueError(f"RetinaNetHead: version must be 1 or 2 (torchvision's retinanet_resnet50_fpn or _v2 "
                             f"head), got {version!r}")
        head = RETINANET_VERSIONS[version](ch[0], nc)
        self._build(nc, sizes, aspect_ratios or [0.5, 1.0, 2.0], options, ch, head=head)

    def _losses(self, targets, outputs, anchors, per_level):
        return RetinaNet.compute_loss(self, targets, outputs, anchors)
