"""Load a detector for inference from a weights file, chosen by suffix."""
from __future__ import annotations

from pathlib import Path

import torch

from models.yolo import DetectionModel
from utils.checkpoint import load_checkpoint


def load_model(weights: str | Path, device: torch.device | str = "cpu", fuse: bool = True) -> DetectionModel:
    """A ``.pt`` checkpoint (ours, or a YOLOv5 v7.0 pickle read without running its code) -> eval model."""
    path = Path(weights)
    if path.suffix != ".pt":
        raise ValueError(f"--weights {weights}: unsupported format '{path.suffix}'; use a .pt checkpoint")
    model = DetectionModel.from_checkpoint(load_checkpoint(path))
    model = model.to(device).eval()
    return model.fuse() if fuse else model
