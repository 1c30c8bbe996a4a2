"""Loss primitives shared by the families' criteria."""
from __future__ import annotations

from typing import NamedTuple

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


class PaddedTargets(NamedTuple):
    """Ground truths padded per image: boxes (B, G, 4) cxcywh px, labels (B, G) long, mask (B, G) bool."""
    boxes: Tensor
    labels: Tensor
    mask: Tensor


def pad_targets(targets: Tensor, batch_size: int, img_w: float, img_h: float) -> PaddedTargets:
    """(M, 6) ``[image, class, cx, cy, w, h]`` normalised -> per-image padded tensors in pixels.

    Rows are scattered to (image, rank within image) with no Python loop; G = the largest count in the
    batch (at least 1, so that an all-empty batch still has a fully masked row). Reading G is the one
    host sync: a padded shape depends on the data.
    """
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be (M, 6) [image, class, cx, cy, w, h], got shape {tuple(targets.shape)}")
    device, m = targets.device, targets.shape[0]
    img = targets[:, 0].long()
    counts = torch.zeros(batch_size, dtype=torch.long, device=device)
    try:
        counts.scatter_add_(0, img, torch.ones_like(img))
    except RuntimeError as e:  # CPU; CUDA asserts instead
        raise ValueError(f"targets hold an image index outside [0, {batch_size}): {e}") from None
    g = max(int(counts.max()), 1) if m else 1
    order = torch.sort(img, stable=True).indices
    img_sorted = img[order]
    first = counts.cumsum(0) - counts  # (B,) position of each image's first row in the sorted order
    rank = torch.arange(m, device=device) - first[img_sorted]
    scale = torch.tensor([img_w, img_h, img_w, img_h], device=device, dtype=torch.float32)
    boxes = torch.zeros((batch_size, g, 4), device=device)
    labels = torch.zeros((batch_size, g), dtype=torch.long, device=device)
    mask = torch.zeros((batch_size, g), dtype=torch.bool, device=device)
    boxes[img_sorted, rank] = targets[order, 2:6].float() * scale
    labels[img_sorted, rank] = targets[order, 1].long()
    mask[img_sorted, rank] = True
    return PaddedTargets(boxes, labels, mask)
