"""Loss primitives shared by the families' criteria."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Positive and negative BCE targets with label smoothing ``eps``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class BCELogits(nn.Module):
    """BCE-with-logits (mean), or YOLOv5's focal variant when ``gamma > 0`` (alpha 0.25)."""

    def __init__(self, pos_weight: float = 1.0, gamma: float = 0.0, alpha: float = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha
        self.bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))

    def forward(self, pred: Tensor, true: Tensor) -> Tensor:
        if self.gamma > 0:
            return sigmoid_focal_loss(pred, true, alpha=self.alpha, gamma=self.gamma, reduction="mean")
        return self.bce(pred, true)
