"""OpenVINO (optional package ``openvino``): ``openvino.convert_model`` of the export-mode model, saved as FP32 IR in
best_openvino_model/ (best.xml, best.bin, metadata.yaml), static or dynamic; compiled for the CPU in FP32, or BF16
with ``half`` on a CPU that has it."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models import backends  # a module, not names: models/backends.py imports this package's table
from models.formats.registry import ExportFormat, ExportOptions
from models.yolo import DetectionModel

SUFFIX = "_openvino_model"


def export_openvino(model: DetectionModel, im: Tensor, folder: Path, meta: dict, options: ExportOptions) -> Path:
    """``openvino.convert_model`` -> ``folder``/<stem>.xml + .bin (FP32 IR; H, W and batch dynamic with
    ``options.dynamic``) and metadata.yaml."""
    import openvino as ov

    shape = (-1, 3, -1, -1) if options.dynamic else tuple(im.shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.trace.* is deprecated", category=FutureWarning)
        ov_model = ov.convert_model(model, example_input=im, input=[shape])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(ov_model, str(folder / f"{folder.name.removesuffix(SUFFIX)}.xml"), compress_to_fp16=False)
    backends.write_folder_meta(folder, meta)
    return folder


def cpu_bf16() -> bool:
    """OpenVINO is installed and this CPU computes BF16 natively (AVX512-BF16 or AMX: OpenVINO's 'BF16'
    optimization capability), so --half on the CPU can run OpenVINO at BF16."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def load_openvino(path: Path, device: torch.device, half: bool, fuse: bool) -> backends.Backend:
    ov = backends.require("openvino", purpose=f"{path}: running OpenVINO models")
    xml = backends.one_file(path, "*.xml")
    backends.cpu_only("openvino", device)
    core = ov.Core()
    if half and not cpu_bf16():
        raise ValueError(f"{path}: --half on the CPU computes in BF16, which this CPU lacks (AVX512-BF16 or AMX)")
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": "bf16" if half else "f32"}
    try:
        compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    except RuntimeError as e:
        raise ValueError(f"{xml}: OpenVINO cannot load it: {str(e).splitlines()[0]}") from None
    shape_in, shape_out = compiled.input(0).get_partial_shape(), compiled.output(0).get_partial_shape()
    batch, imgsz = backends.input_shape([d.get_length() if d.is_static else -1 for d in shape_in])
    nc = shape_out[2].get_length() - 5 if len(shape_out) == 3 and shape_out[2].is_static else None
    request = compiled.create_infer_request()

    def run_fn(im: Tensor) -> Tensor:
        y = request.infer({0: im.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.array(y)).to(im.device)  # copy: the request reuses its output buffer

    return backends.exported_backend(run_fn, "openvino", path, device, backends.folder_meta(path, xml.stem), nc,
                                     batch=batch, imgsz=imgsz, bf16=half, own_threads=True)


def _tool(options: ExportOptions) -> str:
    import openvino as ov

    return f"openvino {ov.__version__}"


FORMAT = ExportFormat("openvino", SUFFIX, "OpenVINO", export_openvino, load_openvino, tool=_tool,
                      packages=("openvino",), runtime="openvino", half=False, bf16=cpu_bf16)
