"""ncnn (optional packages ``pnnx`` and ``ncnn``): pnnx converts a TorchScript trace into FP32 best_ncnn_model/
(model.ncnn.param, model.ncnn.bin, metadata.yaml); batch 1 at a fixed size (ncnn runs one image at a time)."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models import backends  # a module, not names: models/backends.py imports this package's table
from models.formats.registry import ExportFormat, ExportOptions
from models.formats.torchscript import export_torchscript
from models.yolo import DetectionModel

PNNX_OUTPUTS = {"ncnnparam": "model.ncnn.param", "ncnnbin": "model.ncnn.bin", "ncnnpy": "model_ncnn.py",
                "pnnxparam": "model.pnnx.param", "pnnxbin": "model.pnnx.bin", "pnnxpy": "model_pnnx.py",
                "pnnxonnx": "model.pnnx.onnx"}  # pnnx's arguments: every file it writes, named


def export_ncnn(model: DetectionModel, im: Tensor, folder: Path, meta: dict, options: ExportOptions) -> Path:
    """pnnx converts a TorchScript trace (at ``im``'s fixed shape, FP32 weights) -> ``folder``/model.ncnn.param,
    model.ncnn.bin and metadata.yaml; pnnx's other outputs stay in a temporary folder."""
    import pnnx

    with tempfile.TemporaryDirectory() as tmp:
        ts = export_torchscript(model, im, Path(tmp) / "model.torchscript", meta)
        out = {k: str(Path(tmp) / v) for k, v in PNNX_OUTPUTS.items()}
        cmd = [pnnx.EXEC_PATH, str(ts), f"inputshape=[{','.join(map(str, im.shape))}]f32", "fp16=0",
               *(f"{k}={v}" for k, v in out.items())]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, check=False)  # judged below
        if r.returncode != 0 or not Path(out["ncnnbin"]).is_file():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ValueError(f"pnnx could not convert the model (exit code {r.returncode}): {' | '.join(tail)}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for k in ("ncnnparam", "ncnnbin"):
            shutil.move(out[k], folder / Path(out[k]).name)
    backends.write_folder_meta(folder, meta)
    return folder


def load_ncnn(path: Path, device: torch.device, half: bool, fuse: bool) -> backends.Backend:
    ncnn = backends.require("ncnn", purpose=f"{path}: running ncnn models")
    param, where = backends.one_file(path, "*.param"), str(path)
    backends.cpu_only("ncnn", device)
    net = ncnn.Net()
    net.opt.num_threads = torch.get_num_threads()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False  # FP32, as exported
    net.opt.use_bf16_storage = False
    if net.load_param(str(param)) != 0 or net.load_model(str(param.with_suffix(".bin"))) != 0:
        raise ValueError(f"{path}: ncnn cannot load {param.name} and {param.with_suffix('.bin').name}")
    meta = backends.folder_meta(path, param.stem)
    batch, imgsz = backends.static_shape(meta.get("shape"), False)
    if batch not in (None, 1):
        raise ValueError(f"{where}: metadata shape {meta.get('shape')} has batch {batch}; ncnn runs batch 1")
    in_name, out_name = net.input_names()[0], net.output_names()[0]

    def run_fn(im: Tensor) -> Tensor:  # (1, 3, H, W) -> (1, N, 5 + nc)
        x = np.ascontiguousarray(im[0].detach().cpu().numpy())  # ncnn.Mat wraps x without a copy: keep x alive
        ex = net.create_extractor()
        ex.input(in_name, ncnn.Mat(x))
        ret, y = ex.extract(out_name)
        if ret != 0:
            raise RuntimeError(f"{where}: ncnn extract('{out_name}') failed with code {ret}")
        return torch.from_numpy(np.array(y))[None].to(im.device)

    return backends.exported_backend(run_fn, "ncnn", path, device, meta, batch=1, imgsz=imgsz, own_threads=True)


def _tool(options: ExportOptions) -> str:
    import pnnx

    return f"pnnx {pnnx.__version__}"


FORMAT = ExportFormat("ncnn", "_ncnn_model", "ncnn", export_ncnn, load_ncnn, tool=_tool, packages=("pnnx", "ncnn"),
                      dynamic=False, half=False, batch=1)
