"""ONNX: ``images`` -> ``output0``, metadata in metadata_props (JSON strings); run by ONNX Runtime (CPU; CUDA when
asked for and available) with torch's intra-op thread count.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``; torch 2.9+ defaults to the
torch.export-based one, which needs the onnxscript package), opset 17 by default (YOLOv5 master's; v7.0 used 12):
the newest opset every ONNX Runtime since 1.14 runs, and one the legacy exporter fully supports."""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from models import backends  # a module, not names: models/backends.py imports this package's table
from models.formats.registry import ExportFormat, ExportOptions
from models.yolo import DetectionModel
from utils.torch_utils import LOGGER


def export_onnx(model: DetectionModel, im: Tensor, file: Path, meta: dict, options: ExportOptions) -> Path:
    """ONNX ``images`` -> ``output0`` (axes batch, height, width, anchors dynamic with ``options.dynamic``);
    metadata in metadata_props (JSON strings)."""
    import onnx

    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.9+: the TorchScript-based exporter is legacy
        torch.onnx.export(model, (im,), str(file), opset_version=options.opset, input_names=["images"],
                          output_names=["output0"], do_constant_folding=True, dynamo=False,
                          dynamic_axes=axes if options.dynamic else None)
    model_onnx = onnx.load(str(file))
    onnx.checker.check_model(model_onnx)
    if options.simplify:
        model_onnx = _simplify(model_onnx)
    for k, v in meta.items():
        prop = model_onnx.metadata_props.add()
        prop.key, prop.value = k, json.dumps(v)
    onnx.save(model_onnx, str(file))
    return file


def _simplify(model_onnx):
    try:
        import onnxsim
    except ImportError:
        LOGGER.warning("WARNING: --simplify needs onnx-simplifier (import onnxsim), which is not installed: "
                       "writing the model unsimplified (pip install onnxsim to simplify)")
        return model_onnx
    simplified, ok = onnxsim.simplify(model_onnx)
    if not ok:
        LOGGER.warning("WARNING: onnxsim could not validate the simplified model: keeping the original")
        return model_onnx
    return simplified


def _ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        LOGGER.warning("WARNING: onnxruntime has no CUDAExecutionProvider here; running the ONNX model on CPU")
    return ["CPUExecutionProvider"]


def load_onnx(path: Path, device: torch.device, half: bool, fuse: bool) -> backends.Backend:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError(f"{path}: running ONNX models needs onnxruntime (pip install onnxruntime)") from None
    providers = _ort_providers(device)

    def session(threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None

    def run_with(s: ort.InferenceSession) -> Callable[[Tensor], Tensor]:
        def run_fn(im: Tensor) -> Tensor:
            y = s.run([out_name], {in_name: im.detach().cpu().numpy()})[0]
            return torch.from_numpy(y).to(im.device)

        return run_fn

    main = session(torch.get_num_threads())  # the same thread budget as PyTorch
    inp, out = main.get_inputs()[0], main.get_outputs()[0]
    batch, imgsz = backends.input_shape(inp.shape)
    nc = out.shape[2] - 5 if len(out.shape) == 3 and isinstance(out.shape[2], int) else None
    in_name, out_name = inp.name, out.name
    cpu = providers == ["CPUExecutionProvider"]  # Run is thread-safe: a session of 1 thread serves concurrent calls
    return backends.exported_backend(run_with(main), "onnx", path, device, main.get_modelmeta().custom_metadata_map,
                                     nc, fp16=inp.type == "tensor(float16)", batch=batch, imgsz=imgsz,
                                     own_threads=True, runner=(lambda k: run_with(session(k))) if cpu else None)


FORMAT = ExportFormat("onnx", ".onnx", "ONNX", export_onnx, load_onnx, packages=("onnx",), runtime="onnxruntime",
                      tool=lambda options: f"torch {torch.__version__}, opset {options.opset}")
