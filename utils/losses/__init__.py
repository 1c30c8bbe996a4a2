"""Losses: one criterion per head family, each satisfying ``models.heads.base.Criterion``.

A criterion is built by its head with everything it needs passed explicitly (nc, anchors, strides,
hyperparameters): ``criterion(raw, targets) -> (total, items)`` where ``items`` is a detached 1-D tensor of the
named terms in ``criterion.loss_names`` (the results.csv columns) and ``total`` = sum(items) x batch size
(YOLOv5's reduction), the tensor to back-propagate; ``on_epoch(state)`` is called at the start of every epoch.

    common.py   primitives (label smoothing, BCE / focal)
    yolov5.py   YOLOv5Loss (Detect, DetectDcoupleHead) and YOLOv5's target builder
    yolox.py    YOLOXLoss (YOLOXHead)
    gfl.py      GFL primitives: quality and distribution focal losses (QFL, DFL), the integral box coder
    v8.py       V8Loss (V8Head): Ultralytics' v8DetectionLoss (BCE, CIoU, DFL; TAL)
    v10.py      V10Loss (V10Head): V8Loss on the one-to-many (TAL topk 10) and one-to-one (topk 1) branches, summed
    rtmdet.py   RTMDetLoss (RTMDetHead): QFL + GIoU, normalised by the positives' IoUs
    tv.py       TVLoss (FasterRCNNHead, FCOSHead, RetinaNetHead): torchvision's own loss terms, named and reduced
"""
from utils.losses.common import BCELogits, PaddedTargets, pad_targets, smooth_bce
from utils.losses.gfl import GFLLoss, bbox2distance, distance2bbox, distribution_focal_loss, integral, quality_focal_loss
from utils.losses.rtmdet import RTMDetLoss
from utils.losses.tv import TVLoss, TVOutput
from utils.losses.v8 import V8Loss
from utils.losses.v10 import V10Loss, V10Output
from utils.losses.yolov5 import LevelTargets, YOLOv5Loss, build_yolov5_targets
from utils.losses.yolox import YOLOX_IOU_WEIGHT, YOLOX_NOMINAL_BATCH, YOLOXLoss

__all__ = ["BCELogits", "smooth_bce", "LevelTargets", "YOLOv5Loss", "build_yolov5_targets", "YOLOX_IOU_WEIGHT",
           "YOLOX_NOMINAL_BATCH", "PaddedTargets", "YOLOXLoss", "pad_targets", "bbox2distance", "distance2bbox",
           "distribution_focal_loss", "integral", "quality_focal_loss", "GFLLoss", "TVLoss", "TVOutput",
           "RTMDetLoss", "V8Loss", "V10Loss", "V10Output"]
