"""YOLOv10's loss ("consistent dual assignments", Wang et al. 2024, arXiv 2405.14458) for ``V10Head``: the v8 loss
(``V8Loss``) once per branch, summed. The one-to-many branch is assigned as YOLOv8's (TAL, topk 10), the one-to-one
branch by the same TAL metric (same alpha and beta) with topk 1: one positive per object, so the branch that is
inferred learns to give one detection per object without NMS.

This is Ultralytics' ``E2EDetectLoss`` (YOLOv10's ``v10DetectLoss``): total = one-to-many total + one-to-one total,
each v8 term summed over the two branches. Here the six terms stay apart (``loss_names``), so results.csv shows
both branches; the sum of a pair (``o2m_box + o2o_box``, ...) is Ultralytics' ``box_loss`` etc. Ultralytics >= 8.4
trains its own YOLOv10 builds with ``E2ELoss`` instead (YOLO26's: one-to-one topk 7 then 1, and the one-to-many
weight decayed from 0.8 to 0.1 over training); that is not the paper's loss and is not followed here.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from utils.losses.v8 import V8Loss

V10_O2O_TOPK = 1  # the one-to-one branch's TAL topk (YOLOv10; Ultralytics' E2EDetectLoss)


class V10Output(NamedTuple):
    """``V10Head``'s training output: per level ``(B, 4R + nc, ny, nx)`` maps of each branch."""

    one2many: list[Tensor]
    one2one: list[Tensor]


class V10Loss:
    """The v8 loss of each branch of ``V10Head``, summed (see the module docstring). The one-to-many branch uses the
    row's assigner and options; the one-to-one branch TAL with the row's TAL options (when the row names TAL) and the
    hyp's, but always topk 1. Gains ``v8_box``, ``v8_cls``, ``v8_dfl`` apply to both."""

    loss_names = ("o2m_box", "o2m_cls", "o2m_dfl", "o2o_box", "o2o_cls", "o2o_dfl")

    def __init__(self, nc: int, strides: Tensor | list[float], reg_max: int = 16, hyp: dict | None = None,
                 assigner: str = "tal", assigner_options: dict | None = None):
        self.one2many = V8Loss(nc, strides, reg_max, hyp, assigner, assigner_options)
        o2o_options = {**((assigner_options or {}) if assigner == "tal" else {}), "topk": V10_O2O_TOPK}
        self.one2one = V8Loss(nc, strides, reg_max, hyp, "tal", o2o_options)

    def on_epoch(self, state) -> None:
        """Nothing epoch-switched in the loss."""

    def __call__(self, out: V10Output, targets: Tensor) -> tuple[Tensor, Tensor]:
        """out: the head's training output; targets (M, 6) normalised -> (total, items (6,))."""
        if not isinstance(out, V10Output):
            raise TypeError(f"V10Loss: expected the head's training output (V10Output), got {type(out).__name__}; "
                            "the eval forward runs the one-to-one branch only, which this loss cannot score alone")
        total_o2m, items_o2m = self.one2many(out.one2many, targets)
        total_o2o, items_o2o = self.one2one(out.one2one, targets)
        return total_o2m + total_o2o, torch.cat((items_o2m, items_o2o))
