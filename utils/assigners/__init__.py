"""Label assigners: which prediction learns from which ground truth.

Every assigner here is a stateless function, batched over ground truths padded to the largest count
in the batch, with a validity mask, called as
``assign(pred_boxes, pred_cls_logits, pred_obj_logits, priors, gt_boxes, gt_labels, gt_mask, *, **options)``
and returning an ``Assignment``: per prediction, the index of its ground truth or -1 for background (like
torchvision's ``Matcher``) and a soft class target: the IoU of the prediction with that ground truth, or for TAL
the normalised alignment metric (which a loss uses the same way).
``ASSIGNERS`` names them for YAML rows (the ``assigner`` argument of ``YOLOXHead``, ``GFLHead``, ``RTMDetHead`` and
``V8Head``); the
keyword-only arguments are the options, set in the row or in the hyp file (``simota_center_radius``) and
bound by ``assigner_from`` (registry.py).

YOLOv5's shape matching (``utils.losses.build_yolov5_targets``) keeps its own contract: one prediction
(image, anchor, cell) may be matched to two ground truths, and YOLOv5 trains box and class on both (its
objectness keeps the last); one index per prediction cannot express that without changing YOLOv5's loss.

Shape shorthand:
    B: batch size      N: predictions (priors) per image      G: padded ground truths per image
    nc: number of classes
Boxes are ``xyxy`` in input pixels unless a name says otherwise. Priors are ``(N, 4)`` rows
``[cx, cy, stride_x, stride_y]``: the centre of each grid cell, ``(grid + 0.5) * stride``, in pixels.

    base.py     the result contract (Assignment) and batched helpers
    simota.py   SimOTA (YOLOX)
    center.py   centre sampling (FCOS)
    dsl.py      Dynamic Soft Label Assigner (NanoDet-Plus); its priors are the points the head decodes from
    tal.py      Task-Aligned Assigner (TOOD; YOLOv8 / YOLO11 as Ultralytics runs it)
    registry.py the name table (ASSIGNERS), each assigner's options and assigner_from
"""
from utils.assigners.base import Assignment, batched_box_iou
from utils.assigners.center import center_assign
from utils.assigners.dsl import dsl_assign
from utils.assigners.registry import (
    ASSIGNERS,
    assigner_from,
    assigner_hyp_keys,
    assigner_options,
    check_assigner_options,
    get_assigner,
    parse_assigner,
)
from utils.assigners.simota import simota_assign
from utils.assigners.tal import tal_assign

__all__ = ["ASSIGNERS", "Assignment", "assigner_from", "assigner_hyp_keys", "assigner_options", "batched_box_iou",
           "center_assign", "check_assigner_options", "dsl_assign", "get_assigner", "parse_assigner", "simota_assign",
           "tal_assign"]
