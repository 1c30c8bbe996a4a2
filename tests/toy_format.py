"""A test-only export format, defined outside models/formats: a folder ``<stem>_toy_model/`` holding the export-mode
model's YAML and metadata (model.yaml) and its fused weights as numpy arrays (weights.npz). The loader rebuilds the
model from the YAML, fuses it the same way and loads the weights: no TorchScript, no tracing, PyTorch's own kernels.

A format's module registers itself with ``register_format(FORMAT)`` when it is imported; the tests call that in a
fixture instead, so that FORMATS is as shipped again after each test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from models.backends import Backend, exported_backend, folder_meta, static_shape
from models.formats import ExportFormat, ExportOptions
from models.yolo import DetectionModel


def export_toy(model: DetectionModel, im: Tensor, folder: Path, meta: dict, options: ExportOptions) -> Path:
    """``folder``/model.yaml (the model YAML under ``model``, the metadata beside it) and weights.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yaml").write_text(yaml.safe_dump({**meta, "model": model.yaml}, sort_keys=False))
    np.savez(folder / "weights.npz", **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return folder


def load_toy(path: Path, device: torch.device, half: bool, fuse: bool) -> Backend:
    meta = folder_meta(path, "metadata")
    model = DetectionModel(meta["model"]).eval().fuse()  # the exported weights are fused: fuse the structure first
    with np.load(path / "weights.npz") as weights:
        model.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files})
    model = model.to(device).set_export(True)
    batch, imgsz = static_shape(meta.get("shape"), bool(meta.get("dynamic")))

    def run_fn(im: Tensor) -> Tensor:
        return model(im)

    return exported_backend(run_fn, "toy", path, device, meta, batch=batch, imgsz=imgsz)


FORMAT = ExportFormat("toy", "_toy_model", "Toy", export_toy, load_toy, tool=lambda options: "numpy.savez",
                      half=False)
