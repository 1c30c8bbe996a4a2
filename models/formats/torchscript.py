"""TorchScript: ``torch.jit.trace`` of the export-mode model, metadata as the JSON extra file ``config.txt``."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor

from models import backends  # a module, not names: models/backends.py imports this package's table
from models.formats.registry import ExportFormat, ExportOptions
from models.yolo import DetectionModel


def export_torchscript(model: DetectionModel, im: Tensor, file: Path, meta: dict,
                       options: ExportOptions | None = None) -> Path:
    """torch.jit.trace of ``model`` at ``im``; metadata as the JSON extra file ``config.txt``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated", category=FutureWarning)
        ts = torch.jit.trace(model, im, strict=False, check_trace=False)  # export.py's check compares the outputs
    ts.save(str(file), _extra_files={"config.txt": json.dumps(meta)})
    return file


def load_torchscript(path: Path, device: torch.device, half: bool, fuse: bool) -> backends.Backend:
    extra = {"config.txt": ""}
    try:
        with warnings.catch_warnings():  # torch 2.10+ marks TorchScript deprecated; it still loads and runs
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a readable TorchScript file: {str(e).splitlines()[0]}") from None
    where = str(path)
    try:
        meta = json.loads(extra["config.txt"] or "{}")
    except ValueError:
        raise ValueError(f"{where}: config.txt metadata is not JSON") from None
    fp16 = backends.meta_bool(meta.get("half"), where, "half")
    if fp16 and device.type != "cuda":
        raise ValueError(f"{where} was exported in FP16, which runs on CUDA only; got device {device}. Export "
                         f"without --half for CPU")
    batch, imgsz = backends.static_shape(meta.get("shape"), backends.meta_bool(meta.get("dynamic"), where, "dynamic"))
    module.eval()

    def run_fn(im: Tensor) -> Tensor:
        y = module(im)
        return y[0] if isinstance(y, (list, tuple)) else y

    return backends.exported_backend(run_fn, "torchscript", path, device, meta, fp16=fp16, batch=batch, imgsz=imgsz)


FORMAT = ExportFormat("torchscript", ".torchscript", "TorchScript", export_torchscript, load_torchscript,
                      tool=lambda options: f"torch {torch.__version__}")
