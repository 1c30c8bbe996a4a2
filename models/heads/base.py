"""The head contract shared by every detection head (see DESIGN.md).

A head is the last row of a model YAML. It owns everything specific to it:

- ``forward(features)`` -> raw outputs, identical in training and eval;
- ``decode(raw)`` -> one common layout ``(B, N, 4 + 1 + nc)``: ``cxcywh`` in input pixels, an
  objectness/quality probability (1.0 for heads without one) and per-class probabilities;
- ``initialize(stride)``: called once by the model after the stride probe (anchors, biases, grids);
- ``criterion(hyp, imgsz, label_smoothing)``: the loss object for this head (``utils/losses.py``), with
  ``loss_names``; train.py and val.py never ask which head they have;
- ``fit_priors(label_wh, thr)``: refit learnable priors to the data before training (AutoAnchor for
  anchor heads; a no-op for heads without priors);
- ``export``: an instance flag; when set, ``decode`` rebuilds its grids inside the traced graph so an
  exported model has no Python-side branching and works at any input size.

``channel_args`` lists argument positions that are channel widths; ``parse_model`` scales them by the
model's ``width_multiple`` the same way it scales block widths.
"""
from __future__ import annotations

import numpy as np
from torch import Tensor, nn


class Head(nn.Module):
    channel_args: tuple[int, ...] = ()

    nc: int
    nl: int
    stride: Tensor
    export: bool

    def decode(self, raw: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def initialize(self, stride: Tensor) -> None:
        raise NotImplementedError

    def criterion(self, hyp: dict, imgsz: int = 640, label_smoothing: float = 0.0):
        raise NotImplementedError

    def fit_priors(self, label_wh: np.ndarray, thr: float) -> None:
        """Heads without data-fitted priors have nothing to do."""
