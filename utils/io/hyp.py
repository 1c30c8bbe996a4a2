"""Hyperparameter files: the keys the pipeline knows, and the check that a file holds no unknown key.

A misspelt optional key (``fl_gama``) would otherwise be ignored silently and its default used; here it is
an error naming the nearest known key. Known keys: the pipeline's (optimizer, warmup, augmentation), the
keys of YOLOv5 v7.0's hyp files (its loss gains and anchor settings: accepted with every head, so one hyp
file serves every arm of a comparison), and the head's own (``Head.hyp_keys``).
"""
from __future__ import annotations

import difflib

PIPELINE_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
                 "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                 "fliplr", "mosaic", "mixup", "copy_paste")
OPTIONAL = ("copy_paste",)  # read with a default
YOLOV5_KEYS = ("box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "anchors", "fl_gamma")


def check_hyp(hyp: dict, head_keys: tuple[str, ...] = (), source: str = "hyp") -> None:
    """ValueError naming every unknown key (with the nearest known one) and every missing pipeline key."""
    known = set(PIPELINE_KEYS) | set(YOLOV5_KEYS) | set(head_keys)
    problems = []
    for k in sorted(set(hyp) - known, key=str):
        near = difflib.get_close_matches(str(k), sorted(known), n=1)
        problems.append(f"unknown key '{k}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
    problems += [f"missing key '{k}'" for k in PIPELINE_KEYS if k not in hyp and k not in OPTIONAL]
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
