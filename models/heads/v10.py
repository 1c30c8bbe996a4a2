"""YOLOv10's end-to-end head (Wang et al. 2024, "YOLOv10: Real-Time End-to-End Object Detection", arXiv 2405.14458;
Ultralytics' ``v10Detect`` / ``Detect(end2end=True)``): ``V8Head`` plus a one-to-one copy of its box and class branches,
trained jointly ("consistent dual assignments", ``utils.losses.V10Loss``) and inferred alone, without NMS.

- ``cv2`` / ``cv3``: the one-to-many branches (YOLOv8's head, TAL topk 10), training only (``train_only``): absent
  from the eval forward, fuse/deploy, exported files and the deploy parameter count;
- ``one2one_cv2`` / ``one2one_cv3``: copies of them made at build time (the same initial weights, as Ultralytics'
  ``deepcopy``), assigned by TAL topk 1, fed the neck's maps DETACHED in training: the neck and backbone learn from the
  one-to-many branch only;
- eval: the one-to-one maps decoded as ``V8Head`` decodes them, then per image the ``max_det`` best predictions and
  the ``max_det`` best (prediction, class) pairs among them (``utils.boxes.topk_detections``): final detections,
  ``suppressed = True``.

Module names are Ultralytics', so its end-to-end ``Detect`` state_dict loads as it is. The validation loss is
declared unavailable (``val_loss = False``): it needs the one-to-many branch, which eval does not run.

Shape shorthand: B batch, N predictions over all levels; ``max_det`` rows per image, min(max_det, N) of them scored.
"""
from __future__ import annotations

from copy import deepcopy

from torch import Tensor

from models.heads.v8 import V8Head
from utils.boxes import topk_detections
from utils.losses.v10 import V10Loss, V10Output


class V10Head(V8Head):
    """YOLOv10's NMS-free head; its criterion is ``utils.losses.V10Loss``.

    YAML: ``[[16, 19, 22], 1, V10Head, [nc, 16, yolo11, tal, 300]]`` -- ``reg_max``, ``variant`` (the class branch:
    ``yolo11``, YOLOv10's depthwise-separable one, or ``yolov8``), ``assigner`` (the one-to-many branch's; the
    one-to-one branch is always TAL topk 1), ``max_det`` (detections per image, Ultralytics' 300). Loss gains as
    ``V8Head`` (``v8_box``, ``v8_cls``, ``v8_dfl``).
    """

    suppressed = True
    val_loss = False
    train_only = ("cv2", "cv3")
    loss_class = V10Loss  # V8Head.criterion builds it

    def __init__(self, nc: int = 80, reg_max: int = 16, variant: str = "yolo11", assigner: str | dict = "tal",
                 max_det: int = 300, ch: list[int] | tuple[int, ...] = ()):
        super().__init__(nc, reg_max, variant, assigner, ch)
        if isinstance(max_det, bool) or not isinstance(max_det, int) or max_det < 1:
            raise ValueError(f"V10Head: max_det must be a positive integer, got {max_det!r}")
        self.max_det = max_det
        self.one2one_cv2 = deepcopy(self.cv2)
        self.one2one_cv3 = deepcopy(self.cv3)

    def forward(self, features: list[Tensor], targets: Tensor | None = None) -> V10Output | list[Tensor]:
        """Training: ``V10Output`` (both branches' per-level maps; the one-to-one branch on detached features).
        Eval: the one-to-one branch's per-level ``(B, 4R + nc, ny, nx)`` maps."""
        if not self.training:
            return self._maps(features, self.one2one_cv2, self.one2one_cv3)
        detached = [x.detach() for x in features]
        return V10Output(self._maps(features, self.cv2, self.cv3),
                         self._maps(detached, self.one2one_cv2, self.one2one_cv3))

    def decode(self, raw: list[Tensor]) -> Tensor:
        """The one-to-one maps -> ``(B, max_det, 5 + nc)`` final detections: cxcywh px, 1.0, the score at its class
        (0 elsewhere); all-zero padding rows where the maps hold fewer than ``max_det`` predictions."""
        return topk_detections(super().decode(raw), self.max_det)[0]

    def initialize(self, stride: Tensor) -> None:
        """``V8Head``'s strides and bias init, for both branches."""
        super().initialize(stride)
        self._init_biases(self.one2one_cv2, self.one2one_cv3)
